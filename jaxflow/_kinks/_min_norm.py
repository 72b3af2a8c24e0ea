r"""The minimum-norm gradient flow of a one-hidden-layer ReLU network.

At a kink, where a pre-activation $z_{ij} = \langle w_j, x_i\rangle + b_j$ is zero, the
loss is not differentiable and $-\nabla L$ jumps. The flow is then the differential
inclusion $\dot\theta \in -\partial L(\theta)$ (Clarke subdifferential), and its
*slow* solution takes the element of least norm. For $f(x) = \sum_j v_j
\sigma(\langle u_j, \tilde x\rangle)$, $u_j = (w_j, b_j)$, $\tilde x = (x, 1)$, and
residuals $r_i = \partial L / \partial f(x_i)$, the subdifferential in $u_j$ is

$$\partial_{u_j} L = \Big\{\, g_j + \sum_{i \in K_j} s_i\, v_j r_i\, \tilde x_i
\;:\; s \in [0, 1]^{K_j} \Big\}, \qquad g_j = v_j \sum_{i:\, z_{ij} > 0} r_i\,\tilde x_i,$$

with $K_j$ the points on neuron $j$'s kink, so the least-norm element is one tiny
box-constrained least-squares problem per neuron. On one surface with $s_i \in (0, 1)$
it is the Filippov sliding velocity: tangent to the surface, $\dot z_{ij} = 0$. When
$s_i$ reaches 0 or 1 the trajectory leaves the surface to the matching side. The
gradient in $v_j$ is single-valued since $\sigma(0) = 0$, and the conserved quantities
$v_j^2 - \|u_j\|^2$ stay conserved.

The flow is integrated piecewise: a `Pattern` fixes which pairs are active, inactive
or on a kink, and within a piece the vector field is the smooth continuation of that
piece (`field`), so the solver's error control never sees a jump. The pieces and the
switches between them are `_kinks.MinNorm`; the neuron geometry is `_relu`.
"""

import functools
import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from .._relu import KINK_TOL, augment, neurons, on_kink, pair_scale, with_neurons
from .._roots import when
from ..losses import AbstractLoss
from ..models import TwoLayerReLU


# Most points a neuron can sit on the kink of at once (a pair beyond this ends the solve
# with status `kink_overflow`). One is generic; a neuron sliding along one or two kinks
# in high dimension meets more (MNIST 0 vs 1, n = 500: three at t = 300).
MAX_KINKS = 4  # >= 2


class ReLUProblem(eqx.Module):
    """What the field needs from the flow, in the layout it uses."""

    inputs: Float[Array, "n d1"]  # the augmented inputs (`_relu.augment`)
    norms: Float[Array, " n"]  # their norms, 1 for a zero input
    kinked: Bool[Array, " n"]  # inputs with a kink: all but zero ones
    target: Float[Array, " n"]
    loss: AbstractLoss

    def __init__(self, flow, model: TwoLayerReLU):
        self.inputs = augment(flow.data.X, model.b is not None)
        # A zero input (no bias) has z_ij = 0 for every neuron, always: no kink, no
        # crossing, no term in the gradient. Its norm is taken as 1 so that the
        # quantities divided by it stay finite (they are zero).
        norms = jnp.linalg.norm(self.inputs, axis=1)
        self.kinked = norms > 0
        self.norms = jnp.where(self.kinked, norms, 1.0)
        self.target = flow.data.y
        self.loss = flow.loss

    def pair_scale(self, params: TwoLayerReLU) -> Float[Array, "n h"]:
        """$\\|u_j\\| \\|\\tilde x_i\\|$, the size of $z_{ij}$."""
        return pair_scale(self.norms, neurons(params))


class Pattern(eqx.Module):
    """The discrete state of a piece: which pairs are active, and which sit on a kink.

    `slots[j]` lists the points on neuron `j`'s kink (-1 for an empty slot); those
    pairs are not `active`.
    """

    active: Bool[Array, "n h"]
    slots: Int[Array, "h k"]

    def on_kink(self) -> Bool[Array, "n h"]:
        return slot_values(self.slots, jnp.ones(self.slots.shape, bool), self.active)


def slot_values(slots: Int[Array, "h k"], values: Array, like: Array) -> Array:
    """Scatter per-slot `values` to an array shaped like `like` (n, h), zero elsewhere."""
    n, h = like.shape
    rows = jnp.where(slots >= 0, slots, n)
    cols = jnp.broadcast_to(jnp.arange(h)[:, None], slots.shape)
    return jnp.zeros((n, h), values.dtype).at[rows, cols].set(values, mode="drop")


