r"""The minimum-norm gradient flow of a one-hidden-layer ReLU network.

At a kink, where a pre-activation $z_{ij} = \langle w_j, x_i\rangle + b_j$ is zero, the
loss is not differentiable and $-\nabla L$ jumps. The flow is then the differential
inclusion $\dot\theta \in -\partial L(\theta)$ (Clarke subdifferential), and its
*slow* solution takes the element of least norm. For $f(x) = \sum_j v_j
\sigma(\langle u_j, \tilde x\rangle)$, $u_j = (w_j, b_j)$, $\tilde x = (x, 1)$, and
residuals $r_i = \partial L / \partial f(x_i)$, the subdifferential in $u_j$ is

$$\partial_{u_j} L = \Big\{\, g_j + \sum_{i \in K_j} s_i\, v_j r_i\, \tilde x_i
\;:\; s \in [0, 1]^{K_j} \Big\}, \qquad g_j = v_j \sum_{i:\, z_{ij} > 0} r_i\,\tilde x_i,$$

with $K_j$ the points on neuron $j$'s kink (any number of them), so the least-norm
element is one box-constrained least-squares problem per neuron (`_box`). On one surface with $s_i \in (0, 1)$
it is the Filippov sliding velocity: tangent to the surface, $\dot z_{ij} = 0$. When
$s_i$ reaches 0 or 1 the trajectory leaves the surface to the matching side. The
gradient in $v_j$ is single-valued since $\sigma(0) = 0$, and the conserved quantities
$v_j^2 - \|u_j\|^2$ stay conserved.

With $k$ outputs (`jaxflow.models.MLP` with one hidden ReLU layer and `out=k`) $v_j$
and $r_i$ are vectors, $v_j r_i$ becomes $\langle v_j, r_i\rangle$ (`_relu.couplings`)
and the conserved quantities $\|v_j\|^2 - \|u_j\|^2$; an output bias $c$ has the
single-valued gradient $\sum_i r_i$.

The flow is integrated piecewise: a `Pattern` fixes which pairs are active, inactive
or on a kink, and within a piece the vector field is the smooth continuation of that
piece (`field`), so the solver's error control never sees a jump. The pieces and the
switches between them are `_two_layer.MinNorm`; the neuron geometry is `_relu`.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from .._relu import (
    KINK_TOL,
    augment,
    couplings,
    hidden_layer,
    neurons,
    on_kink,
    outgoing,
    output_bias,
    pair_scale,
    with_neurons,
)
from .._roots import when
from ..losses import AbstractLoss
from ..models import TwoLayerReLU
from ._box import Box, Face, Factor, compact, solve


# A neuron's free pairs (`_box`) are linearly independent points, at most min(n, d + 1).
# Their basis, kept with each piece (width x slots x (d + 1) floats), is held under
# this many bytes: past it (a neuron sliding along more kinks at once than its slots
# hold) the solve ends with status `kink_overflow`. It binds only in high dimension
# (MNIST, width 1000: 5 slots a neuron).
FREE_BYTES = 2**25


# A step's crossings are worked on as a list of this many pairs where they fit, else
# of `crossings_listed`'s (at least this many; a step with more still is tried again,
# shorter: `MinNorm._retry`).
CROSSINGS = 1024


def crossings_listed(n: int, width: int) -> int:
    """How many crossings a step lists (`CROSSINGS`; at least two neurons' or two
    points' worth)."""
    return min(n * width, max(CROSSINGS, 2 * (n + width)))


def free_slots(n: int, d1: int, width: int, itemsize: int = 8) -> int:
    """How many pairs of a neuron may slide at once (`FREE_BYTES`)."""
    return max(1, min(n, d1, FREE_BYTES // (itemsize * width * d1)))


class ReLUProblem(eqx.Module):
    """What the field needs from the flow, in the layout it uses."""

    inputs: Float[Array, "n d1"]  # the augmented inputs (`_relu.augment`)
    norms: Float[Array, " n"]  # their norms, 1 for a zero input
    nonzero: Bool[Array, " n"]  # inputs with a kink: all but zero ones
    target: Float[Array, " n"]
    loss: AbstractLoss
    slots: int = eqx.field(static=True)  # free slots a neuron (`free_slots`)
    # Whether a neuron's free pairs may outgrow its slots (fewer than min(n, d + 1)).
    overflows: bool = eqx.field(static=True)
    crossings: int = eqx.field(static=True)  # crossings a step lists (`CROSSINGS`)

    def __init__(self, flow, model):
        W, b = hidden_layer(model)  # (shapes only: `model` may be abstract)
        self.inputs = augment(flow.data.X, b is not None)
        # A zero input (no bias) has z_ij = 0 for every neuron, always: no kink, no
        # crossing, no term in the gradient. Its norm is taken as 1 so that the
        # quantities divided by it stay finite (they are zero).
        norms = jnp.linalg.norm(self.inputs, axis=1)
        self.nonzero = norms > 0
        self.norms = jnp.where(self.nonzero, norms, 1.0)
        self.target = flow.data.y
        self.loss = flow.loss
        n, d1 = self.inputs.shape
        itemsize = jnp.dtype(self.inputs.dtype).itemsize
        width = W.shape[0]
        self.slots = free_slots(n, d1, width, itemsize)
        self.overflows = self.slots < min(n, d1)
        self.crossings = crossings_listed(n, width)

    def pair_scale(self, params: TwoLayerReLU) -> Float[Array, "n h"]:
        """$\\|u_j\\| \\|\\tilde x_i\\|$, the size of $z_{ij}$."""
        return pair_scale(self.norms, neurons(params))


class Pattern(eqx.Module):
    """The discrete state of a piece: which pairs are active, and which sit on a kink
    (any number a neuron; those are not `active`). `face` is where the box problem of
    the piece ended (`_box.Face`, free slots valid first), and `factor` its factor:
    the field's evaluations within the piece start from them."""

    active: Bool[Array, "n h"]
    kinked: Bool[Array, "n h"]
    face: Face
    factor: Factor
    held: Bool[Array, ""]  # some pair on a kink may not be free

    def refreshed(self, X: Float[Array, "n d1"]) -> "Pattern":
        """The pattern with the free slots of pairs no longer on a kink dropped (the
        rest valid first, and the factor recomputed where that changed them), and no
        such pair held at 1."""
        free = self.face.free
        h = free.shape[0]
        rows = jnp.where(free >= 0, free, 0)
        on = (free >= 0) & self.kinked[rows, jnp.arange(h)[:, None]]
        (free,) = compact(jnp.where(on, free, -1))
        valid = free >= 0
        factor = when(
            jnp.any(valid != self.factor.valid),
            lambda: Factor.of(X[jnp.where(valid, free, 0)], valid),
            self.factor,
        )
        face = Face(free, self.face.upper & self.kinked)
        count = jnp.sum(valid, axis=1)
        held = jnp.any(jnp.sum(self.kinked, axis=0) > count)
        return Pattern(self.active, self.kinked, face, factor, held)

    def onto_kinks(self, U: Float[Array, "h d1"]) -> Float[Array, "h d1"]:
        """The neurons `U` (rows) moved exactly onto the kinks of the free pairs (of
        a refreshed pattern): the least move that zeroes those pre-activations, and
        those of the points in their span."""
        return self.factor.project(U)[0]


def pattern_at(params: TwoLayerReLU, problem: ReLUProblem, tol: float) -> Pattern:
    """The pattern of a point: pairs with $|z_{ij}| \\le$ `tol` $\\|u_j\\|\\|x_i\\|$ are on
    a kink, the others active where $z_{ij} > 0$."""
    Z = problem.inputs @ neurons(params).T
    near = on_kink(Z, problem.pair_scale(params), tol) & problem.nonzero[:, None]
    h, f = Z.shape[1], problem.slots
    face = Face(jnp.full((h, f), -1, jnp.int32), jnp.zeros_like(near))
    held = jnp.any(near)
    return Pattern(
        (Z > 0) & ~near,
        near,
        face,
        Factor.empty(h, f, Z.dtype, problem.inputs.shape[1]),
        held,
    )


def _unsolved(G, pattern: Pattern) -> Box:
    """The box problem where no pair is on a kink: $w_j = b_j$."""
    h, f = pattern.face.free.shape
    n = pattern.kinked.shape[0]
    no = jnp.zeros(h, bool)
    return Box(
        direction=G,
        warm=G,
        s=jnp.zeros((h, f), G.dtype),
        face=Face(jnp.full((h, f), -1, jnp.int32), jnp.zeros((n, h), bool)),
        factor=Factor.empty(h, f, G.dtype, G.shape[1]),
        scale=jnp.zeros(h, G.dtype),
        overflow=no,
        converged=jnp.array(True),
        iterations=jnp.array(0),
    )


class Field(eqx.Module):
    """The smooth continuation of one piece's minimum-norm gradient, and its parts."""

    value: Float[Array, ""]  # the loss
    gradient: TwoLayerReLU  # the minimum-norm element of the subdifferential
    box: Box  # the box problem's solution: s of the pairs on a kink, its face


def predictions(params, hidden: Float[Array, "n h"]) -> Array:
    """The predictions $f(x_i)$ from the hidden activations: shape `(n,)` or `(n, k)`."""
    f = hidden @ outgoing(params)
    c = output_bias(params)
    return f if c is None else f + jnp.broadcast_to(c, f.shape)


def forward(params: TwoLayerReLU, pattern: Pattern, problem: ReLUProblem):
    """Pre-activations $z_{ij}$, hidden activations of the piece, the loss and the
    residuals $r_i = \\partial L / \\partial f(x_i)$."""
    Z = problem.inputs @ neurons(params).T
    hidden = jnp.where(pattern.active, Z, 0.0) + jnp.where(
        pattern.kinked, jax.nn.relu(Z), 0.0
    )
    value, r = jax.value_and_grad(problem.loss.of_predictions)(
        predictions(params, hidden), problem.target
    )
    return Z, hidden, value, r


# A solve calls the field about ten times (the stages, the step-size selection, the
# corrections, the metrics): jitted, it is traced and lowered once for all of them,
# which takes a third off tracing and lowering and a tenth off XLA's compilation.
@eqx.filter_jit
def field(
    params: TwoLayerReLU, pattern: Pattern, problem: ReLUProblem, search: bool = True
) -> Field:
    """The minimum-norm gradient of the piece `pattern` at `params`.

    Active pairs contribute $z_{ij}$ to the hidden layer even where $z_{ij} < 0$ (the
    continuation of the piece past its boundary, which the solver may sample inside a
    step that is then cut at the crossing); pairs on a kink contribute $\\sigma(z_{ij})$.
    With `search=False` the box problem is solved on the pattern's face only (the
    field of the piece with its free and held pairs fixed: a correction's response).
    """
    X = problem.inputs
    Z, hidden, value, r = forward(params, pattern, problem)
    # Column i of neuron j's box problem: the jump of its gradient across z_ij = 0.
    v = outgoing(params)
    C = couplings(v, r)
    if v.ndim == 1:  # (the order of operations of the scalar field since it landed)
        gU = v[:, None] * (jnp.where(pattern.active, r[:, None], 0.0).T @ X)
    else:
        gU = jnp.where(pattern.active, C, 0.0).T @ X
    gv = hidden.T @ r
    gc = None if output_bias(params) is None else jnp.sum(r, axis=0)
    box = when(
        jnp.any(pattern.kinked),
        lambda: solve(
            gU,
            X,
            C,
            pattern.kinked,
            problem.norms,
            pattern.face,
            pattern.factor,
            pattern.held,
            search,
        ),
        _unsolved(gU, pattern),
    )
    return Field(value, with_neurons(params, box.direction, gv, gc), box)


def min_norm_gradient(flow, model: TwoLayerReLU, tol: float = KINK_TOL) -> TwoLayerReLU:
    """The least-norm element of the Clarke subdifferential of the loss at `model`,
    counting pairs with $|z_{ij}| \\le$ `tol` $\\|u_j\\|\\|x_i\\|$ as on the kink."""
    params, static = eqx.partition(model, eqx.is_inexact_array)
    problem = ReLUProblem(flow, model)
    pattern = pattern_at(params, problem, tol)
    return eqx.combine(field(params, pattern, problem).gradient, static)
