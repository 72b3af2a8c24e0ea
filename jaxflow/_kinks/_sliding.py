r"""Filippov sliding through the ReLU kinks of any network (`kinks="min-norm"` for a
model that is not a `TwoLayerReLU`).

The kinks are the sites of `_gates`: every pre-activation $z_k(\theta)$ fed to
`jax.nn.relu` or `jax.nn.leaky_relu` in the loss. A piece (`Pattern`) fixes each one's
gate: 1 (active), 0 (inactive), or, for the pairs on a kink, a generalized derivative
$s_k \in [0, 1]$. Within a piece the field is

$$\dot\theta = -\nabla_\theta L(\theta;\, g(s)),$$

smooth in $\theta$. On the sliding set $K$ the $s$ are the **equivalent control**: the
solution in the box of

$$F_k(s) = \dot z_k = \nabla_\theta z_k(\theta; s) \cdot \big(-\nabla_\theta
L(\theta; s)\big) = 0, \qquad k \in K,$$

so that the velocity is tangent to every sliding surface (Filippov). $F$ is affine in
each $s_k$ (multilinear when kinks of one sample sit in several layers). With the box
it is a mixed complementarity problem: a pair held at a bound leaves its kink to that
bound's side ($s_k = 0$ needs $\dot z_k \le 0$, $s_k = 1$ needs $\dot z_k \ge 0$), a
free one slides ($\dot z_k = 0$). At a switch it is solved through its
Fischer-Burmeister equation by a damped Newton method, with the pairs whose surface
repels (a rate growing with its own $s$: no stable sliding) pinned at a bound
consistent with their rate (`Sliding._control`); within a piece the bounds stay and
Newton on the free $s$ is warm-started from the piece's. No solution in the box (off by more than `_RESIDUAL` in $s$, at a rate that
would carry the pair out of its kink's band within the solve's time span) stops the
solve with status `sliding_unresolved`. For a `TwoLayerReLU` the equivalent control is the
minimum-norm element of the Clarke subdifferential (`_min_norm`), which `kinks=
"min-norm"` uses there: it is faster (`benchmarks/kinks.py --deep`).

Every crossing is located on the step's dense output (Illinois root finding on the
pre-activations) and the step is cut there; at the crossing the pair's $s$ decides
whether it slides (interior) or passes (a bound). Sliding pairs are put back on their
surface after every step (one Gauss-Newton projection along $\nabla z_K$, which keeps
the conserved quantities of a homogeneous network to second order): unlike a
two-layer net's, a deep net's $z_k$ is not linear in $\theta$, so Runge-Kutta steps
do not keep it at zero by themselves.
"""

from typing import ClassVar

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Bool, Float, Int, PyTree

from .._relu import KINK_TOL
from .._roots import first_root, when
from . import _gates
from ._pieces import AbstractPieces, Cut, Start


# Most pre-activations on a kink at once (more end the solve with `kink_overflow`).
MAX_SLIDING = 64
_FREE, _LOWER, _UPPER = 0, 1, 2
# At a switch (bounds re-decided): at most this many iterations, to this residual (in
# units of s: |dz/dt| over |d(dz/dt)/ds|).
_CONTROL_ITERS = 400
_CONTROL_TOL = 1e-12
_CONTROL_ROUNDS = 8
# The work counted in `num_kink_evals`, in gradients: the rates (a gradient and a
# forward-mode pass for dz/dt) or one Jacobian column of theirs; a forward pass.
_RATES = 2
_PASS = 1 / 3
# A residual above this (s off by more than this) leaves the control unresolved;
# below it, the projection keeps the pair on its kink.
_RESIDUAL = 1e-3


def _fischer(a, b):
    """The Fischer-Burmeister function: zero iff a >= 0, b >= 0 and ab = 0 (its
    derivative at the origin taken as (1, 1), an element of the generalized one)."""
    q = a**2 + b**2
    positive = q > 0
    return a + b - jnp.where(positive, jnp.sqrt(jnp.where(positive, q, 1.0)), 0.0)


