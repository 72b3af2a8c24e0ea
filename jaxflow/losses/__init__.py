"""Losses `loss(model, data) -> scalar`.

`exponential`, `logistic` and `square` are mean-reduced instances; for the sum use
`Exponential(reduction="sum")` etc. Any callable `loss(model, data)` works with
`jaxflow.GradientFlow` too.
"""

from ._loss import (
    AbstractLoss as AbstractLoss,
    Exponential as Exponential,
    Logistic as Logistic,
    Square as Square,
    exponential as exponential,
    logistic as logistic,
    square as square,
)
