import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray


class Linear(eqx.Module):
    r"""Linear model $f(x) = \langle w, x\rangle + b$.

    Its gradient flow on the square loss is linear, $\dot\theta = -A\theta + c$, with the
    matrix exponential as closed form: the reference for solver accuracy.

    **Arguments:**

    - `d`: input dimension.
    - `scale`: entries of $w$ (and $b$) are $N(0, \text{scale}^2)$; zero if `key` is
        `None`.
    - `bias`: whether to include $b$.
    - `key`: a JAX random key, or `None` for a zero init.
    """

    w: Float[Array, " d"]
    b: Float[Array, ""] | None

    def __init__(
        self,
        d: int,
        *,
        scale: float = 1.0,
        bias: bool = False,
        key: PRNGKeyArray | None = None,
    ):
        if not isinstance(d, int) or d < 1:
            raise ValueError(f"Linear: `d` must be a positive int, got {d!r}.")
        if key is None:
            self.w = jnp.zeros(d)
            self.b = jnp.zeros(()) if bias else None
        else:
            wkey, bkey = jr.split(key)
            self.w = scale * jr.normal(wkey, (d,))
            self.b = scale * jr.normal(bkey, ()) if bias else None

    def __call__(self, x: Float[Array, "*n d"]) -> Float[Array, "*n"]:
        out = x @ self.w
        return out if self.b is None else out + self.b