def full_of(values, slots, k, fill):
    """Per-slot `values` scattered to the `k` pre-activations, `fill` elsewhere."""
    return (
        jnp.full(k, fill, values.dtype)
        .at[jnp.where(slots >= 0, slots, k)]
        .set(values, mode="drop")
    )


class Pattern(eqx.Module):
    """The discrete state of a piece, over the flat pre-activations (`_gates`)."""

    active: Bool[Array, " k"]  # gate 1 (pairs on a kink: False)
    slots: Int[Array, " m"]  # the pre-activations on a kink, -1 for an empty slot
    s: Float[Array, " m"]  # their generalized derivatives (Newton's start)
    bound: Int[Array, " m"]  # _FREE, or held at _LOWER (0) / _UPPER (1)

    def valid(self):
        return self.slots >= 0

    def on_kink(self) -> Bool[Array, " k"]:
        return full_of(self.valid(), self.slots, self.active.shape[0], False)

    def gates(self, s=None) -> Float[Array, " k"]:
        """Per pre-activation: 1 active, 0 inactive, `s` (default `self.s`) on a
        kink."""
        s = self.s if s is None else s
        on_kink = full_of(s, self.slots, self.active.shape[0], jnp.nan)
        return jnp.where(self.on_kink(), on_kink, self.active.astype(s.dtype))


def _gradients(passes):
    """Forward passes in gradients (`_PASS` each), rounded up."""
    return jnp.ceil(_PASS * jnp.asarray(passes)).astype(int)


def _jacobian(fn, x: Float[Array, " m"], count) -> tuple[Array, Array]:
    """`fn(x)` (a vector) and its Jacobian, by forward-mode columns over the first
    `count` entries of `x` only: the occupied slots, which come first (the other
    columns are zero). One evaluation of `fn` and `count` of its linearization, where
    `jax.jacfwd` would take one per slot."""
    f, linear = jax.linearize(fn, x)
    basis = jnp.eye(x.shape[0], dtype=x.dtype)

    def column(j, J):
        return J.at[:, j].set(linear(basis[j]))

    J = jnp.zeros(f.shape + x.shape, f.dtype)
    return f, jax.lax.fori_loop(0, count, column, J)


class _Chord(eqx.Module):
    """The Newton correction (least squares) on the `free` slots with the Jacobian
    `J` held, zero on the others: `correction(f)` for rates `f`."""

    J: Float[Array, "m m"]
    free: Bool[Array, " m"]
    factor: tuple[Array, Array]

    def __init__(self, J: Float[Array, "m m"], free: Bool[Array, " m"]):
        J = jnp.where(free[:, None] & free[None, :], J, 0.0)
        # A whisper of regularisation: a pair whose rate does not depend on its s (a
        # zero residual) keeps its s.
        size = jnp.max(jnp.abs(J)) + jnp.finfo(J.dtype).tiny
        eye = jnp.eye(free.shape[0], dtype=J.dtype)
        JtJ = J.T @ J + (1e-24 * size**2 + jnp.where(free, 0.0, 1.0))[:, None] * eye
        self.J, self.free = J, free
        self.factor = jax.scipy.linalg.lu_factor(JtJ)

    def __call__(self, f: Float[Array, " m"]) -> Float[Array, " m"]:
        free = self.free
        delta = jax.scipy.linalg.lu_solve(
            self.factor, -(self.J.T @ jnp.where(free, f, 0.0))
        )
        return jnp.where(free, delta, 0.0)


def _moved(s: Float[Array, " m"], delta: Float[Array, " m"]) -> Float[Array, " m"]:
    return jnp.clip(s + delta, 0.0, 1.0)


