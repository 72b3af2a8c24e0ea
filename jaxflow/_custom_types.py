from collections.abc import Callable
from typing import Any, TypeAlias

from jaxtyping import Array, ArrayLike, Float, Int, PyTree


Model: TypeAlias = PyTree[Any]
"""Any PyTree of parameters, usually an `equinox.Module`."""

RealScalarLike: TypeAlias = float | int | Float[ArrayLike, ""]
Times: TypeAlias = Float[Array, " times"]
DataMatrix: TypeAlias = Float[Array, "n d"]
Labels: TypeAlias = Float[Array, " n"]
Keys: TypeAlias = Int[Array, "..."]

LossFn: TypeAlias = Callable[[Any, Any], Float[Array, ""]]
"""`loss(model, data) -> scalar`."""

MetricFn: TypeAlias = Callable[[Any, Any], Array]
"""`metric(model, flow) -> array`, evaluated at every saved time."""
