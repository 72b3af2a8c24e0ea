from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray


class MLP(eqx.Module):
    r"""A deep ReLU (or leaky ReLU) network,

    $$f(x) = V \sigma(W_L \cdots \sigma(W_1 x + b_1) \cdots + b_L) + c,$$

    $\sigma(z) = \max(z, 0)$ (`activation="relu"`) or $\max(z, \alpha z)$
    (`"leaky_relu"`, $\alpha$ = `negative_slope`). With `out=None` (default) the output
    is a scalar, $V = v^\top$; with `out=k`, $k$ outputs (one per class, say, for
    `jaxflow.losses.cross_entropy`). The output bias $c$ is there with `out_bias=True`
    only. Acts on one sample `x` of shape `(d,)` (returns a scalar, or `(k,)`) or a data
    matrix `(n, d)` (returns `(n,)`, or `(n, k)`). It calls `jax.nn.relu` /
    `jax.nn.leaky_relu`, so `jaxflow.solve` follows its kinks in every layer
    (`kinks="auto"`): with one hidden ReLU layer by the two-layer rule of
    `TwoLayerReLU` (its jumps $\langle v_j, r_i\rangle \tilde x_i$ with $k$
    outputs), otherwise by the equivalent control.

    Each hidden layer is positively homogeneous, so along the gradient flow of any loss
    of $f$ every hidden neuron keeps $\|(w_j, b_j)\|^2 - \|\text{outgoing weights}_j\|^2$
    (`conserved`; the outgoing weights of a last-layer neuron are its column of $V$).
    This holds with any number of outputs and with the output bias, which is no
    neuron's weight; $c$ itself has no conserved quantity (its flow is the mean
    residual's), and with a leaky ReLU the laws hold too (it is homogeneous).

    **Arguments:**

    - `d`: input dimension.
    - `widths`: the hidden layers' widths, e.g. `(30, 30)` for a 3-layer network.
    - `bias`: whether the hidden layers have biases $b_l$.
    - `scale`: initialisation scale.
    - `init`:
        - `"balanced"` (default): entries $N(0, \text{scale}^2/\text{fan-in})$, then,
            layer by layer from the input, each hidden neuron's outgoing weights are
            rescaled to the norm of its incoming weights and bias, so that every
            conserved quantity starts at zero (the output weights are
            $\pm\|(w_j, b_j)\|$ with a random sign, as in `TwoLayerReLU`).
        - `"gaussian"`: every entry $N(0, \text{scale}^2/\text{fan-in})$, biases too.
        With `out=k`, each last-layer neuron's column of $V$ gets the norm of its
        incoming weights (a random direction). The output bias starts at zero.
    - `activation`: `"relu"` or `"leaky_relu"`; `negative_slope`: $\alpha$ of the
        latter.
    - `out`: `None` for a scalar output, or the number of outputs $k \ge 1$.
    - `out_bias`: whether the output has a bias $c$ (shape `()`, or `(k,)`).
    - `key`: a JAX random key.

    **Fields:** `weights`, a tuple of the hidden layers' matrices (`(widths[0], d)`,
    `(widths[1], widths[0])`, ...); `biases`, a tuple of their bias vectors, or `None`;
    `v` of shape `(widths[-1],)`, or `(k, widths[-1])` with `out=k`; `c`, the output
    bias, or `None`.

    !!! Example

        ```python
        net = jf.models.MLP(1, (30, 30), scale=1.0, key=jax.random.key(0))
        net(jnp.ones((3, 1))).shape  # (3,)
        ```
    """

    weights: tuple[Float[Array, "out in"], ...]
    biases: tuple[Float[Array, " out"], ...] | None
    v: Float[Array, " width"] | Float[Array, "k width"]
    c: Float[Array, ""] | Float[Array, " k"] | None
    activation: Literal["relu", "leaky_relu"] = eqx.field(static=True)
    negative_slope: float = eqx.field(static=True)

    def __init__(
        self,
        d: int,
        widths,
        *,
        bias: bool = True,
        scale: float,
        init: Literal["balanced", "gaussian"] = "balanced",
        activation: Literal["relu", "leaky_relu"] = "relu",
        negative_slope: float = 0.01,
        out: int | None = None,
        out_bias: bool = False,
        key: PRNGKeyArray,
    ):
        widths = tuple(widths) if isinstance(widths, list | tuple) else (widths,)
        if not isinstance(d, int) or d < 1:
            raise ValueError(f"MLP: `d` must be a positive int, got {d!r}.")
        if not widths or not all(isinstance(w, int) and w >= 1 for w in widths):
            raise ValueError(
                f"MLP: `widths` must be a non-empty sequence of positive ints (the "
                f"hidden layers' widths), got {widths!r}."
            )
        if init not in ("balanced", "gaussian"):
            raise ValueError(
                f"MLP: `init` must be 'balanced' or 'gaussian', got {init!r}."
            )
        if activation not in ("relu", "leaky_relu"):
            raise ValueError(
                f"MLP: `activation` must be 'relu' or 'leaky_relu', got {activation!r}."
            )
        if not 0 <= negative_slope < 1:
            raise ValueError(
                f"MLP: `negative_slope` must be in [0, 1), got {negative_slope!r}."
            )
        if out is not None and (
            isinstance(out, bool) or not isinstance(out, int) or out < 1
        ):
            raise ValueError(
                f"MLP: `out` must be None (a scalar output) or a positive int (the "
                f"number of outputs), got {out!r}."
            )
        if not isinstance(scale, jax.Array) and not scale > 0:
            raise ValueError(f"MLP: `scale` must be > 0, got {scale!r}.")
        fans = (d,) + widths
        keys = jr.split(key, 2 * len(widths) + 2)
        weights = [
            scale * fan**-0.5 * jr.normal(k, (out, fan))
            for k, out, fan in zip(keys, widths, fans)
        ]
        biases = [
            scale * fan**-0.5 * jr.normal(k, (out,))
            for k, out, fan in zip(keys[len(widths) :], widths, fans)
        ]
        outputs = () if out is None else (out,)
        v = scale * widths[-1] ** -0.5 * jr.normal(keys[-1], outputs + (widths[-1],))
        if not bias:
            biases = [jnp.zeros_like(b) for b in biases]
        if init == "balanced":
            # Each neuron's outgoing weights get the norm of its incoming ones, from
            # the input up (rescaling layer l + 1's columns changes its neurons'
            # incoming norms, which layer l + 2 then matches).
            for layer in range(len(widths)):
                incoming = jnp.sqrt(
                    jnp.sum(weights[layer] ** 2, axis=1) + biases[layer] ** 2
                )
                if layer + 1 < len(widths):
                    W = weights[layer + 1]
                    norms = jnp.linalg.norm(W, axis=0)
                    weights[layer + 1] = W * (incoming / norms)[None, :]
                elif out is None:
                    v = jr.rademacher(keys[-2], v.shape, dtype=v.dtype) * incoming
                else:
                    v = v * (incoming / jnp.linalg.norm(v, axis=0))[None, :]
        self.weights = tuple(weights)
        self.biases = tuple(biases) if bias else None
        self.v = v
        self.c = jnp.zeros(outputs, v.dtype) if out_bias else None
        self.activation = activation
        self.negative_slope = float(negative_slope)

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(W.shape[0] for W in self.weights)

    def _sigma(self, z):
        if self.activation == "relu":
            return jax.nn.relu(z)
        return jax.nn.leaky_relu(z, self.negative_slope)

    def hidden(self, x: Float[Array, "*n d"]) -> Float[Array, "*n width"]:
        """The last hidden layer's activations."""
        h = x
        for layer, W in enumerate(self.weights):
            z = h @ W.T
            if self.biases is not None:
                z = z + self.biases[layer].reshape((1,) * (z.ndim - 1) + (-1,))
            h = self._sigma(z)
        return h

    def __call__(
        self, x: Float[Array, "*n d"]
    ) -> Float[Array, "*n"] | Float[Array, "*n k"]:
        out = self.hidden(x) @ self.v.T
        return out if self.c is None else out + jnp.broadcast_to(self.c, out.shape)

    def balance(self) -> tuple[Float[Array, " neurons"], Float[Array, " neurons"]]:
        """Per hidden neuron (layer by layer): the squared norms of its incoming
        weights and bias, and of its outgoing weights."""
        outgoing = [W for W in self.weights[1:]] + [jnp.atleast_2d(self.v)]
        incoming, leaving = [], []
        for layer, W in enumerate(self.weights):
            sq = jnp.sum(W**2, axis=1)
            if self.biases is not None:
                sq = sq + self.biases[layer] ** 2
            incoming.append(sq)
            leaving.append(jnp.sum(outgoing[layer] ** 2, axis=0))
        return jnp.concatenate(incoming), jnp.concatenate(leaving)

    def conserved(self) -> Float[Array, " neurons"]:
        r"""$\|(w_j, b_j)\|^2 - \|\text{outgoing}_j\|^2$ per hidden neuron, layer by
        layer: constant along the gradient flow of any loss of $f$."""
        incoming, outgoing = self.balance()
        return incoming - outgoing
