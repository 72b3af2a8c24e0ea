from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray


class NeuronChain(eqx.Module):
    r"""A chain of single ReLU neurons (Lee, Sim and Ye):
    $f(x) = a_L\,\sigma(a_{L-1}\,\sigma(\cdots a_2\,\sigma(\langle w_1, x\rangle)))$,
    and $f(x) = \sigma(\langle w_1, x\rangle)$ for depth 1.

    Since $\sigma(a\,\sigma(z)) = \sigma(a)\,\sigma(z)$, the chain is one neuron with
    output weight $c = a_L \prod_{l=2}^{L-1} \sigma(a_l)$ ($c = 1$ at depth 1):
    $f(x) = c\,\sigma(\langle w_1, x\rangle)$. With every $a_l > 0$ it is
    $\sigma(\langle u, x\rangle)$ for the end-to-end vector $u = (\prod_l a_l)\, w_1$
    (`end_to_end`).

    **Arguments:**

    - `d`: input dimension.
    - `depth`: $L \ge 1$, the number of layers.
    - `scale`: initialisation scale.
    - `init`:
        - `"balanced"` (default): $w_1 = \text{scale}\cdot \hat g$ with $\hat g$
            uniform on the sphere, and $a_l = \|w_1\| = \text{scale}$, so that the
            conserved quantities $a_l^2 - \|w_1\|^2$ start at zero; then
            $\|u\| = \text{scale}^L$.
        - `"gaussian"`: $w_1 \sim N(0, \text{scale}^2/d\; I)$, $a_l \sim
            N(0, \text{scale}^2)$.
    - `key`: a JAX random key.

    **Fields:** `w` of shape `(d,)`, `a` of shape `(depth - 1,)` ($a_2, \ldots, a_L$).
    """

    w: Float[Array, " d"]
    a: Float[Array, " depth_minus_1"]

    def __init__(
        self,
        d: int,
        depth: int,
        *,
        scale: float = 1.0,
        init: Literal["balanced", "gaussian"] = "balanced",
        key: PRNGKeyArray,
    ):
        for name, value in (("d", d), ("depth", depth)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"NeuronChain: `{name}` must be a positive int, got {value!r}."
                )
        if init not in ("balanced", "gaussian"):
            raise ValueError(
                f"NeuronChain: `init` must be 'balanced' or 'gaussian', got {init!r}."
            )
        if not isinstance(scale, jax.Array) and not scale > 0:
            raise ValueError(f"NeuronChain: `scale` must be > 0, got {scale!r}.")
        wkey, akey = jr.split(key)
        g = jr.normal(wkey, (d,))
        if init == "balanced":
            self.w = scale * g / jnp.linalg.norm(g)
            self.a = jnp.full((depth - 1,), scale, self.w.dtype)
        else:
            self.w = scale * d**-0.5 * g
            self.a = scale * jr.normal(akey, (depth - 1,))

    @property
    def depth(self) -> int:
        return self.a.shape[0] + 1

    def output_weight(self) -> Float[Array, ""]:
        r"""$c = a_L \prod_{l=2}^{L-1} \sigma(a_l)$, so that $f(x) = c\,\sigma(\langle
        w_1, x\rangle)$ (1 at depth 1)."""
        if self.depth == 1:
            return jnp.ones((), self.w.dtype)
        return self.a[-1] * jnp.prod(jax.nn.relu(self.a[:-1]))

    def end_to_end(self) -> Float[Array, " d"]:
        r"""$u = c\, w_1$: the chain is $\sigma(\langle u, x\rangle)$ when $c > 0$."""
        return self.output_weight() * self.w

    def __call__(self, x: Float[Array, "*n d"]) -> Float[Array, "*n"]:
        h = jax.nn.relu(x @ self.w)
        for a in self.a[:-1]:
            h = jax.nn.relu(a * h)
        return h if self.depth == 1 else self.a[-1] * h

    def conserved(self) -> Float[Array, " depth_minus_1"]:
        r"""$a_l^2 - \|w_1\|^2$ for $l = 2, \ldots, L$: constant along the gradient flow
        of any loss of $f$ (each layer is positively homogeneous)."""
        return self.a**2 - jnp.sum(self.w**2)
