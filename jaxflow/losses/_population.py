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

from .._neurons import polar, single_neurons
from ..datasets import GaussianTeacher


@jax.custom_jvp
def arccos_kernel(w: Float[Array, " d"], v: Float[Array, " d"]) -> Float[Array, ""]:
    r"""$K(w, v) = \mathbb E_{x \sim N(0, I)}\, \sigma(\langle w, x\rangle)
    \sigma(\langle v, x\rangle)$, in closed form.

    Its derivative is given directly, $\nabla_w K = ((\pi - \theta)\, v + \|v\| \sin\theta
    \; w / \|w\|) / (2\pi)$ (and symmetrically in $v$): finite for parallel and
    antiparallel vectors, where $\arccos$ has an infinite derivative. At $w = 0$ it is
    taken with $\theta = \pi/2$, $v / 4$.
    """
    nw, nv, _, _, theta = polar(w, v)
    return (nw * nv * jnp.sin(theta) + (jnp.pi - theta) * jnp.dot(w, v)) / (2 * jnp.pi)


@arccos_kernel.defjvp
def _arccos_kernel_jvp(primals, tangents):
    w, v = primals
    dw, dv = tangents
    nw, nv, uw, uv, theta = polar(w, v)
    sin = jnp.sin(theta)
    value = (nw * nv * sin + (jnp.pi - theta) * jnp.dot(w, v)) / (2 * jnp.pi)
    gw = ((jnp.pi - theta) * v + nv * sin * uw) / (2 * jnp.pi)
    gv = ((jnp.pi - theta) * w + nw * sin * uv) / (2 * jnp.pi)
    return value, jnp.dot(gw, dw) + jnp.dot(gv, dv)


def _cross(c, W, b, V) -> Float[Array, ""]:
    gram = jax.vmap(lambda w: jax.vmap(lambda v: arccos_kernel(w, v))(V))(W)
    return c @ gram @ b


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
