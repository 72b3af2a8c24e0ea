"""Single neurons $c\\,\\sigma(\\langle w, x\\rangle)$: a network as a sum of them, and
the angle between two of them (the population loss, the teacher data, the metrics)."""

import jax.numpy as jnp
from jaxtyping import Array, Float

from .models import NeuronChain, TwoLayerReLU


def polar(w, v):
    """Norms, unit vectors and the angle $\\theta \\in [0, \\pi]$ of two vectors:
    `(|w|, |v|, w/|w|, v/|v|, theta)`."""
    nw, nv = jnp.linalg.norm(w), jnp.linalg.norm(v)
    uw = w / jnp.where(nw > 0, nw, 1.0)
    uv = v / jnp.where(nv > 0, nv, 1.0)
    # The angle from the chord lengths: accurate near 0 and pi, where arccos of the
    # cosine loses half the digits. A zero vector gets theta = pi/2.
    theta = 2 * jnp.arctan2(jnp.linalg.norm(uw - uv), jnp.linalg.norm(uw + uv))
    return nw, nv, uw, uv, theta


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
