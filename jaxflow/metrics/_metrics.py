r"""Quantities evaluated along a trajectory, at the saved times `ts` of a solve.

A metric is any callable `metric(model, flow) -> array`. The built-in ones below are
module-level functions or `equinox.Module`s, so that repeated solves reuse their
compiled code; a metric of your own should likewise be defined once, not as a fresh
`lambda` per call.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._dataset import Dataset
from .._neurons import polar
from .._predict import predict
from .._relu import cones
from ..models import MLP, NeuronChain, TwoLayerReLU


def loss(model, flow) -> Float[Array, ""]:
    """The loss $L(\\theta)$."""
    return flow(model)


def grad_norm(model, flow) -> Float[Array, ""]:
    """$\\|\\nabla_\\theta L\\|_2$ over all parameters; at ReLU kinks, of the
    least-norm element of the subdifferential (`GradientFlow.min_norm_gradient`), the
    speed of the flow. At the saved times of a solve, the norm of the velocity it
    follows there (`jaxflow._flow.SavedFlow`)."""
    leaves = jax.tree.leaves(
        eqx.filter(flow.min_norm_gradient(model), eqx.is_inexact_array)
    )
    return jnp.sqrt(sum(jnp.sum(g**2) for g in leaves))


def accuracy(model, flow) -> Float[Array, ""]:
    """The fraction of the points of `flow.data` (a `jaxflow.Dataset`) that the model
    classifies right: with several outputs, those whose largest output is their label
    (integer labels, or the largest entry of vector targets, one-hot say); with one
    output, those where $f(x_i)$ has the sign of $y_i$ (labels $\\pm1$). A tie or
    $f(x_i) = 0$ counts as wrong only in the second case."""
    data = flow.data
    prediction = predict(model, data.X)
    if prediction.ndim == 2:
        labels = data.y if data.y.ndim == 1 else jnp.argmax(data.y, axis=1)
        right = jnp.argmax(prediction, axis=1) == labels
    elif data.classes is not None:
        raise ValueError(
            f"accuracy: the data have integer class labels but the model "
            f"{type(model).__name__} has one output; give it one output per class."
        )
    else:
        right = jnp.sign(prediction) == jnp.sign(data.y).astype(prediction.dtype)
    return jnp.mean(right.astype(prediction.dtype))


def neuron_norms(model: TwoLayerReLU, flow) -> Float[Array, " width"]:
    """$\\|(w_j, b_j)\\|$ per hidden neuron."""
    del flow
    sq = jnp.sum(model.W**2, axis=1)
    return jnp.sqrt(sq if model.b is None else sq + model.b**2)


def _balance(model: TwoLayerReLU | MLP):
    """Per hidden neuron: squared norms of its incoming weights (and bias) and of its
    outgoing weights."""
    if isinstance(model, MLP):
        return model.balance()
    incoming = jnp.sum(model.W**2, axis=1)
    if model.b is not None:
        incoming = incoming + model.b**2
    return incoming, model.v**2


class ConservedDrift(eqx.Module):
    r"""Relative drift of the conserved quantities, one per hidden neuron: for a
    `TwoLayerReLU` $c_j = v_j^2 - \|w_j\|^2 - b_j^2$, for an `MLP`
    $\|(w_j, b_j)\|^2 - \|\text{outgoing}_j\|^2$:

    $$\max_j |c_j(t) - c_j(0)| \,/\, \max_j \big(\|\text{in}_j\|^2 +
    \|\text{out}_j\|^2\big)(t).$$

    Exactly zero for the true flow; its size is the integration error in the units of
    the largest neuron (the error of a difference of squares computed to relative
    accuracy `rtol` is about `rtol` on this scale).

    **Arguments:**

    - `initial`: the model at $t_0$.
    """

    c0: Float[Array, " neurons"]

    def __init__(self, initial: TwoLayerReLU | MLP):
        self.c0 = initial.conserved()

    def __call__(self, model: TwoLayerReLU | MLP, flow) -> Float[Array, ""]:
        del flow
        incoming, outgoing = _balance(model)
        return jnp.max(jnp.abs(model.conserved() - self.c0)) / jnp.max(
            incoming + outgoing
        )


def layer_stable_ranks(model: MLP, flow) -> Float[Array, " layers"]:
    r"""$\|W_l\|_F^2 / \|W_l\|_2^2$ for each hidden layer's weight matrix of an
    `MLP`."""
    del flow
    return jnp.stack(
        [
            jnp.sum(W**2) / jnp.linalg.svd(W, compute_uv=False)[0] ** 2
            for W in model.weights
        ]
    )


def _cos(W: Float[Array, "width d"], x: Float[Array, " d"]) -> Float[Array, " width"]:
    norms = jnp.linalg.norm(W, axis=-1) * jnp.linalg.norm(x)
    safe = jnp.where(norms > 0, norms, 1.0)
    return jnp.where(norms > 0, (W @ x) / safe, 0.0)


def cos_plus(model: TwoLayerReLU, flow) -> Float[Array, " width"]:
    """$\\cos(w_j, x_+)$ per neuron, $x_+ = \\sum_{y_i>0} x_i$ (0 where $w_j = 0$)."""
    return _cos(model.W, flow.data.x_plus)


def cos_minus(model: TwoLayerReLU, flow) -> Float[Array, " width"]:
    """$\\cos(w_j, x_-)$ per neuron, $x_- = \\sum_{y_i<0} x_i$."""
    return _cos(model.W, flow.data.x_minus)


def _mean_neuron(model: TwoLayerReLU, sign: float) -> Float[Array, " d"]:
    mask = (jnp.sign(model.v) == sign)[:, None]
    count = jnp.sum(mask.astype(model.W.dtype))
    return jnp.sum(jnp.where(mask, model.W, 0.0), axis=0) / jnp.maximum(count, 1.0)


def align_plus(model: TwoLayerReLU, flow) -> Float[Array, ""]:
    """$\\cos(\\bar w_+, x_+)$ with $\\bar w_+$ the mean of $w_j$ over $v_j > 0$
    (Min et al., Fig. 2)."""
    return _cos(_mean_neuron(model, 1.0)[None], flow.data.x_plus)[0]


def align_minus(model: TwoLayerReLU, flow) -> Float[Array, ""]:
    """$\\cos(\\bar w_-, x_-)$ with $\\bar w_-$ the mean of $w_j$ over $v_j < 0$."""
    return _cos(_mean_neuron(model, -1.0)[None], flow.data.x_minus)[0]


def cos_own(model: TwoLayerReLU, flow) -> Float[Array, " width"]:
    """$\\cos(w_j, x_{\\operatorname{sign} v_j})$ per neuron: each neuron's alignment with
    the centre Min et al.'s Theorem 1 sends it to ($x_+$ for $v_j > 0$, $x_-$ for
    $v_j < 0$)."""
    data = flow.data
    return jnp.where(
        model.v > 0, _cos(model.W, data.x_plus), _cos(model.W, data.x_minus)
    )


def _descent_W(model: TwoLayerReLU, flow) -> Float[Array, "width d"]:
    return -flow.min_norm_gradient(model).W


def norm_change(model: TwoLayerReLU, flow) -> Float[Array, ""]:
    r"""$\sum_j 2\langle -\nabla_{w_j} L, w_j\rangle = \frac{d}{dt}\|W\|_F^2$: how fast the
    first layer grows (Min et al.'s two-phase diagnostic)."""
    return 2.0 * jnp.sum(_descent_W(model, flow) * model.W)


def direction_change(model: TwoLayerReLU, flow) -> Float[Array, ""]:
    r"""$\sum_j \|P_{w_j}(-\nabla_{w_j} L)\| / \|w_j\|$, $P_w = I - ww^\top/\|w\|^2$: the
    total angular speed of the neurons (Min et al.'s two-phase diagnostic; zero
    neurons count 0)."""
    g, W = _descent_W(model, flow), model.W
    sq = jnp.sum(W**2, axis=1)
    safe = jnp.where(sq > 0, sq, 1.0)
    tangent = g - (jnp.sum(g * W, axis=1) / safe)[:, None] * W
    speed = jnp.linalg.norm(tangent, axis=1) / jnp.sqrt(safe)
    return jnp.sum(jnp.where(sq > 0, speed, 0.0))


def frac_plus(model: TwoLayerReLU, flow) -> Float[Array, ""]:
    """Fraction of neurons in $S_+$: active exactly on the positive points."""
    return jnp.mean(cones(model, flow.data)[0].astype(float))


def frac_minus(model: TwoLayerReLU, flow) -> Float[Array, ""]:
    """Fraction of neurons in $S_-$: active exactly on the negative points."""
    return jnp.mean(cones(model, flow.data)[1].astype(float))


def frac_dead(model: TwoLayerReLU, flow) -> Float[Array, ""]:
    """Fraction of neurons in $S_{\\rm dead}$: active on no data point."""
    return jnp.mean(cones(model, flow.data)[2].astype(float))


def spectral_norm_sq(model: TwoLayerReLU, flow) -> Float[Array, ""]:
    """$\\|W\\|_2^2$, the squared largest singular value of $W$."""
    del flow
    return jnp.linalg.svd(model.W, compute_uv=False)[0] ** 2


def stable_rank(model: TwoLayerReLU, flow) -> Float[Array, ""]:
    """$\\|W\\|_F^2 / \\|W\\|_2^2$."""
    return jnp.sum(model.W**2) / spectral_norm_sq(model, flow)


def default_metrics(model, flow) -> dict:
    """The metrics `jaxflow.solve` records when given none: `loss` and `grad_norm` for
    any model; for a `TwoLayerReLU` also `neuron_norms`, `conserved_drift` (relative to
    `model`, the initial point), `cos_plus`, `cos_minus`, `align_plus`, `align_minus`,
    and, when `flow.data` is a `Dataset`, `frac_plus`, `frac_minus`, `frac_dead`, and
    `stable_rank`, `spectral_norm_sq`; for an `MLP`, `conserved_drift` and
    `layer_stable_ranks`; and `accuracy` when `flow.data` is a `Dataset` with integer
    class labels and the model has an output per class.

    Extend them with `default_metrics(net, flow) | {"mine": my_metric}`.
    """
    metrics = {"loss": loss, "grad_norm": grad_norm}
    data = flow.data
    if isinstance(data, Dataset) and data.classes is not None:
        if len(jax.eval_shape(lambda: predict(model, data.X)).shape) == 2:
            metrics["accuracy"] = accuracy
    if isinstance(model, MLP):
        metrics |= {
            "conserved_drift": ConservedDrift(model),
            "layer_stable_ranks": layer_stable_ranks,
        }
    if isinstance(model, TwoLayerReLU):
        metrics |= {
            "neuron_norms": neuron_norms,
            "conserved_drift": ConservedDrift(model),
            "stable_rank": stable_rank,
            "spectral_norm_sq": spectral_norm_sq,
        }
        if isinstance(flow.data, Dataset):
            metrics |= {
                "cos_plus": cos_plus,
                "cos_minus": cos_minus,
                "align_plus": align_plus,
                "align_minus": align_minus,
                "frac_plus": frac_plus,
                "frac_minus": frac_minus,
                "frac_dead": frac_dead,
            }
    return metrics


def magnitude(model: NeuronChain, flow) -> Float[Array, ""]:
    r"""$\|u\|$, the end-to-end vector's norm of a `NeuronChain`
    ($u = a_L \prod \sigma(a_l)\, w_1$; Lee, Sim and Ye's magnitude)."""
    del flow
    return jnp.linalg.norm(model.end_to_end())


class TeacherAngle(eqx.Module):
    r"""$\varphi = \pi - \theta$, with $\theta$ the angle between a `NeuronChain`'s
    end-to-end vector $u$ and a single-neuron teacher $v$ (Lee, Sim and Ye's angle:
    $\varphi \to \pi$ as the student aligns). Accurate near $\theta = 0$ (computed from
    chord lengths, not an arccos).

    **Arguments:**

    - `teacher`: a depth-1 `NeuronChain`, or `None` (default) for the teacher of the
        flow's `jaxflow.datasets.GaussianTeacher`.
    """

    teacher: NeuronChain | None = None

    def __call__(self, model: NeuronChain, flow) -> Float[Array, ""]:
        teacher = flow.data.teacher if self.teacher is None else self.teacher
        *_, theta = polar(model.end_to_end(), teacher.end_to_end())
        return jnp.pi - theta


teacher_angle = TeacherAngle()
