import abc
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from .._dataset import Dataset
from .._errors import check, describe, is_traced
from .._predict import predict


class AbstractLoss(eqx.Module):
    r"""A loss $L(\theta) = \operatorname{reduce}_i \ell(f_\theta(x_i), y_i)$ on a data set.

    Subclasses define the per-sample loss `pointwise` and the targets they take
    (`targets`). Calling the loss evaluates the model on the rows of `data.X` and
    reduces over samples. The model may act on one sample, `(d,) -> ()` or `(1,)`
    (e.g. `equinox.nn.MLP(d, "scalar", ...)`; jaxflow `jax.vmap`s it over the rows), or
    on the data matrix, `(n, d) -> (n,)` or `(n, 1)`, as jaxflow's own models do; a
    model with $k \ge 2$ outputs maps `(d,) -> (k,)` or `(n, d) -> (n, k)`. A model
    that fits no convention raises a `ValueError` naming the shapes tried.

    **Fields:**

    - `reduction`: `"mean"` (default) for $\frac1n\sum_i$, or `"sum"` for $\sum_i$.
        The two flows differ by a time rescaling $t_{\rm sum} = t_{\rm mean} / n$.

    **Class variable** `targets`, what `data.y` must hold (`jaxflow.GradientFlow`
    checks it):

    - `"pm1"`: labels in $\{+1, -1\}$, floats, for a scalar-output model;
    - `"classes"`: integer class labels (`jaxflow.Dataset`'s `classes`), at most one per
        output of the model;
    - `"real"`: real targets of the predictions' shape, `(n,)` or `(n, k)`; integer
        class labels are taken as one-hot vectors of the model's `k` outputs.
    """

    reduction: eqx.AbstractVar[Literal["mean", "sum"]]
    targets: eqx.AbstractClassVar[Literal["pm1", "real", "classes"]]

    def __check_init__(self):
        if self.reduction not in ("mean", "sum"):
            raise ValueError(
                f"{type(self).__name__}: `reduction` must be 'mean' or 'sum', "
                f"got {self.reduction!r}."
            )

    @abc.abstractmethod
    def pointwise(
        self,
        prediction: Float[Array, " n"] | Float[Array, "n k"],
        target: Float[Array, " n"] | Float[Array, "n k"] | Int[Array, " n"],
    ) -> Float[Array, " n"]:
        """The per-sample loss $\\ell(\\hat y_i, y_i)$, one value per sample."""

    def of_predictions(
        self,
        prediction: Float[Array, " n"] | Float[Array, "n k"],
        target: Float[Array, " n"] | Float[Array, "n k"] | Int[Array, " n"],
    ) -> Float[Array, ""]:
        """The loss as a function of the predictions $\\hat y_i = f(x_i)$."""
        values = self.pointwise(prediction, _matched(self, prediction, target))
        return jnp.mean(values) if self.reduction == "mean" else jnp.sum(values)

    def __call__(self, model, data: Dataset) -> Float[Array, ""]:
        prediction = predict(model, data.X)
        outputs = prediction.shape[1] if prediction.ndim == 2 else 1
        if getattr(data, "classes", None) is not None and data.classes > outputs:
            raise ValueError(
                f"{type(self).__name__}: the data have {data.classes} classes (labels "
                f"0 to {data.classes - 1}) but the model {type(model).__name__} has "
                f"{outputs} output(s); it needs one output per class."
            )
        return self.of_predictions(prediction, data.y)

    def check_targets(self, data: Dataset) -> Dataset:
        """Return `data`, raising if its targets `y` are not what this loss takes
        (`targets`; values at run time under `jax.jit`)."""
        y, name = data.y, type(self).__name__
        if self.targets == "classes" and data.classes is None:
            raise ValueError(
                f"{name} needs integer class labels y in {{0, ..., k - 1}}, got y of "
                f"dtype {y.dtype} and shape {y.shape}. Pass integers, e.g. "
                "`jf.Dataset(X, labels.astype(int))` (inside `jax.jit` with "
                "`classes=k`)."
            )
        if self.targets != "pm1":
            return data
        if y.ndim != 1:
            raise ValueError(
                f"{name} needs labels y in {{+1, -1}} (shape (n,)) for a "
                f"scalar-output model, got y of dtype {y.dtype} and shape {y.shape}. "
                "For several classes use `jaxflow.losses.cross_entropy`."
            )
        y = y.astype(data.X.dtype)
        y = check(
            y,
            jnp.abs(y) != 1,
            lambda: (
                f"{name} needs labels y in {{+1, -1}}, got "
                f"{describe(y if is_traced(y) else jnp.unique(y))}. Map your labels, "
                "e.g. "
                "`y = jnp.where(labels == positive_class, 1.0, -1.0)`; for several "
                "classes use `jaxflow.losses.cross_entropy`."
            ),
        )
        return Dataset(data.X, y)


