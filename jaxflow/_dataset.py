import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from ._errors import check, describe, is_traced


class Dataset(eqx.Module):
    r"""A full-batch data set $\{(x_i, y_i)\}_{i=1}^n$.

    **Arguments:**

    - `X`: inputs, shape `(n, d)`, finite floats.
    - `y`: one of
        - real targets, shape `(n,)` (a scalar-output model), finite floats. Binary
            classification losses (`jaxflow.losses.exponential`,
            `jaxflow.losses.logistic`) need labels in $\{+1, -1\}$;
            `jaxflow.GradientFlow` checks that.
        - vector targets, shape `(n, k)` (a model with `k` outputs), finite floats,
            for the squared losses.
        - class labels, shape `(n,)`, integers in $\{0, \dots, k - 1\}$, for
            `jaxflow.losses.cross_entropy` (or the squared losses, on one-hot
            targets) and a model with one output per class. Integers are class
            labels when `classes` is given or none is negative; otherwise (labels
            $\pm1$ as integers, say) they are numbers, stored as floats.
    - `classes`: the number of classes $k$ of integer labels; by default one more than
        the largest label. Inside `jax.jit` (traced labels) integers are class labels
        only with `classes` given. The losses check it against the model's number of
        outputs.

    Floating inputs and targets keep their dtype; other inputs and targets become the
    default float dtype (float64 once `jaxflow` is imported), except integer labels,
    which stay integers.

    **Raises:**

    `ValueError` for a wrong rank, mismatched lengths, an empty set, non-finite values
    or labels outside $\{0, \dots, k - 1\}$, with the value received. Inside
    `jax.jit` the value checks run at run time.

    !!! Example

        ```python
        ds = jf.Dataset(jnp.array([[1.0, 0.0], [0.0, 1.0]]), jnp.array([1.0, -1.0]))
        ds.x_plus, ds.separation()
        ```
    """

    X: Float[Array, "n d"]
    y: Float[Array, " n"] | Float[Array, "n k"] | Int[Array, " n"]
    classes: int | None = eqx.field(static=True)

    def __init__(
        self,
        X: Float[ArrayLike, "n d"],
        y: Float[ArrayLike, " n"] | Float[ArrayLike, "n k"] | Int[ArrayLike, " n"],
        classes: int | None = None,
    ):
        X, y = _as_float(X), jnp.asarray(y)
        # Integers are class labels if `classes` says so or none is negative (known
        # only when concrete); others (labels +-1, say) are numbers, as floats.
        labels = jnp.issubdtype(y.dtype, jnp.integer) and (
            classes is not None
            or (not is_traced(y) and bool(np.all(np.asarray(y) >= 0)))
        )
        if not labels:
            y = _as_float(y)
        if X.ndim != 2:
            raise ValueError(
                f"Dataset: `X` must have shape (n, d), got shape {X.shape}. "
                "Reshape a single sample to (1, d)."
            )
        if y.ndim not in ((1,) if labels else (1, 2)):
            expected = "(n,) (class labels)" if labels else "(n,) or (n, k)"
            raise ValueError(
                f"Dataset: `y` of dtype {y.dtype} must have shape {expected}, got "
                f"shape {y.shape}."
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
        if labels:
            self.classes = _classes(y, classes)
            self.y = check(
                y,
                (y < 0) | (y >= self.classes),
                lambda: (
                    f"Dataset: class labels `y` must be in {{0, ..., "
                    f"{self.classes - 1}}} (`classes` = {self.classes}), got "
                    f"{describe(y if is_traced(y) else np.unique(y))}."
                ),
            )
        else:
            if classes is not None:
                raise ValueError(
                    f"Dataset: `classes` is for integer class labels, but `y` has "
                    f"dtype {y.dtype}; got classes={classes!r}. Pass labels as "
                    "integers, or leave `classes` out."
                )
            self.classes = None
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
        Z = jnp.sign(self.y).astype(self.X.dtype)[:, None] * self.X
        Z = Z / jnp.linalg.norm(Z, axis=1, keepdims=True)
        return jnp.min(Z @ Z.T)


def _classes(y, classes) -> int:
    """The number of classes of integer labels `y`: `classes`, checked, or one more
    than the largest label."""
    if classes is None:  # concrete labels, none negative
        return max(int(np.max(np.asarray(y))) + 1, 1) if y.size else 1
    count = isinstance(classes, int | np.integer) and not isinstance(classes, bool)
    if not count or classes < 1:
        raise ValueError(f"Dataset: `classes` must be a positive int, got {classes!r}.")
    return int(classes)


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
