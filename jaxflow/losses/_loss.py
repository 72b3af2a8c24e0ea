import abc
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._dataset import Dataset
from .._errors import check, describe, is_traced
from .._predict import predict


class AbstractLoss(eqx.Module):
    r"""A loss $L(\theta) = \operatorname{reduce}_i \ell(f_\theta(x_i), y_i)$ on a data set.

    Subclasses define the per-sample loss `pointwise` and whether labels must be
    $\pm 1$. Calling the loss evaluates the model on the rows of `data.X` and reduces
    over samples. The model may act on one sample, `(d,) -> ()` or `(1,)` (e.g.
    `equinox.nn.MLP(d, "scalar", ...)`; jaxflow `jax.vmap`s it over the rows), or on
    the data matrix, `(n, d) -> (n,)` or `(n, 1)`, as jaxflow's own models do. The
    convention is found from output shapes at trace time, the data matrix first; a
    model that fits neither (several outputs, say) raises a `ValueError` naming the
    shapes tried.

    **Fields:**

    - `reduction`: `"mean"` (default) for $\frac1n\sum_i$, or `"sum"` for $\sum_i$.
        The two flows differ by a time rescaling $t_{\rm sum} = t_{\rm mean} / n$.
    """

    reduction: eqx.AbstractVar[Literal["mean", "sum"]]
    needs_pm1_labels: eqx.AbstractClassVar[bool]

    def __check_init__(self):
        if self.reduction not in ("mean", "sum"):
            raise ValueError(
                f"{type(self).__name__}: `reduction` must be 'mean' or 'sum', "
                f"got {self.reduction!r}."
            )

    @abc.abstractmethod
    def pointwise(
        self, prediction: Float[Array, " n"], target: Float[Array, " n"]
    ) -> Float[Array, " n"]:
        """The per-sample loss $\\ell(\\hat y_i, y_i)$, elementwise."""

    def of_predictions(
        self, prediction: Float[Array, " n"], target: Float[Array, " n"]
    ) -> Float[Array, ""]:
        """The loss as a function of the predictions $\\hat y_i = f(x_i)$."""
        values = self.pointwise(prediction, target)
        return jnp.mean(values) if self.reduction == "mean" else jnp.sum(values)

    def __call__(self, model, data: Dataset) -> Float[Array, ""]:
        return self.of_predictions(predict(model, data.X), data.y)

    def check_labels(self, y: Float[Array, " n"]) -> Float[Array, " n"]:
        """Return `y`, raising if this loss needs labels in $\\{+1,-1\\}$ and they
        are not (at run time under `jax.jit`)."""
        if not self.needs_pm1_labels:
            return y
        return check(
            y,
            jnp.abs(y) != 1,
            lambda: (
                f"{type(self).__name__} needs labels y in {{+1, -1}}, got "
                f"{describe(y if is_traced(y) else jnp.unique(y))}. Map your labels, "
                "e.g. "
                "`y = jnp.where(labels == positive_class, 1.0, -1.0)`."
            ),
        )


class Exponential(AbstractLoss):
    r"""Exponential loss $\ell(\hat y, y) = \exp(-y \hat y)$, labels $\pm1$.

    With `reduction="mean"`: $L = \frac1n \sum_i \exp(-y_i f(x_i))$.
    """

    reduction: Literal["mean", "sum"] = eqx.field(default="mean", static=True)
    needs_pm1_labels = True

    def pointwise(self, prediction, target):
        return jnp.exp(-target * prediction)


class Logistic(AbstractLoss):
    r"""Logistic loss $\ell(\hat y, y) = \log(1 + \exp(-y \hat y))$, labels $\pm1$.

    Computed as a softplus, stable for large margins. With `reduction="mean"`:
    $L = \frac1n \sum_i \log(1 + e^{-y_i f(x_i)})$.
    """

    reduction: Literal["mean", "sum"] = eqx.field(default="mean", static=True)
    needs_pm1_labels = True

    def pointwise(self, prediction, target):
        return jax.nn.softplus(-target * prediction)


class Square(AbstractLoss):
    r"""Square loss $\ell(\hat y, y) = (\hat y - y)^2$, **without** a factor ½ unless
    `half=True`.

    With `reduction="mean"`: $L = \frac1n \sum_i (f(x_i) - y_i)^2$, as in Boursier and
    Flammarion (2024); with `half=True`, $\frac1{2n} \sum_i (f(x_i) - y_i)^2$, as in
    Lee, Sim and Ye (the finite-sample version of `jaxflow.losses.population`). Any
    real targets.
    """

    reduction: Literal["mean", "sum"] = eqx.field(default="mean", static=True)
    half: bool = eqx.field(default=False, static=True)
    needs_pm1_labels = False

    def pointwise(self, prediction, target):
        return (0.5 if self.half else 1.0) * (prediction - target) ** 2


exponential = Exponential()
logistic = Logistic()
square = Square()
half_square = Square(half=True)