def _rows(pull, count, m: int, x: Float[Array, " p"]) -> Float[Array, "m p"]:
    """The Jacobian of a function of `x` with `m` outputs, from its pullback `pull`,
    over the first `count` outputs only (the occupied slots, which come first; the
    other rows are zero): a gradient's worth per row."""
    basis = jnp.eye(m, dtype=x.dtype)
    return jax.lax.fori_loop(
        0,
        count,
        lambda i, J: J.at[i].set(pull(basis[i])[0]),
        jnp.zeros((m, x.shape[0]), x.dtype),
    )


def _slots(on: Bool[Array, " k"]) -> tuple[Int[Array, " m"], Bool[Array, ""]]:
    (index,) = jnp.nonzero(on, size=MAX_SLIDING, fill_value=-1)
    return index.astype(jnp.int32), jnp.sum(on) > MAX_SLIDING


def supports(flow, model) -> bool:
    """Whether the loss of `model` has ReLU sites the gates reach (`_gates`)."""
    params, static = eqx.partition(model, eqx.is_inexact_array)
    try:
        shapes = _gates.sizes(_loss_fn(flow, static), params, flow.data)
    except _gates.Unsupported:
        return False
    return _gates.count(shapes) > 0


def _loss_fn(flow, static):
    return lambda p, data: flow.loss(eqx.combine(p, static), data)


@eqx.filter_custom_jvp
def _implicit(y, *, s, rates, correction, count, inside):
    r"""The control `s` of a piece at `y`, with the derivative of its chord step
    (`Sliding._free`), the implicit function's of $\dot z_{free}(y, s) = 0$ at the
    step's start: $-J^{+} \partial_y \dot z$ (`_Chord`), its rows (`rates`, $\dot z$
    at the slots as a function of `y`) by reverse mode over the `count` occupied slots;
    zero where the box clipped `s` (not `inside`)."""
    del y, rates, correction, count, inside
    return s


@_implicit.def_jvp
def _implicit_jvp(primals, tangents, *, s, rates, correction, count, inside):
    (y,), (dy,) = primals, tangents
    if dy is None:
        return s, jnp.zeros_like(s)
    flat, unravel = ravel_pytree(y)
    _, pull = jax.vjp(lambda x: rates(unravel(x)), flat)
    rows = _rows(pull, count, s.shape[0], flat)
    return s, jnp.where(inside, correction(rows @ ravel_pytree(dy)[0]), 0.0)