def _matched(loss: AbstractLoss, prediction, target):
    """`target` in the form `loss.pointwise` takes with `prediction` (integer labels
    one-hot for real targets), or a `ValueError` naming both shapes."""
    name, vector = type(loss).__name__, prediction.ndim == 2
    labels = jnp.issubdtype(target.dtype, jnp.integer)
    if loss.targets != "classes" and labels:
        if loss.targets == "real" and vector:
            return jax.nn.one_hot(target, prediction.shape[1], dtype=prediction.dtype)
        target, labels = target.astype(prediction.dtype), False  # numbers
    if loss.targets == "classes":
        fits = labels and vector and target.shape == prediction.shape[:1]
        expected = "(n, k) predictions of a model with k >= 2 outputs, labels (n,)"
    elif loss.targets == "pm1":
        fits = not vector and target.shape == prediction.shape
        expected = "(n,) predictions of a scalar-output model and (n,) labels"
    else:
        fits = not labels and target.shape == prediction.shape
        expected = "predictions and targets of one shape, (n,) or (n, k)"
    if not fits:
        raise ValueError(
            f"{name}: needs {expected}; got predictions of shape {prediction.shape} "
            f"and targets of shape {target.shape}, dtype {target.dtype}."
        )
    return target


class Exponential(AbstractLoss):
    r"""Exponential loss $\ell(\hat y, y) = \exp(-y \hat y)$, labels $\pm1$.

    With `reduction="mean"`: $L = \frac1n \sum_i \exp(-y_i f(x_i))$.
    """

    reduction: Literal["mean", "sum"] = eqx.field(default="mean", static=True)
    targets = "pm1"

    def pointwise(self, prediction, target):
        return jnp.exp(-target * prediction)


class Logistic(AbstractLoss):
    r"""Logistic loss $\ell(\hat y, y) = \log(1 + \exp(-y \hat y))$, labels $\pm1$.

    Computed as a softplus, stable for large margins. With `reduction="mean"`:
    $L = \frac1n \sum_i \log(1 + e^{-y_i f(x_i)})$.
    """

    reduction: Literal["mean", "sum"] = eqx.field(default="mean", static=True)
    targets = "pm1"

    def pointwise(self, prediction, target):
        return jax.nn.softplus(-target * prediction)


class Square(AbstractLoss):
    r"""Square loss $\ell(\hat y, y) = \|\hat y - y\|^2$, **without** a factor ½
    unless `half=True`.

    With `reduction="mean"`: $L = \frac1n \sum_i (f(x_i) - y_i)^2$, as in Boursier and
    Flammarion (2024); with `half=True`, $\frac1{2n} \sum_i (f(x_i) - y_i)^2$, as in
    Lee, Sim and Ye (the finite-sample version of `jaxflow.losses.population`). Any
    real targets; for a model with $k$ outputs, targets of shape `(n, k)` (the squared
    norm sums over outputs) or integer class labels, taken as one-hot vectors.
    """

    reduction: Literal["mean", "sum"] = eqx.field(default="mean", static=True)
    half: bool = eqx.field(default=False, static=True)
    targets = "real"

    def pointwise(self, prediction, target):
        squares = (prediction - target) ** 2
        if squares.ndim == 2:
            squares = jnp.sum(squares, axis=1)
        return (0.5 if self.half else 1.0) * squares


class CrossEntropy(AbstractLoss):
    r"""Softmax cross-entropy $\ell(\hat y, y) = \log \sum_c e^{\hat y_c} - \hat y_y$
    of a model with one output per class and integer labels $y \in \{0, \dots,
    k - 1\}$ (`jaxflow.Dataset` with integer `y`).

    Computed with a log-sum-exp, stable for large logits. With `reduction="mean"`:
    $L = \frac1n \sum_i \ell(f(x_i), y_i)$. For two classes with one output use
    `jaxflow.losses.logistic`.
    """

    reduction: Literal["mean", "sum"] = eqx.field(default="mean", static=True)
    targets = "classes"

    def pointwise(self, prediction, target):
        chosen = jnp.take_along_axis(prediction, target[:, None], axis=1)[:, 0]
        return jax.nn.logsumexp(prediction, axis=1) - chosen


exponential = Exponential()
logistic = Logistic()
square = Square()
half_square = Square(half=True)
cross_entropy = CrossEntropy()