def slots_of(on_kink: Bool[Array, "n h"]) -> tuple[Int[Array, "h k"], Bool[Array, ""]]:
    """The kink slots holding the pairs marked in `on_kink` (per neuron, its first
    `MAX_KINKS` marked points in increasing order), and whether some neuron has more
    than `MAX_KINKS` of them."""
    # One min per slot, each past the previous slot's point. (Not lax.top_k, a cumsum
    # or an argmax: on the CPU they cost several gradient evaluations, and this runs
    # every step.)
    marked = on_kink.T
    n = marked.shape[1]
    position = jnp.arange(n)[None, :]
    after = jnp.full((marked.shape[0], 1), -1)
    slots = []
    for _ in range(MAX_KINKS):
        after = jnp.min(jnp.where(marked & (position > after), position, n), axis=1)
        slots.append(jnp.where(after < n, after, -1))
        after = after[:, None]
    overflow = jnp.any(jnp.sum(marked, axis=1) > MAX_KINKS)
    return jnp.stack(slots, axis=1).astype(jnp.int32), overflow


def pattern_at(
    params: TwoLayerReLU, problem: ReLUProblem, tol: float
) -> tuple[Pattern, Bool[Array, ""]]:
    """The pattern of a point: pairs with $|z_{ij}| \\le$ `tol` $\\|u_j\\|\\|x_i\\|$ are on
    a kink, the others active where $z_{ij} > 0$. Also returns whether some neuron had
    more than `MAX_KINKS` pairs on a kink (the first ones are kept)."""
    Z = problem.inputs @ neurons(params).T
    near = on_kink(Z, problem.pair_scale(params), tol) & problem.kinked[:, None]
    slots, overflow = slots_of(near)
    return Pattern(active=(Z > 0) & ~near, slots=slots), overflow


def _faces(k: int) -> np.ndarray:
    """All ways to treat each of `k` slots in the box QP: 0 free, 1 at its lower, 2 at
    its upper bound; as columns, one row per slot."""
    return np.array(list(itertools.product((0, 1, 2), repeat=k)), np.int32).T


def _solve_spd(A: list[list[Array]], b: list[Array]) -> list[Array]:
    """Solve $A s = b$ for a small symmetric positive definite $A$ given entry by entry
    (`A[i][j]`, `b[i]`: arrays, one system per element), by Gaussian elimination
    without pivoting, written out in elementwise arithmetic."""
    k = len(b)
    A = [list(row) for row in A]
    b = list(b)
    for p in range(k):
        for i in range(p + 1, k):
            factor = A[i][p] / A[p][p]
            for j in range(p + 1, k):
                A[i][j] = A[i][j] - factor * A[p][j]
            b[i] = b[i] - factor * b[p]
    s = [None] * k
    for i in reversed(range(k)):
        rest = sum((A[i][j] * s[j] for j in range(i + 1, k)), jnp.zeros_like(b[i]))
        s[i] = (b[i] - rest) / A[i][i]
    return s


def _box_lsq(
    g: Float[Array, "*h d1"], M: Float[Array, "*h k d1"], valid: Bool[Array, "*h k"]
) -> Float[Array, "*h k"]:
    """$\\arg\\min_{s \\in [0,1]^k} \\|g + M^\\top s\\|^2$, exactly, by checking the
    KKT conditions on all $3^k$ faces of the box ($k$ = `MAX_KINKS`); over any leading
    (neuron) axes.

    On a face, the free coordinates solve the normal equations with the others at
    their bounds. Everything is elementwise arithmetic over (neurons, faces): one QP
    per neuron as a batch of tiny `linalg.solve`s and matrix products cost 60 times the
    rest of the field on the CPU at width 1000.
    """
    k = M.shape[-2]
    M = jnp.where(valid[..., None], M, 0.0)
    H = [[jnp.sum(M[..., i, :] * M[..., j, :], -1) for j in range(k)] for i in range(k)]
    q = [jnp.sum(M[..., i, :] * g, -1) for i in range(k)]
    size = functools.reduce(
        jnp.maximum, [H[i][i] for i in range(k)]
    ) + functools.reduce(jnp.maximum, [jnp.abs(x) for x in q])
    size = jnp.where(size > 0, size, 1.0)
    # Empty slots, or a singular H (a point whose residual is 0), stay well posed.
    for i in range(k):
        H[i][i] = H[i][i] + jnp.where(valid[..., i], 1e-14 * size, 1.0)
    # Over faces: a trailing axis.
    H = [[x[..., None] for x in row] for row in H]
    q = [x[..., None] for x in q]
    size = size[..., None]
    cases = _faces(k).reshape(k, *(1,) * (valid.ndim - 1), -1)  # (k, 1, ..., 1, 3^k)
    free = [cases[i] == 0 for i in range(k)]
    bound = [np.where(cases[i] == 2, 1.0, 0.0).astype(g.dtype) for i in range(k)]
    # The free coordinates' normal equations; a fixed one's row is s_i = its bound.
    A = [
        [
            jnp.where(free[i] & free[j], H[i][j], 1.0 if i == j else 0.0)
            for j in range(k)
        ]
        for i in range(k)
    ]
    b = [
        jnp.where(
            free[i],
            -(
                q[i]
                + sum(jnp.where(free[j], 0.0, H[i][j] * bound[j]) for j in range(k))
            ),
            bound[i],
        )
        for i in range(k)
    ]
    s = _solve_spd(A, b)
    slope = [q[i] + sum(H[i][j] * s[j] for j in range(k)) for i in range(k)]

    bad = 0.0
    for i in range(k):
        outside = jnp.maximum(-s[i], 0) + jnp.maximum(s[i] - 1, 0)
        wrong_way = jnp.where(
            cases[i] == 1, jnp.maximum(-slope[i], 0), jnp.maximum(slope[i], 0)
        )
        bad = bad + jnp.where(free[i], outside, wrong_way / size)
    objective = sum(s[i] * (0.5 * slope[i] + 0.5 * q[i]) for i in range(k))
    feasible = bad <= 1e-10
    best = jnp.where(
        jnp.any(feasible, axis=-1),
        jnp.argmin(jnp.where(feasible, objective, jnp.inf), axis=-1),
        jnp.argmin(bad, axis=-1),
    )[..., None]
    s = jnp.concatenate([jnp.take_along_axis(x, best, axis=-1) for x in s], axis=-1)
    return jnp.where(valid, jnp.clip(s, 0.0, 1.0), 0.0)


