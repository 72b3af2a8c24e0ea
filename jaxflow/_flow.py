from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree

from ._custom_types import LossFn
from ._dataset import Dataset
from ._kinks import min_norm_gradient
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

    `ValueError` if `loss` is not callable, or if it is a built-in loss and `data.y` is
    not what it takes (labels $\pm1$ for `exponential` and `logistic`, integer class
    labels for `cross_entropy`).

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
            data = loss.check_targets(data)
        self.loss = loss
        self.data = data

    def __call__(self, model) -> Float[Array, ""]:
        return self.loss(model, self.data)

    def gradient(self, model) -> PyTree:
        """$\\nabla_\\theta L$, with the model's structure (`None` at non-float leaves)."""
        return eqx.filter_grad(self.loss)(model, self.data)

    def min_norm_gradient(self, model) -> PyTree:
        r"""The least-norm element of the Clarke subdifferential $\partial L$: the
        velocity of `jaxflow.solve(kinks="min-norm")` is minus this.

        For a `jaxflow.models.TwoLayerReLU` or a one-hidden-layer ReLU
        `jaxflow.models.MLP` with a built-in loss on a `Dataset`, pairs
        with $|\langle w_j, x_i\rangle + b_j| \le 10^{-10} \|(w_j, b_j)\| \|(x_i, 1)\|$
        count as on the kink (where the min-norm solve keeps sliding pairs, to rounding),
        any number per neuron. For another network whose loss calls `jax.nn.relu` or
        `jax.nn.leaky_relu`, minus the velocity of the sliding flow (the equivalent
        control, `jaxflow._sliding`), pairs within $10^{-10}$ of their site's RMS
        pre-activation counting as on the kink. For other models it is
        `gradient(model)`.
        """
        return min_norm_gradient(self, model)

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


class SavedFlow(eqx.Module):
    """A solve's flow as its metrics see it at a saved time: the same loss and data,
    and a `min_norm_gradient` that is minus the velocity the solve follows there (its
    piece's field, pairs sliding on their kinks included), not one recomputed from the
    side of each kink on which the saved point happens to fall (`GradientFlow.
    min_norm_gradient` decides that by a tolerance, and a point of the dense output is
    off a sliding pair's kink by the interpolation's error)."""

    flow: GradientFlow
    velocity: Callable[[], PyTree]  # the saved point's, computed when asked for

    @property
    def loss(self) -> LossFn:
        return self.flow.loss

    @property
    def data(self) -> Any:
        return self.flow.data

    def __call__(self, model) -> Float[Array, ""]:
        return self.flow(model)

    def gradient(self, model) -> PyTree:
        return self.flow.gradient(model)

    def min_norm_gradient(self, model) -> PyTree:
        """Minus the solve's velocity at the saved point (`model` is that point)."""
        _, static = eqx.partition(model, eqx.is_inexact_array)
        return eqx.combine(jax.tree.map(jnp.negative, self.velocity()), static)
