from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray


_FANS = ("in", "width", "none")


class TwoLayerReLU(eqx.Module):
    r"""Two-layer ReLU network $f(x) = \sum_{j=1}^{h} v_j\,\sigma(\langle w_j, x\rangle
    + b_j)$, $\sigma(z) = \max(z, 0)$, with $\sigma'(0) = 0$.

    Acts on one sample `x` of shape `(d,)` (returns a scalar) or a data matrix of shape
    `(n, d)` (returns shape `(n,)`).

    **Arguments:**

    - `d`: input dimension.
    - `width`: number of hidden neurons $h$.
    - `scale`: initialisation scale ($\varepsilon$ in Min et al., $\lambda$ in Boursier
        and Flammarion).
    - `init`:
        - `"balanced"` (default): $w_j = \text{scale}\cdot w^0_j$ with
            $w^0_j \sim N(0, s^2 I)$ (and $b_j$ likewise when `bias=True`), then
            $v_j = \pm\|(w_j, b_j)\|$ with a uniformly random sign, so that the conserved
            quantities $v_j^2 - \|w_j\|^2 - b_j^2$ start at zero.
        - `"gaussian"`: every entry of $W$, $v$ (and $b$) is $N(0, \text{scale}^2 s^2)$
            (Min et al.'s MNIST experiments).
    - `bias`: whether the hidden layer has a bias $b_j$ (Boursier and Flammarion).
    - `fan`: the base variance $s^2$: `"in"` gives $1/d$, `"width"` gives $1/h$,
        `"none"` gives 1. Defaults to `"in"` for balanced and `"none"` for gaussian
        init. Boursier and Flammarion's init $(w_j, b_j) \sim N(0, \lambda^2/m\, I)$,
        balanced, is `init="balanced", fan="width", bias=True, scale=λ`.
    - `key`: a JAX random key.

    **Fields:** `W` of shape `(width, d)`, `v` of shape `(width,)`, `b` of shape
    `(width,)` or `None`.

    !!! Example

        ```python
        net = jf.models.TwoLayerReLU(2, 50, scale=1e-6, key=jax.random.key(0))
        net(jnp.ones((10, 2))).shape  # (10,)
        ```
    """

    W: Float[Array, "width d"]
    v: Float[Array, " width"]
    b: Float[Array, " width"] | None

    def __init__(
        self,
        d: int,
        width: int,
        *,
        scale: float = 1e-6,
        init: Literal["balanced", "gaussian"] = "balanced",
        bias: bool = False,
        fan: Literal["in", "width", "none"] | None = None,
        key: PRNGKeyArray,
    ):
        for name, value in (("d", d), ("width", width)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"TwoLayerReLU: `{name}` must be a positive int, got {value!r}."
                )
        if init not in ("balanced", "gaussian"):
            raise ValueError(
                f"TwoLayerReLU: `init` must be 'balanced' or 'gaussian', got {init!r}."
            )
        if fan is None:
            fan = "in" if init == "balanced" else "none"
        if fan not in _FANS:
            raise ValueError(
                f"TwoLayerReLU: `fan` must be one of {_FANS}, got {fan!r}."
            )
        if not isinstance(scale, jax.Array) and not scale > 0:
            raise ValueError(f"TwoLayerReLU: `scale` must be > 0, got {scale!r}.")
        std = scale * {"in": d**-0.5, "width": width**-0.5, "none": 1.0}[fan]
        wkey, bkey, vkey = jr.split(key, 3)
        W = std * jr.normal(wkey, (width, d))
        b = std * jr.normal(bkey, (width,)) if bias else None
        if init == "balanced":
            norms = jnp.sqrt(jnp.sum(W**2, axis=1) + (0.0 if b is None else b**2))
            v = jr.rademacher(vkey, (width,), dtype=W.dtype) * norms
        else:
            v = std * jr.normal(vkey, (width,))
        self.W, self.v, self.b = W, v, b

    @property
    def width(self) -> int:
        return self.W.shape[0]

    def preactivations(self, x: Float[Array, "*n d"]) -> Float[Array, "*n width"]:
        r"""$\langle w_j, x\rangle + b_j$ for every neuron, shape `(width,)` or
        `(n, width)`."""
        pre = x @ self.W.T
        if self.b is not None:
            pre = pre + self.b.reshape((1,) * (x.ndim - 1) + (-1,))
        return pre

    def __call__(self, x: Float[Array, "*n d"]) -> Float[Array, "*n"]:
        return jax.nn.relu(self.preactivations(x)) @ self.v

    def conserved(self) -> Float[Array, " width"]:
        r"""$c_j = v_j^2 - \|w_j\|^2 - b_j^2$, constant along the gradient flow of any
        loss of $f$ (the layer is positively homogeneous in $(w_j, b_j)$)."""
        c = self.v**2 - jnp.sum(self.W**2, axis=1)
        return c if self.b is None else c - self.b**2
