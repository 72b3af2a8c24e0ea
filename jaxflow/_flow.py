from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree

from ._custom_types import LossFn
from ._dataset import Dataset
from .losses import AbstractLoss


class GradientFlow(eqx.Module):
    r"""The gradient flow $\dot\theta = -\nabla_\theta L(\theta)$ of a loss on a data set.

    The parameters $\theta$ are the floating-point arrays of a model PyTree (usually an
    `equinox.Module`); everything else in the model is held fixed.

    **Arguments:**

    - `loss`: a callable `loss(model, data) -> scalar`, e.g. `jaxflow.losses.exponential`.
    - `data`: the data passed to `loss`; usually a `jaxflow.Dataset`, but any PyTree works
        with a loss of your own.

    **Raises:**

    `ValueError` if `loss` is not callable, or if it is a built-in classification loss and
    `data.y` is not $\pm1$.

    !!! Example

        ```python
        flow = jf.GradientFlow(jf.losses.exponential, jf.Dataset(X, y))
        flow(net)           # the loss
        flow.gradient(net)  # its gradient, same structure as net
        ```
    """

    loss: LossFn
    data: Any

    def __init__(self, loss: LossFn, data: Any):
        if not callable(loss):
            raise ValueError(
                f"GradientFlow: `loss` must be a callable loss(model, data) -> scalar, "
                f"got {type(loss).__name__} {loss!r}."
            )
        if isinstance(loss, AbstractLoss) and isinstance(data, Dataset):
            data = Dataset(data.X, loss.check_labels(data.y))
        self.loss = loss
        self.data = data

    def __call__(self, model) -> Float[Array, ""]:
        return self.loss(model, self.data)

    def gradient(self, model) -> PyTree:
        """$\\nabla_\\theta L$, with the model's structure (`None` at non-float leaves)."""
        return eqx.filter_grad(self.loss)(model, self.data)

    def value_and_gradient(self, params: PyTree, static: PyTree):
        """$(L, \\nabla L)$ as a function of the parameter arrays alone (the model is
        `eqx.combine(params, static)`)."""
        return jax.value_and_grad(
            lambda p: self.loss(eqx.combine(p, static), self.data)
        )(params)

    def vector_field(self, t, params: PyTree, static: PyTree) -> PyTree:
        """$-\\nabla L$ as a function of the parameter arrays alone (diffrax's `y`)."""
        del t
        return jax.tree.map(jnp.negative, self.value_and_gradient(params, static)[1])
