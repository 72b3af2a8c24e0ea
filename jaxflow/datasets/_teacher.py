import equinox as eqx
import jax

from .._dataset import Dataset
from .._neurons import single_neurons
from ..models import NeuronChain, TwoLayerReLU


class GaussianTeacher(eqx.Module):
    r"""Infinite data: $x \sim N(0, I_d)$ labelled by `teacher`, $y = \text{teacher}(x)$.
    The data of a `jaxflow.GradientFlow` with the loss `jaxflow.losses.population`.

    **Arguments:**

    - `teacher`: a `NeuronChain` (depth 1: the single neuron $\sigma(\langle v,
        x\rangle)$) or a `TwoLayerReLU` without bias. Its parameters are data, not trained.
    """

    teacher: NeuronChain | TwoLayerReLU

    def __init__(self, teacher):
        single_neurons(teacher)  # raises for anything else
        self.teacher = teacher

    @property
    def d(self) -> int:
        return single_neurons(self.teacher)[1].shape[1]

    def sample(self, key, n: int):
        """`n` samples: a `jaxflow.Dataset` with $x_i \\sim N(0, I_d)$ and
        $y_i = \\text{teacher}(x_i)$ (train it with `jaxflow.losses.half_square`, the
        same $\\frac12$ mean square)."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(
                f"GaussianTeacher.sample: `n` must be a positive int, got {n!r}."
            )
        X = jax.random.normal(key, (n, self.d))
        return Dataset(X, self.teacher(X))
