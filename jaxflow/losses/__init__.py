"""Losses `loss(model, data) -> scalar`.

`exponential`, `logistic`, `square`, `half_square` and `cross_entropy` are
mean-reduced instances; for the sum use `Exponential(reduction="sum")` etc. `population` is the exact population
square loss for Gaussian inputs and a teacher (`jaxflow.datasets.GaussianTeacher`). Any callable `loss(model, data)` works with
`jaxflow.GradientFlow` too.
"""

from ._loss import (
    AbstractLoss as AbstractLoss,
    CrossEntropy as CrossEntropy,
    Exponential as Exponential,
    Logistic as Logistic,
    Square as Square,
    cross_entropy as cross_entropy,
    exponential as exponential,
    half_square as half_square,
    logistic as logistic,
    square as square,
)
from ._population import (
    Population as Population,
    arccos_kernel as arccos_kernel,
    population as population,
)


__all__ = [
    "AbstractLoss",
    "CrossEntropy",
    "Exponential",
    "Logistic",
    "Square",
    "exponential",
    "half_square",
    "logistic",
    "square",
    "cross_entropy",
    "Population",
    "arccos_kernel",
    "population",
]