class Field(eqx.Module):
    """The smooth continuation of one piece's minimum-norm gradient, and its parts."""

    value: Float[Array, ""]  # the loss
    gradient: TwoLayerReLU  # the minimum-norm element of the subdifferential
    multipliers: Float[Array, "h k"]  # s for each kink slot, in [0, 1]


def forward(params: TwoLayerReLU, pattern: Pattern, problem: ReLUProblem):
    """Pre-activations $z_{ij}$, hidden activations of the piece, the loss and the
    residuals $r_i = \\partial L / \\partial f(x_i)$."""
    Z = problem.inputs @ neurons(params).T
    hidden = jnp.where(pattern.active, Z, 0.0) + jnp.where(
        pattern.on_kink(), jax.nn.relu(Z), 0.0
    )
    value, r = jax.value_and_grad(problem.loss.of_predictions)(
        hidden @ params.v, problem.target
    )
    return Z, hidden, value, r


# A solve calls the field about ten times (the stages, the step-size selection, the
# corrections, the metrics): jitted, it is traced and lowered once for all of them,
# which takes a third off tracing and lowering and a tenth off XLA's compilation.
@eqx.filter_jit
def field(params: TwoLayerReLU, pattern: Pattern, problem: ReLUProblem) -> Field:
    """The minimum-norm gradient of the piece `pattern` at `params`.

    Active pairs contribute $z_{ij}$ to the hidden layer even where $z_{ij} < 0$ (the
    continuation of the piece past its boundary, which the solver may sample inside a
    step that is then cut at the crossing); pairs on a kink contribute $\\sigma(z_{ij})$.
    """
    X, v = problem.inputs, params.v
    Z, hidden, value, r = forward(params, pattern, problem)
    gU = v[:, None] * (jnp.where(pattern.active, r[:, None], 0.0).T @ X)
    gv = hidden.T @ r

    valid = pattern.slots >= 0
    index = jnp.where(valid, pattern.slots, 0)
    # Column i of neuron j's QP: the jump of its gradient across z_ij = 0.
    M = jnp.where(valid, v[:, None] * r[index], 0.0)[..., None] * X[index]

    def on_kinks(gU):
        # Slots fill in order, and nearly always a neuron has at most two points on
        # its kink: the 9-face QP on the first two slots, the 3^MAX_KINKS-face one
        # only when some neuron has more (always solving the large one slows a solve
        # severalfold).
        two = _box_lsq(gU, M[:, :2], valid[:, :2])
        s = jnp.concatenate(
            [two, jnp.zeros((two.shape[0], MAX_KINKS - 2), two.dtype)], 1
        )
        s = when(jnp.any(valid[:, 2:]), lambda: _box_lsq(gU, M, valid), s)
        return gU + jnp.sum(s[..., None] * M, axis=1), s

    gU, s = when(
        jnp.any(valid), lambda: on_kinks(gU), (gU, jnp.zeros(valid.shape, gU.dtype))
    )
    return Field(value, with_neurons(params, gU, gv), s)


def min_norm_gradient(flow, model: TwoLayerReLU, tol: float = KINK_TOL) -> TwoLayerReLU:
    """The least-norm element of the Clarke subdifferential of the loss at `model`,
    counting pairs with $|z_{ij}| \\le$ `tol` $\\|u_j\\|\\|x_i\\|$ as on the kink."""
    params, static = eqx.partition(model, eqx.is_inexact_array)
    problem = ReLUProblem(flow, model)
    pattern, _ = pattern_at(params, problem, tol)
    return eqx.combine(field(params, pattern, problem).gradient, static)
