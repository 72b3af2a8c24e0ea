import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ._errors import check, describe, is_traced


class Dataset(eqx.Module):
    r"""A full-batch data set $\{(x_i, y_i)\}_{i=1}^n$.

    **Arguments:**

    - `X`: inputs, shape `(n, d)`, finite floats.
    - `y`: targets, shape `(n,)`, finite floats. Classification losses
        (`jaxflow.losses.exponential`, `jaxflow.losses.logistic`) need labels in
        $\{+1, -1\}$; `jaxflow.GradientFlow` checks that.

    Floating inputs keep their dtype; others become the default float dtype (float64
    once `jaxflow` is imported).

    **Raises:**

    `ValueError` for a wrong rank, mismatched lengths, an empty set or non-finite values,
    with the value received. Inside `jax.jit` the value checks run at run time.

    !!! Example

        ```python
        ds = jf.Dataset(jnp.array([[1.0, 0.0], [0.0, 1.0]]), jnp.array([1.0, -1.0]))
        ds.x_plus, ds.separation()
        ```
    """

    X: Float[Array, "n d"]
    y: Float[Array, " n"]

    def __init__(self, X: Float[ArrayLike, "n d"], y: Float[ArrayLike, " n"]):
        X, y = _as_float(X), _as_float(y)
        if X.ndim != 2:
            raise ValueError(
                f"Dataset: `X` must have shape (n, d), got shape {X.shape}. "
                "Reshape a single sample to (1, d)."
            )
        if y.ndim != 1:
            raise ValueError(
                f"Dataset: `y` must have shape (n,), got shape {y.shape}. "
                "Multi-output targets are not supported."
            )
        if X.shape[0] != y.shape[0]:
            raise ValueError(
                f"Dataset: `X` has {X.shape[0]} rows but `y` has {y.shape[0]} "
                "entries; they must be equal."
            )
        if X.shape[0] == 0:
            raise ValueError(
                f"Dataset: `X` and `y` are empty (shapes {X.shape} and {y.shape}); "
                "need at least one point."
            )
        self.X = check(X, ~jnp.isfinite(X), lambda: _nonfinite_message("X", X))
        self.y = check(y, ~jnp.isfinite(y), lambda: _nonfinite_message("y", y))

    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def d(self) -> int:
        return self.X.shape[1]

    @property
    def x_plus(self) -> Float[Array, " d"]:
        """$x_+ = \\sum_{i: y_i > 0} x_i$ (unnormalised, as in Min et al.)."""
        return jnp.sum(jnp.where(self.y[:, None] > 0, self.X, 0.0), axis=0)

    @property
    def x_minus(self) -> Float[Array, " d"]:
        """$x_- = \\sum_{i: y_i < 0} x_i$."""
        return jnp.sum(jnp.where(self.y[:, None] < 0, self.X, 0.0), axis=0)

    def separation(self) -> Float[Array, ""]:
        r"""$\mu = \min_{i,j} \langle y_i x_i, y_j x_j\rangle / (\|x_i\| \|x_j\|)$.

        Positive exactly when the signed data lie in an open cone of angle below
        $\pi/2$ (Min, Mallada, Vidal 2024, Assumption 1).
        """
        Z = jnp.sign(self.y)[:, None] * self.X
        Z = Z / jnp.linalg.norm(Z, axis=1, keepdims=True)
        return jnp.min(Z @ Z.T)


def _as_float(x) -> Array:
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(float)


def _nonfinite_message(name: str, x) -> str:
    # Under `jax.jit` the check runs later, on values not known here (even for a
    # concrete `x`: the test itself may be staged).
    bad = [] if is_traced(x) else np.argwhere(~np.isfinite(np.asarray(x)))
    if len(bad) == 0:
        where = "some entries"
    else:
        where = f"{len(bad)} entries, the first at index {tuple(bad[0].tolist())}"
        where += f" with value {describe(np.asarray(x)[tuple(bad[0])])}"
    return f"Dataset: `{name}` must be finite, but {where} are inf or nan."
