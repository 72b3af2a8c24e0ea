"""A model's predictions on the rows of a data matrix, whichever input it takes.

jaxflow's own models act on a data matrix `(n, d) -> (n,)` or `(n, k)` (and on one
sample); equinox models usually act on one sample, `(d,) -> ()` or `(k,)`, and leave
batching to `jax.vmap`. `predict` tells the two apart from shapes alone, at trace time.
"""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float


def _probe(model: Any, shape: tuple[int, ...], dtype) -> tuple[tuple | None, str]:
    """The output shape of `model` on an input of `shape`, or `None` and what went
    wrong. Abstract evaluation only: nothing is computed."""
    try:
        out = eqx.filter_eval_shape(model, jax.ShapeDtypeStruct(shape, dtype))
    except Exception as error:
        # A wrong input convention fails in many ways: a TypeError from a matmul, a
        # ValueError under strict rank promotion, an assertion inside the model.
        name, lines = type(error).__name__, str(error).strip().splitlines()
        return None, f"{name}: {lines[0]}" if lines else name
    if not isinstance(out, jax.ShapeDtypeStruct):
        return None, f"an output of type {type(out).__name__}, not one array"
    return out.shape, f"output shape {out.shape}"


def predict(
    model: Any, X: Float[Array, "n d"]
) -> Float[Array, " n"] | Float[Array, "n k"]:
    r"""The predictions $f(x_i)$ of `model` on the rows $x_i$ of `X`.

    A model may act on the data matrix, `(n, d) -> (n,)` (or `(n, 1)`), as jaxflow's
    models do, or on one sample, `(d,) -> ()` (or `(1,)`), as `equinox.nn.MLP(d,
    "scalar", ...)` does; it is then `jax.vmap`-ed over the rows. A model with $k \ge
    2$ outputs maps `(n, d) -> (n, k)` or `(d,) -> (k,)`. The convention is found from
    output shapes by `equinox.filter_eval_shape`, at trace time, so it costs no run time
    and the model runs once. The data-matrix convention is tried first and wins
    whenever it gives shape `(n,)` or `(n, k)` (e.g. when $n = d$).

    **Arguments:**

    - `model`: a callable PyTree, usually an `equinox.Module`.
    - `X`: the inputs as rows, shape `(n, d)`.

    **Returns:**

    The predictions, shape `(n,)` (one output) or `(n, k)` ($k \ge 2$ outputs).

    **Raises:**

    `ValueError` if `X` is not a matrix, or if the model fits neither convention,
    naming the model's type and what each input shape gave.

    !!! Example

        ```python
        mlp = eqx.nn.MLP(2, "scalar", 16, 2, key=jax.random.key(0))
        predict(mlp, jnp.ones((10, 2))).shape  # (10,)
        ```
    """
    if jnp.ndim(X) != 2:
        raise ValueError(
            f"predict: `X` must be a data matrix of shape (n, d), got shape "
            f"{jnp.shape(X)}."
        )
    n, d = X.shape
    key = _key(model, X)
    found = _CONVENTIONS.get(key) if key is not None else None
    if found is None:
        found = _convention(model, n, d, X.dtype)
        if key is not None:
            _CONVENTIONS[key] = found
    convention, shape = found
    out = model(X) if convention == "matrix" else jax.vmap(model)(X)
    return jnp.reshape(out, shape)


# The convention found for a model's structure and a data shape: eager code (a loss
# evaluated outside `jit`, say in a loop) would otherwise trace the model every call.
_CONVENTIONS: dict = {}


def _key(model, X):
    """A hashable key for the model's structure and shapes and `X`'s, or None."""
    leaves, treedef = jax.tree.flatten(model)
    parts = tuple(
        (x.shape, str(x.dtype)) if isinstance(x, jax.Array | np.ndarray) else x
        for x in leaves
    )
    key = (treedef, parts, X.shape, str(X.dtype))
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _convention(model, n: int, d: int, dtype) -> tuple[str, tuple[int, ...]]:
    """How `model` takes a data matrix of shape `(n, d)`, and the predictions' shape:
    `(n,)` for one output, `(n, k)` for k >= 2."""
    shape, on_matrix = _probe(model, (n, d), dtype)
    if shape is not None and len(shape) in (1, 2) and shape[0] == n:
        return "matrix", (n,) if shape[1:] in ((), (1,)) else shape
    sample_shape, on_sample = _probe(model, (d,), dtype)
    if sample_shape is not None and len(sample_shape) <= 1:
        return "sample", (n,) if sample_shape in ((), (1,)) else (n, *sample_shape)
    raise ValueError(
        f"predict: the model {type(model).__name__} acts neither on the data matrix X "
        f"of shape {(n, d)} (gave {on_matrix}) nor on one sample of shape {(d,)} "
        f"(gave {on_sample}); a model must map (n, d) -> (n,) / (n, k) or (d,) -> () / "
        "(k,)."
    )
