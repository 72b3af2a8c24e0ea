r"""The population square loss for Gaussian inputs, in closed form.

For $x \sim N(0, I_d)$ the arc-cosine kernel of degree 1 (Cho and Saul; Tian 2017) is

$$K(w, v) = \mathbb E\,\sigma(\langle w, x\rangle)\,\sigma(\langle v, x\rangle)
= \frac{\|w\|\,\|v\|\,(\sin\theta + (\pi - \theta)\cos\theta)}{2\pi},
\qquad \theta = \angle(w, v),$$

so a student and a teacher that are sums of single neurons,
$f = \sum_j c_j \sigma(\langle w_j, x\rangle)$ and $y = \sum_k b_k \sigma(\langle v_k,
x\rangle)$, have the population loss
$L = \tfrac12\,\mathbb E (f - y)^2 = \tfrac12 \big[\sum c_j c_{j'} K(w_j, w_{j'})
- 2 \sum c_j b_k K(w_j, v_k) + \sum b_k b_{k'} K(v_k, v_{k'})\big]$: the exact
infinite-data gradient flow, with no sampling noise.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._dataset import Dataset
from ..models import NeuronChain, TwoLayerReLU


def _geometry(w, v):
    nw, nv = jnp.linalg.norm(w), jnp.linalg.norm(v)
    uw = w / jnp.where(nw > 0, nw, 1.0)
    uv = v / jnp.where(nv > 0, nv, 1.0)
    # The angle from the chord lengths: accurate near 0 and pi, where arccos of the
    # cosine loses half the digits. A zero vector gets theta = pi/2.
    theta = 2 * jnp.arctan2(jnp.linalg.norm(uw - uv), jnp.linalg.norm(uw + uv))
    return nw, nv, uw, uv, theta


@jax.custom_jvp
def arccos_kernel(w: Float[Array, " d"], v: Float[Array, " d"]) -> Float[Array, ""]:
    r"""$K(w, v) = \mathbb E_{x \sim N(0, I)}\, \sigma(\langle w, x\rangle)
    \sigma(\langle v, x\rangle)$, in closed form.

    Its derivative is given directly, $\nabla_w K = ((\pi - \theta)\, v + \|v\| \sin\theta
    \; w / \|w\|) / (2\pi)$ (and symmetrically in $v$): finite for parallel and
    antiparallel vectors, where $\arccos$ has an infinite derivative. At $w = 0$ it is
    taken with $\theta = \pi/2$, $v / 4$.
    """
    nw, nv, _, _, theta = _geometry(w, v)
    return (nw * nv * jnp.sin(theta) + (jnp.pi - theta) * jnp.dot(w, v)) / (2 * jnp.pi)


@arccos_kernel.defjvp
def _arccos_kernel_jvp(primals, tangents):
    w, v = primals
    dw, dv = tangents
    nw, nv, uw, uv, theta = _geometry(w, v)
    sin = jnp.sin(theta)
    value = (nw * nv * sin + (jnp.pi - theta) * jnp.dot(w, v)) / (2 * jnp.pi)
    gw = ((jnp.pi - theta) * v + nv * sin * uw) / (2 * jnp.pi)
    gv = ((jnp.pi - theta) * w + nw * sin * uv) / (2 * jnp.pi)
    return value, jnp.dot(gw, dw) + jnp.dot(gv, dv)


def single_neurons(model) -> tuple[Float[Array, " k"], Float[Array, "k d"]]:
    r"""A network as a sum of single neurons $\sum_j c_j \sigma(\langle w_j, x\rangle)$:
    the output weights $c$ and the rows $w_j$. For a `NeuronChain`, its output weight and
    $w_1$; for a `TwoLayerReLU` without bias, $v$ and $W$."""
    if isinstance(model, NeuronChain):
        return model.output_weight()[None], model.w[None, :]
    if isinstance(model, TwoLayerReLU) and model.b is None:
        return model.v, model.W
    raise ValueError(
        "population loss: the student and teacher must be a "
        "jaxflow.models.NeuronChain or a jaxflow.models.TwoLayerReLU without bias, got "
        f"{type(model).__name__}"
        + (" with bias" if isinstance(model, TwoLayerReLU) else "")
        + "."
    )


def _cross(c, W, b, V) -> Float[Array, ""]:
    gram = jax.vmap(lambda w: jax.vmap(lambda v: arccos_kernel(w, v))(V))(W)
    return c @ gram @ b


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


class Population(eqx.Module):
    r"""The population square loss $L = \frac12\, \mathbb E_{x \sim N(0, I_d)}
    (f(x) - y(x))^2$ on a `GaussianTeacher`, exactly, through `arccos_kernel`.

    The model is a `NeuronChain` or a `TwoLayerReLU` without bias (any width).
    """

    def __call__(self, model, data: GaussianTeacher) -> Float[Array, ""]:
        if not isinstance(data, GaussianTeacher):
            raise ValueError(
                "population loss: `data` must be a jaxflow.datasets.GaussianTeacher, "
                f"got {type(data).__name__}."
            )
        c, W = single_neurons(model)
        b, V = single_neurons(jax.lax.stop_gradient(data.teacher))
        return 0.5 * (_cross(c, W, c, W) - 2 * _cross(c, W, b, V) + _cross(b, V, b, V))


population = Population()
