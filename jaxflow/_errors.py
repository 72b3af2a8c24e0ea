"""Argument checking shared by the public functions.

Concrete values are checked in Python and raise `ValueError` naming the argument, the
value received and what is expected. Traced values (inside `jax.jit` or `jax.vmap`)
cannot be inspected, so they are checked at run time with `equinox.error_if` instead.
"""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool


def is_traced(*xs) -> bool:
    return any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(xs))


def check(
    x: ArrayLike, bad: Bool[ArrayLike, "..."], message: str | Callable[[], str]
) -> Array:
    """Raise `ValueError(message)` if any of `bad` holds; at run time if traced.

    `message` may be a function, called only when the check fails.
    Returns `x` (tied to the run-time check when traced, so use the return value).
    """
    if is_traced(x, bad):
        text = message if isinstance(message, str) else message()
        return eqx.error_if(jnp.asarray(x), jnp.any(bad), text)
    if np.any(np.asarray(bad)):
        raise ValueError(message if isinstance(message, str) else message())
    return jnp.asarray(x)


def describe(x) -> str:
    """A short text of a received value for error messages."""
    if is_traced(x):
        return f"a traced array of shape {jnp.shape(x)}"
    arr = np.asarray(x)
    if arr.size <= 6:
        return repr(arr.tolist()) if arr.ndim else repr(arr.item())
    return f"an array of shape {arr.shape}, dtype {arr.dtype}"


def describe_tree(tree) -> str:
    """The type and array shapes of a model or flow, e.g. for error messages."""
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    shapes = ", ".join(
        f"{jax.tree_util.keystr(path)}: {tuple(np.shape(x))}"
        for path, x in leaves
        if eqx.is_array(x)
    )
    return f"{type(tree).__name__}({shapes})"