class Sliding(AbstractPieces):
    """Pieces of fixed gates, switched at located crossings, with Filippov sliding by
    the equivalent control (module docstring)."""

    flow: eqx.Module
    static: PyTree
    # t1 - t0 and the tolerances: a control that cannot matter over it is resolved.
    horizon: Float[Array, ""]
    rtol: Float[Array, ""]
    atol: Float[Array, ""]
    shapes: tuple = eqx.field(static=True)
    counts: ClassVar[tuple[str, ...]] = (
        "num_restarts",
        "num_kink_events",
        "num_crossings",
        "num_slides",
        "num_exits",
        "num_corrections",
        "num_kink_evals",
    )

    def __init__(self, flow, params, static, horizon=jnp.inf, rtol=0.0, atol=0.0):
        self.flow = flow
        self.static = static
        self.horizon, self.rtol, self.atol = (
            jnp.asarray(x) for x in (horizon, rtol, atol)
        )
        self.shapes = _gates.sizes(_loss_fn(flow, static), params, flow.data)

    # -- the network with gates ------------------------------------------------------

    def _run(self, y, gates):
        return _gates.gated(_loss_fn(self.flow, self.static), y, self.flow.data, gates)

    def _scale(self, z):
        return KINK_TOL * _gates.site_scales(z, self.shapes)

    def _rates(self, y, pattern: Pattern, s):
        """The field $-\\nabla L$ and $\\dot z$ at the slots, with gates `s` there."""
        gates = pattern.gates(s)
        index = jnp.where(pattern.valid(), pattern.slots, 0)
        grad = jax.grad(lambda p: self._run(p, gates)[0])(y)
        velocity = jax.tree.map(jnp.negative, grad)
        _, zdot = jax.jvp(lambda p: self._run(p, gates)[1][index], (y,), (velocity,))
        return velocity, jnp.where(pattern.valid(), zdot, 0.0)

    def _linearized(self, y, pattern: Pattern, s):
        """$\\dot z$ at the slots and its Jacobian in `s` (`_jacobian`)."""
        count = jnp.sum(pattern.valid())
        return _jacobian(lambda s: self._rates(y, pattern, s)[1], s, count)

    def _free(self, y, pattern: Pattern):
        """Within a piece: Newton (least squares, from the piece's `s`) on the free
        slots, the held ones at their bounds, then a second step with the same
        Jacobian (a chord step). $\\dot z$ is affine in each $s_k$, so where no
        sample has kinks in two layers at once the first step is exact; otherwise
        (rates multilinear in $s$) the error after the two steps is the cube of the
        piece's `s`'s, which is of the order of the step. Cost: the rates, their
        Jacobian over the occupied slots (`_jacobian`) and the rates again.

        Its derivative in `y` (implicit solvers take the field's Jacobian) is the
        chord step's, the implicit function's at the step's start, $-J^{+}
        \\partial_y \\dot z$: the rows $\\partial_y \\dot z_k$ of the occupied slots
        by reverse mode, once for all the tangents (`jax.jacfwd` of the field then
        costs a gradient's Jacobian and a few rows, not a Jacobian of the rates; the
        rows at the step's end instead, a point a rounding-sized rate apart near a
        minimum, stalled Kvaerno5 on a deep net)."""
        free = pattern.valid() & (pattern.bound == _FREE)
        x = jax.lax.stop_gradient(y)
        f0, J = self._linearized(x, pattern, pattern.s)
        correction = _Chord(J, free)
        s1 = _moved(pattern.s, correction(f0))
        raw = s1 + correction(self._rates(x, pattern, s1)[1])
        s = jnp.clip(raw, 0.0, 1.0)
        count = jnp.sum(pattern.valid())
        # The chord step's derivative: its rates' rows at its start.
        rates = eqx.Partial(self._slot_rates, pattern, s1)
        # Where the box clips it, s does not move with y.
        inside = (raw > 0.0) & (raw < 1.0)
        return _implicit(
            y, s=s, rates=rates, correction=correction, count=count, inside=inside
        )

    def _slot_rates(self, pattern: Pattern, s, y):
        return self._rates(y, pattern, s)[1]

    def _control(self, y, pattern: Pattern):
        """At a switch, the equivalent control with its bounds decided: `(s, bound,
        resolved)`.

        The box problem is a mixed complementarity problem in the rates $G_k =
        -\\dot z_k / |\\partial \\dot z_k / \\partial s_k|$: $s_k = 0 \\Rightarrow
        G_k \\ge 0$ (the pair leaves to the inactive side), $s_k = 1 \\Rightarrow G_k
        \\le 0$, and $G_k = 0$ in between.

        - A surface that attracts ($G_k$ increasing in $s_k$) takes part through its
          Fischer-Burmeister equation $\\phi(s_k, -\\phi(1 - s_k, -G_k)) = 0$, solved
          by Levenberg-Marquardt with an Armijo line search on
          $\\tfrac12\\|\\phi\\|^2$ from the piece's `s` (quadratic near the root).
        - A surface that repels ($\\dot z_k$ growing with $s_k$) has no stable
          sliding, and at least one consistent bound whatever the others do: since
          $\\dot z_k(1) > \\dot z_k(0)$, either $\\dot z_k(0) \\le 0$ (held at 0) or
          $\\dot z_k(1) > 0$ (held at 1). Such pairs are pinned at a bound (the
          piece's, else the side their rate points to), the others solved, and a
          pinned pair whose bound has become inconsistent is moved to the other,
          until none is. (Left in the Fischer-Burmeister system, repelling pairs make
          it non-monotone and trap Newton at local minima of the merit.)"""
        valid = pattern.valid()
        count = jnp.sum(valid)
        dtype = pattern.s.dtype
        tiny = jnp.finfo(dtype).tiny
        eye = jnp.eye(valid.shape[0], dtype=dtype)
        s0 = jnp.where(valid, pattern.s, 0.5)
        f0, J0 = self._linearized(y, pattern, s0)
        slope = jnp.abs(jnp.diagonal(J0))
        slope = slope + 1e-6 * jnp.max(slope) + tiny
        _, z = self._run(y, pattern.gates(s0))
        band = self._scale(z)[jnp.where(valid, pattern.slots, 0)]

        def complementarity(s):
            G = -self._rates(y, pattern, s)[1] / slope
            return jnp.where(valid, _fischer(s, -_fischer(1.0 - s, -G)), 0.0), G

        def residual(s, pinned, up):  # the pinned pairs at their bound
            phi, G = complementarity(s)
            phi = jnp.where(pinned, s - up.astype(dtype), phi)
            return phi, (phi, G)

        def unsolved(carry):
            phi, it = carry[1], carry[-1]
            return (it < _CONTROL_ITERS) & (jnp.max(jnp.abs(phi)) > _CONTROL_TOL)

        def iteration(carry):
            s, _, pinned, up, work, it = carry
            phi, Jphi = _jacobian(lambda s: residual(s, pinned, up)[0], s, count)
            psi = 0.5 * phi @ phi
            gradient = Jphi.T @ phi
            damping = phi @ phi + jnp.where(valid, tiny, 1.0)
            step = jnp.linalg.solve(Jphi.T @ Jphi + damping[:, None] * eye, -gradient)
            descent = gradient @ step  # < 0

            def longer(c):  # Armijo backtracking
                alpha, phi_new = c
                return (0.5 * phi_new @ phi_new > psi + 1e-4 * alpha * descent) & (
                    alpha > 1e-6
                )

            def halve(c):
                alpha = 0.5 * c[0]
                return alpha, residual(s + alpha * step, pinned, up)[0]

            first = residual(s + step, pinned, up)[0]
            alpha, phi = jax.lax.while_loop(
                longer, halve, (jnp.array(1.0, dtype), first)
            )
            # The Jacobian, then the rates at each trial point of the line search.
            trials = 1 + jnp.round(-jnp.log2(alpha)).astype(work.dtype)
            work = work + _RATES * (1 + count + trials)
            return s + alpha * step, phi, pinned, up, work, it + 1

        def unresolved(s):
            # Off by more than _RESIDUAL in s, at a rate that would carry the pair
            # out of its kink's band within the solve's time span (at a minimum of
            # zero loss the rates are rounding noise, and any s will do).
            phi, G = complementarity(s)
            return (
                valid
                & (jnp.abs(phi) > _RESIDUAL)
                & (jnp.abs(G) * slope * self.horizon > band)
            )

        def attempt(carry):
            s, bad, rounds, work = carry
            # The first attempt starts from s0, whose rates are known.
            f, J = when(rounds > 0, lambda: self._linearized(y, pattern, s), (f0, J0))
            diagonal = jnp.diagonal(J)
            repels = valid & (diagonal > 0)
            # A repelling pair keeps its side where its rate there allows it.
            at_zero = f - diagonal * s
            up = jnp.where(s >= 0.5, at_zero + diagonal >= 0, at_zero > 0)
            # After a failed attempt, the unresolved attracting pairs restart from
            # fixed pseudo-random points of the box (the same for every seed).
            key = jax.random.fold_in(jax.random.key(0), rounds)
            scattered = jax.random.uniform(key, s.shape, dtype)
            s = jnp.where(bad & (rounds > 0), scattered, s)
            s = jnp.where(repels, up.astype(dtype), s)
            # The rates and their Jacobian (after the first attempt), the rates at the
            # start and at the end.
            work = work + _RATES * (jnp.where(rounds > 0, 1 + count, 0) + 2)
            start = (s, residual(s, repels, up)[0], repels, up, work, 0)
            s, _, _, _, work, _ = jax.lax.while_loop(unsolved, iteration, start)
            return s, unresolved(s), rounds + 1, work

        def retry(carry):
            return jnp.any(carry[1]) & (carry[2] < _CONTROL_ROUNDS)

        # Within a piece the control is usually where one Newton step from the
        # piece's s, with its bounds, puts it (exactly, for rates affine in s): if
        # that is a solution, with no sliding pair repelling, it is the control.
        free = valid & (pattern.bound == _FREE)
        s1 = _moved(s0, _Chord(J0, free)(f0))
        quick = ~jnp.any(free & (jnp.diagonal(J0) > 0)) & (
            jnp.max(jnp.abs(complementarity(s1)[0])) <= _CONTROL_TOL
        )
        # The rates and their Jacobian at s0, a forward pass (the band), the rates at
        # s1.
        work = _RATES * (2 + count) + _gradients(1)
        s, bad, _, work = jax.lax.while_loop(
            retry, attempt, (jnp.where(quick, s1, s0), valid & ~quick, 0, work)
        )

        # Nor does it matter where the flow is at rest to the solve's tolerance: its
        # whole motion over the time span is below it, whatever the s (only asked
        # where some pair is unresolved: not after the quick step).
        def moves():
            velocity = self._rates(y, pattern, s)[0]
            return jnp.max(jnp.abs(ravel_pytree(velocity)[0]))

        unsettled = jnp.any(bad)
        moved = when(unsettled, moves, jnp.zeros((), dtype))
        work = work + jnp.where(unsettled, _RATES, 0)
        size = jnp.max(jnp.abs(ravel_pytree(y)[0]))
        bad = bad & (moved * self.horizon > self.atol + self.rtol * size)
        s = jnp.clip(s, 0.0, 1.0)
        # At a bound (to within the rounding of the solve) a pair is held there: it
        # leaves to that side, or stays at rest (G = 0, a neuron at rest on a data
        # point's kink) with that side's gate.
        edge = jnp.sqrt(_CONTROL_TOL)
        bound = jnp.where(
            valid & (s <= edge),
            _LOWER,
            jnp.where(valid & (s >= 1 - edge), _UPPER, _FREE),
        ).astype(pattern.bound.dtype)
        s = jnp.where(bound == _LOWER, 0.0, jnp.where(bound == _UPPER, 1.0, s))
        return s, bound, ~jnp.any(bad), work

    def _field(self, y, pattern: Pattern):
        s = when(jnp.any(pattern.valid()), lambda: self._free(y, pattern), pattern.s)
        grad = jax.grad(lambda p: self._run(p, pattern.gates(s))[0])(y)
        return jax.tree.map(jnp.negative, grad)

    def term(self) -> dfx.ODETerm:
        return dfx.ODETerm(lambda t, y, pattern: self._field(y, pattern))

    def field_cost(self, pattern: Pattern):
        # `_free`: the rates, their Jacobian over the occupied slots, the rates again.
        count = jnp.sum(pattern.valid())
        return jnp.where(count > 0, _RATES * (2 + count), 0)

    # -- switching -------------------------------------------------------------------

    def _project(self, y, pattern: Pattern, hold: Bool[Array, " m"]):
        """`y` moved (one Gauss-Newton step along $\\nabla z$) so that the slots
        `hold` have $z = 0$."""
        gates = pattern.gates()
        index = jnp.where(hold, pattern.slots, 0)
        flat, unravel = ravel_pytree(y)

        def z(x):
            return jnp.where(hold, self._run(unravel(x), gates)[1][index], 0.0)

        values, pull = jax.vjp(z, flat)
        count = jnp.sum(pattern.valid())
        J = _rows(pull, count, hold.shape[0], flat)
        JJ = J @ J.T
        size = jnp.max(jnp.abs(jnp.diagonal(JJ))) + jnp.finfo(flat.dtype).tiny
        JJ = JJ + jnp.diag(jnp.where(hold, 1e-24 * size, 1.0))
        moved = unravel(flat - J.T @ jnp.linalg.solve(JJ, values))
        return moved, _gradients(1) + count

    def _settle(self, y, pattern: Pattern, new, came_active, keep):
        """With the pairs `new` (on their kink; `came_active`: the side they came
        from, or None at the start) added to the slots: the control decides which
        slide, pairs at a bound whose |z| has left the release band (or new ones sent
        on across) leave, and the sliding ones are put back on their surface."""
        k = pattern.active.shape[0]
        on = pattern.on_kink() | new
        s_full = full_of(pattern.s, pattern.slots, k, 0.5)
        bound_full = full_of(pattern.bound, pattern.slots, k, _FREE)
        s_full = jnp.where(new, 0.5, s_full)
        bound_full = jnp.where(new, _FREE, bound_full)
        slots, overflow = _slots(on)
        index = jnp.where(slots >= 0, slots, 0)
        trial = Pattern(pattern.active & ~on, slots, s_full[index], bound_full[index])
        s, bound, ok, work = when(
            jnp.any(trial.valid()),
            lambda: self._control(y, trial),
            (trial.s, trial.bound, jnp.array(True), jnp.array(0)),
        )
        valid = trial.valid()
        _, z = self._run(y, trial.gates(s))
        band = self._scale(z)
        zk, bk = z[index], band[index]
        upper = bound == _UPPER
        held = valid & (bound != _FREE)
        left = held & (jnp.abs(zk) > bk) & ((zk > 0) == upper)
        is_new = valid & new[index]
        if came_active is None:  # at the start: a pair at a bound leaves at once
            across = is_new & held
        else:  # a new pair at the bound of the side it came from slides (tangency)
            across = is_new & held & (upper != came_active[index])
        leave = left | across
        gone = jnp.zeros(k, bool).at[jnp.where(leave, slots, k)].set(True, mode="drop")
        up = (
            jnp.zeros(k, bool)
            .at[jnp.where(leave & upper, slots, k)]
            .set(True, mode="drop")
        )
        slots2, _ = _slots(on & ~gone)
        # Carry s and the bounds over to the remaining slots.
        s_full = full_of(s, slots, k, 0.5)
        bound_full = full_of(bound, slots, k, _FREE)
        index2 = jnp.where(slots2 >= 0, slots2, 0)
        settled = Pattern(trial.active | up, slots2, s_full[index2], bound_full[index2])
        hold = settled.valid() & (settled.bound == _FREE)
        y, moving = when(
            keep & jnp.any(hold),
            lambda: self._project(y, settled, hold),
            (y, jnp.array(0)),
        )
        counts = {
            "num_crossings": jnp.sum(across),
            "num_slides": jnp.sum(is_new & ~across),
            "num_exits": jnp.sum(left),
            # The control's work, its forward pass above and the projection's.
            "num_kink_evals": work + _gradients(1) + moving,
        }
        return y, settled, overflow, ~ok, counts

    def init(self, y) -> Start:
        empty = Pattern(
            jnp.zeros(0, bool),
            jnp.full(MAX_SLIDING, -1, jnp.int32),
            jnp.full(MAX_SLIDING, 0.5),
            jnp.zeros(MAX_SLIDING, jnp.int32),
        )
        _, z = self._run(y, None)
        on = _gates.kinked(z, self.shapes)
        pattern = eqx.tree_at(lambda p: p.active, empty, (z > 0) & ~on)
        pattern = eqx.tree_at(lambda p: p.s, pattern, pattern.s.astype(z.dtype))
        y, pattern, overflow, unresolved, settled = self._settle(
            y, pattern, on, None, jnp.array(True)
        )
        counts = {name: jnp.array(0) for name in self.counts}
        counts |= {k: v for k, v in settled.items() if k != "num_exits"}
        counts["num_kink_evals"] += _gradients(1)  # the pre-activations above
        return Start(y, pattern, counts, overflow, jnp.array(False), unresolved)

    def _signed(self, y, pattern: Pattern):
        """Pre-activations signed positive on the piece's side, over their scale."""
        _, z = self._run(y, pattern.gates())
        return jnp.where(pattern.active, z, -z), self._scale(z)

    def cut(self, t0, t1, y0, y1, y_error, pattern: Pattern, interp) -> Cut:
        del y0, y_error
        signed, band = self._signed(y1, pattern)
        crossed = ~pattern.on_kink() & (signed < -band)
        event = jnp.any(crossed)
        scale = band / KINK_TOL

        def everyone(t):
            e, _ = self._signed(interp.evaluate(t), pattern)
            return jnp.min(jnp.where(crossed, e / scale, jnp.inf))

        t_cut, passes = when(
            event,
            lambda: first_root(
                everyone, t0, t1, everyone(t0), everyone(t1), True, iterations=True
            ),
            (t1, jnp.array(0)),
        )
        # The forward passes: at t1, and of the root finding (with its two ends).
        passes = 1 + jnp.where(event, 2 + passes, 0)
        return Cut(event, t_cut, (crossed, passes), None, jnp.array(False))

    def switch(self, y, pattern: Pattern, cut: Cut, keep) -> Start:
        crossed, passes = cut.crossed
        signed, band = self._signed(y, pattern)
        on = pattern.on_kink()
        new = crossed & (signed <= band) & cut.event
        flip = ~on & ~new & (signed < -band) & keep
        came_active = pattern.active
        pattern = eqx.tree_at(lambda p: p.active, pattern, pattern.active ^ flip)
        y, pattern, overflow, unresolved, settled = self._settle(
            y, pattern, new, came_active, keep
        )
        exits = settled["num_exits"]
        counts = settled | {
            "num_kink_events": jnp.where(cut.event, 1, 0),
            "num_crossings": settled["num_crossings"] + jnp.sum(flip),
            "num_exits": jnp.where(keep, exits, 0),
            "num_corrections": jnp.array(0),
            # The cut's forward passes and this one's.
            "num_kink_evals": settled["num_kink_evals"] + _gradients(passes + 1),
        }
        jump = jnp.any(flip) | jnp.any(new) | (exits > 0)
        return Start(y, pattern, counts, overflow, jump, unresolved & keep)

    def diagnostics(self, pattern: Pattern, counts) -> dict:
        return {
            "num_sliding": jnp.sum(pattern.valid()),
            "num_crossings": counts["num_crossings"],
        }


def min_norm_velocity(flow, model, tol: float = KINK_TOL):
    """Minus the velocity of the sliding flow at `model` (pairs with $|z_k| \\le$ `tol`
    times their scale on their kink): the generalization of the minimum-norm gradient."""
    params, static = eqx.partition(model, eqx.is_inexact_array)
    pieces = Sliding(flow, params, static)
    _, z = pieces._run(params, None)
    on = _gates.kinked(z, pieces.shapes, tol)
    m = MAX_SLIDING
    slots, _ = _slots(on)
    # From s = 0: a pair whose surface repels and which may rest on either side
    # (its rate at s = 0 is <= 0) takes the inactive one, the smaller velocity.
    pattern = Pattern(
        (z > 0) & ~on, slots, jnp.zeros(m, z.dtype), jnp.zeros(m, jnp.int32)
    )
    s, bound, _, _ = pieces._control(params, pattern)
    pattern = eqx.tree_at(lambda p: (p.s, p.bound), pattern, (s, bound))
    grad = jax.grad(lambda p: pieces._run(p, pattern.gates())[0])(params)
    return eqx.combine(grad, static)
