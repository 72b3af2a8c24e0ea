from collections.abc import Callable
from typing import Any, TypeAlias

from jaxtyping import Array, ArrayLike, Float, PyTree


Model: TypeAlias = PyTree[Any]
"""Any PyTree of parameters, usually an `equinox.Module`."""

RealScalarLike: TypeAlias = float | int | Float[ArrayLike, ""]

LossFn: TypeAlias = Callable[[Any, Any], Float[Array, ""]]
"""`loss(model, data) -> scalar`."""

MetricFn: TypeAlias = Callable[[Any, Any], Array]
"""`metric(model, flow) -> array`, evaluated at every saved time."""
