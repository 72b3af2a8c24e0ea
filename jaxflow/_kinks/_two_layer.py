r"""The minimum-norm ReLU flow, one smooth piece at a time (`kinks="min-norm"`).

Each step integrates the smooth continuation of the current piece (`_min_norm.field`)
with a diffrax solver and step-size controller (the loop is `_integrate.Integrator`).
After a step, before the controller judges it, the pairs whose pre-activation changed
sign against the piece are sorted (`MinNorm._crossings`):

- a pair that passes through its kink is stepped over: the step's end is corrected for
  the time it spent on the other side, and what the correction misses joins the
  solver's error estimate, so that loosening the tolerance buys longer steps through
  many crossings at once;
- a pair that would slide (Filippov) is located on the step's dense output
  (Illinois root finding), the step is cut there, the pairs at the crossing are
  moved onto the kink exactly, and the minimum-norm field decides whether each
  slides along it or passes. Sliding pairs stay on their surface (the field is
  tangent to it, which Runge-Kutta steps preserve to rounding) instead of chattering
  across it. The correction keeps a neuron's sliding pairs sliding as they were;
  where the step's crossings (or the step itself) change which of them slide, the
  drift of the field from that assumption joins the error too
  (`MinNorm._on_sliding`).
"""

from typing import ClassVar

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int, PyTree

from .._dataset import Dataset
from .._relu import (
    KINK_TOL,
    couplings,
    is_one_layer,
    neurons,
    outgoing,
    output_bias,
    with_neurons,
)
from .._roots import first_root, when
from ..losses import AbstractLoss
from ._box import TOL, free_values
from ._min_norm import (
    CROSSINGS,
    Pattern,
    ReLUProblem,
    field,
    forward,
    pattern_at,
    predictions,
)
from ._pieces import AbstractPieces, Cut, Start


# Where a step's dense output is sampled for the crossing times (fractions of the
# step), and the matrix taking values there to the coefficients of their polynomial.
_NODES = np.linspace(0.0, 1.0, 5)
_FIT = np.linalg.inv(_NODES[:, None] ** np.arange(len(_NODES))[None, :])


def supports(flow, model) -> bool:
    """Whether the minimum-norm treatment applies: a `TwoLayerReLU`, or an `MLP` with
    one hidden ReLU layer (`_relu.is_one_layer`), trained with a built-in loss on a
    `Dataset`."""
    return (
        is_one_layer(model)
        and isinstance(flow.loss, AbstractLoss)
        and isinstance(flow.data, Dataset)
    )


def _first(marked: Bool[Array, " h"]) -> Int[Array, ""]:
    """1 + the first index marked, 0 if none."""
    return jnp.where(jnp.any(marked), jnp.argmax(marked) + 1, 0)


class Pairs(eqx.Module):
    """Some (point, neuron) pairs as a list of fixed length, the rest of it filler:
    the pairs that changed side within a step, few of the `n x h`."""

    rows: Int[Array, " k"]
    cols: Int[Array, " k"]
    mask: Bool[Array, " k"]  # which entries are pairs

    @staticmethod
    def of(marked: Bool[Array, "n h"], size: int) -> "Pairs":
        """The first `size` pairs `marked`."""
        rows, cols = jnp.nonzero(marked, size=size, fill_value=0)
        mask = jnp.arange(size) < jnp.sum(marked)
        return Pairs(rows.astype(jnp.int32), cols.astype(jnp.int32), mask)

    def at(self, dense: Array) -> Array:
        """The entries of an `(n, h)` array at the pairs."""
        return dense[self.rows, self.cols]

    def padded(self, size: int) -> "Pairs":
        """The same pairs in a list of `size` (at least as long)."""
        pad = size - self.mask.shape[0]
        return Pairs(*(jnp.pad(x, (0, pad)) for x in (self.rows, self.cols, self.mask)))

    def dense(self, values: Array, fill, shape) -> Array:
        """`values` at the pairs of an `(n, h)` array, `fill` elsewhere."""
        rows = jnp.where(self.mask, self.rows, shape[0])
        return (
            jnp.full(shape, fill, values.dtype)
            .at[rows, self.cols]
            .set(values, mode="drop")
        )

    def coupling(self, v: Array, r: Array) -> Array:
        """$\\langle v_j, r_i\\rangle$ at the pairs (`_relu.couplings`, not formed
        densely)."""
        products = v[self.cols] * r[self.rows]
        return products if v.ndim == 1 else jnp.sum(products, axis=-1)

    def dots(self, X: Float[Array, "n d1"], U: Float[Array, "h d1"]) -> Array:
        """$\\langle \\tilde x_i, u_j \\rangle$ at the pairs."""
        return jnp.sum(X[self.rows] * U[self.cols], axis=-1)

    def per_neuron(self, values: Array, X: Float[Array, "n d1"], h: int) -> Array:
        """$\\sum_i$ `values` $\\tilde x_i$ over each neuron's pairs, `(h, d1)`."""
        terms = jnp.where(self.mask, values, 0.0)[:, None] * X[self.rows]
        return jnp.zeros((h, X.shape[1]), X.dtype).at[self.cols].add(terms)


class Crossings(eqx.Module):
    """The pairs that changed side within a step (`MinNorm.cut`)."""

    located: Bool[Array, "n h"]  # the step is cut at the first of these
    pairs: Pairs  # those stepped over, and the located ones among them
    stepped: Bool[Array, " k"]  # stepped over, corrected at the step's end
    times: Float[Array, " k"]  # when each crossed (estimated)
    rate: Float[Array, " k"]  # d(v_j r_i)/dt over the step
    velocity: PyTree  # the step's dy/dt at its end
    speed: Float[Array, " k"]  # -dz/dt at the crossing, signed to the piece
    t0: Float[Array, ""]  # the step's start
    any: Bool[Array, ""]  # some pair crossed

    def padded(self, size: int, t1) -> "Crossings":
        """The same crossings in lists of `size` (filler: not stepped, at the step's
        end `t1`, no rate or speed)."""
        pad = size - self.stepped.shape[0]
        return Crossings(
            self.located,
            self.pairs.padded(size),
            jnp.pad(self.stepped, (0, pad)),
            jnp.pad(self.times, (0, pad), constant_values=t1),
            jnp.pad(self.rate, (0, pad)),
            self.velocity,
            jnp.pad(self.speed, (0, pad)),
            self.t0,
            self.any,
        )


class MinNorm(AbstractPieces):
    """Pieces of constant activation pattern, switched at located crossings
    (`kinks="min-norm"`).

    **Arguments:**

    - `problem`: the network's data and loss (`_min_norm.ReLUProblem`).
    - `rtol`, `atol`: the step-size controller's tolerances, which decide which
        crossings are worth locating (0 for both: every one).
    """

    problem: ReLUProblem
    rtol: Float[Array, ""]
    atol: Float[Array, ""]
    counts: ClassVar[tuple[str, ...]] = (
        "num_restarts",
        "num_kink_events",
        "num_crossings",
        "num_slides",
        "num_exits",
        "num_small_crossings",
        "num_crossing_steps",
        "num_corrections",
        "num_late_corrections",
        "kink_overflow_neuron",
    )

    def term(self) -> dfx.ODETerm:
        return dfx.ODETerm(
            lambda t, y, pattern: jax.tree.map(
                jnp.negative, field(y, pattern, self.problem).gradient
            )
        )

    def _preactivations(self, y):
        return self.problem.inputs @ neurons(y).T

    def _excess(self, y, pattern, Z=None):
        """Pre-activations (`Z`, if already computed) signed so that positive agrees
        with `pattern`, per unit input norm."""
        Z = self._preactivations(y) if Z is None else Z
        return jnp.where(pattern.active, Z, -Z) / self.problem.norms[:, None]

    def _settle(self, y, pattern, new, crossed=True):
        """Put the pairs `new` (at z = 0) on their kink if the minimum-norm field
        slides along it, else on the side it moves them to; then the neurons exactly
        on the kinks of their free pairs. `crossed`: they just crossed from the side
        `pattern` gives them (not so for pairs starting on a kink). Also returns
        which neuron's box problem outgrew its slots first (1 + its index; 0: none),
        and whether it did not converge."""
        X = self.problem.inputs
        on = pattern.kinked | new
        trial = Pattern(
            pattern.active & ~new, on, pattern.face, pattern.factor, jnp.array(True)
        )
        F = field(y, trial, self.problem)
        zdot = -(X @ neurons(F.gradient).T)
        s = F.box.multipliers(X.shape[0])
        up = jnp.where(zdot != 0, zdot > 0, s >= 0.5)
        # A pair the field sends back to the side it just crossed from is at a
        # tangency (its field on that side turns at the kink), or the step's error
        # carried it over: either way it slides, and leaves when the field takes it
        # off (`_release`). Sending it back would locate the same crossing again at
        # ever shorter steps.
        back = (up == pattern.active) & crossed
        # At rest on its kink at a bound of the box: a point in the span of the
        # sliding ones (more points on a kink than its dimension). (Not a neuron
        # with no active pair, which stops where its last pair leaves.)
        scale = self.problem.norms[:, None] * F.box.scale[None, :]
        rest = (jnp.abs(zdot) <= TOL * scale) & (scale > 0)
        slide = new & (((s > 0) & (s < 1)) | back | rest)
        leave = new & ~slide
        active, kinked = trial.active | (leave & up), on & ~leave
        pattern = Pattern(active, kinked, F.box.face, F.box.factor, trial.held)
        pattern = pattern.refreshed(X)
        y = with_neurons(y, pattern.onto_kinks(neurons(y)))
        failed = _first(F.box.overflow), ~F.box.converged
        return y, pattern, failed, jnp.sum(leave), jnp.sum(slide)

    def _onto_kinks(self, y, new, Z):
        """Move the neurons so that z_ij = 0 exactly for the pairs `new`; and the
        pre-activations there (`Z`: at `y`)."""
        X = self.problem.inputs
        U = neurons(y) - jnp.where(new, Z / self.problem.norms[:, None] ** 2, 0.0).T @ X
        y = with_neurons(y, U)
        return y, self._preactivations(y)

    def _release(self, y, pattern, Z):
        """Pairs on a kink whose pre-activation (`Z`, at `y`) has grown away from zero
        leave it."""
        on = pattern.kinked
        gone = on & (jnp.abs(Z) > KINK_TOL * self.problem.pair_scale(y))
        active = pattern.active | (gone & (Z > 0))
        pattern = eqx.tree_at(
            lambda p: (p.active, p.kinked), pattern, (active, on & ~gone)
        )
        return pattern.refreshed(self.problem.inputs), jnp.sum(gone)

    def init(self, y):
        # Pairs that start on a kink are settled like a crossing at t0.
        pattern = pattern_at(y, self.problem, KINK_TOL)
        y, _ = self._onto_kinks(y, pattern.kinked, self._preactivations(y))
        y, pattern, (overflow, unresolved), crossings, slides = self._settle(
            y, pattern, pattern.kinked, crossed=False
        )
        counts = {name: jnp.array(0) for name in self.counts}
        counts["num_crossings"], counts["num_slides"] = crossings, slides
        counts["kink_overflow_neuron"] = overflow
        return Start(y, pattern, counts, overflow > 0, jnp.array(False), unresolved)

    def cut(self, t0, t1, y0, y1, y_error, pattern: Pattern, interp):
        """Whether the step [t0, t1] crossed a kink worth locating, where (the first
        such crossing, else t1), the crossings (`Crossings`), and the error of stepping
        over the others (`_crossings`)."""
        if y_error is None:  # a solver without an error estimate
            y_error = jax.tree.map(jnp.zeros_like, y1)
        Z1, _, _, r1 = forward(y1, pattern, self.problem)
        # Within the release band a pair counts as on its kink, whatever its sign
        # (rounding leaves |z| ~ 1e-19 on a neuron that stopped there).
        band = KINK_TOL * self.problem.pair_scale(y1)
        agreeing = jnp.where(pattern.active, Z1, -Z1)  # positive: on the piece's side
        crossed = ~pattern.kinked & (agreeing < -band)
        count = jnp.sum(crossed)
        size = self.problem.crossings
        k = jnp.zeros(size, bool)
        none = Crossings(
            jnp.zeros_like(crossed),
            Pairs(jnp.zeros(size, jnp.int32), jnp.zeros(size, jnp.int32), k),
            k,
            jnp.full(size, t1),
            jnp.zeros(size, Z1.dtype),
            jax.tree.map(jnp.zeros_like, y1),
            jnp.zeros(size, Z1.dtype),
            t0,
            count > 0,
        )

        def listed(length):  # the crossings in a list of `length`, padded to `size`
            crossings, error, rescue = self._crossings(
                t0, t1, y0, y1, y_error, Z1, r1, crossed, pattern, interp, length
            )
            return crossings.padded(size, t1), error, rescue

        # A step's few crossings are worked on in a short list (its per-pair work
        # gathers rows of the inputs: at MNIST's size the full list's took longer
        # than the step's fields).
        # (Where the full list is no longer, it is not traced twice.)
        short = min(size, CROSSINGS)
        nothing = (none, jax.tree.map(jnp.zeros_like, y1), jnp.array(False))
        if short < size:
            nothing = when(
                (count > short) & (count <= size), lambda: listed(size), nothing
            )
        crossings, error, rescue = when(
            (count > 0) & (count <= short), lambda: listed(short), nothing
        )
        # More than the list holds: the step is tried again up to where about half
        # as many crossed (`_retry`); failing that (as many at once) it is cut at the
        # first crossing, located.
        retry = when(
            count > size,
            lambda: self._retry(t0, t1, y0, agreeing, crossed, pattern),
            jnp.array(jnp.inf, t1.dtype),
        )
        # (A retried step has no crossings listed, so no event.)
        over = (count > size) & (retry == jnp.inf)
        located = jnp.where(over, crossed, crossings.located)
        crossings = eqx.tree_at(lambda c: c.located, crossings, located)
        event = jnp.any(located)
        signed = agreeing / self.problem.norms[:, None]  # `_excess`
        t_cut = when(
            event,
            lambda: self._first_crossing(t0, t1, signed, located, pattern, interp),
            t1,
        )
        return Cut(event, t_cut, crossings, error, rescue, retry)

    def _retry(self, t0, t1, y0, agreeing, crossed, pattern):
        """For a step [t0, t1] in which more pairs crossed (`crossed`; `agreeing`:
        their signed pre-activations at t1) than a step lists: the time by which half
        the list crossed, by linear interpolation of each pre-activation over the
        step (inf where that is not past t0: many crossing at once). Costs a
        pre-activation pass (a third of a gradient) and the rejected step."""
        Z0 = self._preactivations(y0)
        e0 = jnp.maximum(jnp.where(pattern.active, Z0, -Z0), 0.0)
        s = jnp.where(crossed, e0 / (e0 - jnp.where(crossed, agreeing, -1.0)), 1.0)
        half = self.problem.crossings // 2
        s_half = -jax.lax.top_k(-s.ravel(), half)[0][-1]
        retry = t0 + (s_half * (t1 - t0)).astype(t0.dtype)
        return jnp.where((s_half > 0) & (retry > t0), retry, jnp.inf)

    def _crossings(
        self, t0, t1, y0, y1, y_error, Z1, r1, crossed, pattern, interp, size
    ):
        r"""Which of the pairs `crossed` in the step [t0, t1] are located and which
        stepped over; when each crossed; the error of stepping over; and whether the
        step is kept only up to its first crossing (`rescue`).

        **Crossing times.** $z_{ij}$ along the step's dense output is the quartic
        through five equally spaced times (exact for Tsit5's and Dopri5's quartic
        interpolants); its root from the linear guess by Newton.

        **Stepping over.** Past its crossing time $t_c$, pair $(i, j)$ was integrated
        with the piece's continuation, whose field differs from the true one by
        $D_{ij}$: in $u_j$ the jump $J_{ij} = \sigma_{ij} v_j r_i \tilde x_i$
        ($\sigma_{ij} = +1$ when the pair leaves the active side, $-1$ when it enters
        it); in $v_j$, $\sigma_{ij} r_i z_{ij}$; and in every parameter through the
        residuals, which see the activation off by $-\sigma_{ij} z_{ij}$. With
        $\tau = t_e - t_c$ ($t_e$ the step's end), the true end differs from the
        continued one by $D\tau + (\partial F\, D - \dot D)\,\tau^2/2 + O(\tau^3)$.
        `switch` (`_correct`) adds this to second order: $J$ at the middle of
        $[t_c, t_e]$ (its drift $\dot J$ from the step's two ends), $z$ linear from 0
        at $t_c$ (the $v_j$ and residual terms, the latter by a derivative of the
        loss), and the other side's response $\partial F \cdot \sum J \tau^2/2$ (one
        derivative of the field).

        **Its error** (`Cut.error`, in $u_j$, entrywise over $|\tilde x_i|$), per pair
        stepped over: (1) each crossing moves its neuron, and so shifts the crossing
        times of the neuron's other pairs, which the correction takes from the
        continued path: by about $|\tilde x_i \cdot \sum_{k \ne i} J_{kj}\tau_{kj}| /
        |\dot z_{ij}|$ (at most $\tau$), costing $|J_{ij}|$ times that (doubled: the
        sum's order and signs are not known); (2) the $O(\tau^3)$ rest, estimated as
        $|\dot J| \tau^3 / h$. In single steps over many crossings (several per
        neuron) this bounds the actual error of the corrected end with a margin of 1
        to 40 (tests). The controller adds it to the solver's estimate. Where that
        would make it reject a step that the solver's estimate alone passes, the step
        is instead kept up to its first crossing, located exactly (`rescue`), and the
        controller's shorter step follows; so at tight tolerances crossings are
        located, at loose ones stepped over many at a time.

        **Located.** A pair slides if the fields on both sides point into its surface
        (Filippov): the continued field carried it across, and on the other side
        $\dot z_{ij} + \sigma_{ij}\, v_j r_i \|\tilde x_i\|^2$ points back. Such a
        pair cannot be stepped over (the correction assumes it carries on); it is
        located unless its whole jump, held over the step, is within a share of the
        error budget (then it chatters within the tolerance, as in `kinks="plain"`).
        On a neuron with pairs on a kink the correction keeps them sliding as they
        were (their free multipliers absorb the jump, the held ones stay held): a
        crossing there is located where it slides itself along with them; where the
        crossings (or the step) release one or hold it, the field's drift from the
        held face, over the step, joins the error (`_on_sliding`). (Locating those
        crossings instead cut a step at each crossing of such a neuron: on MNIST,
        most of the steps.)
        """
        X, norms, v1 = self.problem.inputs, self.problem.norms, outgoing(y1)
        width = v1.shape[0]
        dtype = Z1.dtype
        h = (t1 - t0).astype(dtype)
        pairs = Pairs.of(crossed, size)
        count = jnp.sum(pairs.mask).astype(dtype)
        sign = jnp.where(pairs.at(pattern.active), 1.0, -1.0)
        Z0, _, _, r0 = forward(y0, pattern, self.problem)
        inner = [
            pairs.dots(X, neurons(interp.evaluate(t0 + float(x) * (t1 - t0))))
            for x in _NODES[1:-1]
        ]
        # z signed positive on the piece's side, on the step as a fraction s in [0, 1]:
        # the polynomial through the dense output at the nodes (exact for a quartic
        # interpolant), its root by Newton from the linear one.
        values = jnp.stack([pairs.at(Z0), *inner, pairs.at(Z1)]) * sign[None]
        coefficients = jnp.tensordot(jnp.asarray(_FIT, values.dtype), values, axes=1)
        e0, e1 = jnp.maximum(values[0], 0.0), values[-1]
        s = jnp.where(pairs.mask, e0 / (e0 - e1), 1.0)

        def polynomial(s):  # value and derivative at s (Horner, from s^4 down)
            value, slope = coefficients[-1], jnp.zeros_like(s)
            for c in coefficients[-2::-1]:
                value, slope = value * s + c, slope * s + value
            return value, slope

        for _ in range(6):
            value, slope = polynomial(s)
            s = jnp.clip(jnp.where(slope < 0, s - value / slope, s), 0.0, 1.0)
        s = jnp.where(pairs.mask, s, 1.0)
        times = t0 + (s * h).astype(t0.dtype)
        speed = -polynomial(s)[1] / h

        # Filippov: the continued field's dz/dt at t1 (signed), and the other side's.
        _, dy = jax.jvp(interp.evaluate, (t1,), (jnp.ones_like(t1),))
        zdot = sign * pairs.dots(X, neurons(dy))
        jump = pairs.coupling(v1, r1)  # J / x_i, unsigned
        squares = norms[pairs.rows] ** 2
        slides = pairs.mask & (zdot + jump * squares > 0)
        weight = (self.atol + self.rtol * jnp.abs(neurons(y1))) ** -2
        size = sum(x.size for x in jax.tree.leaves(y1))
        # The jump held over the step.
        whole = (jump * h) ** 2 * pairs.dots(X**2, weight)
        budget = 0.25 * size / jnp.maximum(count, 1.0)
        # The correction keeps a neuron's sliding pairs on their kinks (its free
        # multipliers absorbing the jump); where the crossings instead release or
        # hold one, or the crossing pair slides too (`_on_sliding`), they are
        # located and settled.
        large = whole > budget
        sliding = jnp.any(pattern.kinked, axis=0)[pairs.cols] & pairs.mask
        located = slides & large & ~sliding
        also, drift = when(
            jnp.any(sliding),
            lambda: self._on_sliding(y1, pattern, pairs, sign, sliding, large),
            (jnp.zeros_like(sliding), jnp.zeros((width, X.shape[1]), dtype)),
        )
        located = located | also

        rate = (jump - pairs.coupling(outgoing(y0), r0)) / h  # of v_j r_i
        # Each crossing moves its neuron, and so the crossing times of the neuron's
        # other pairs: by about the move of z_ij at the step's end over dz_ij/dt (at
        # most to the step's end).
        tau = jnp.where(pairs.mask & ~located, (1 - s) * h, 0.0)
        pushes = sign * tau * jump
        moves = pairs.dots(X, pairs.per_neuron(pushes, X, width)) - pushes * squares
        delay = jnp.minimum(jnp.abs(moves) / jnp.maximum(speed, 1e-300), tau)
        # And what the second-order correction leaves: of order tau^3.
        coef = 2 * jnp.abs(jump) * delay + jnp.abs(rate) * tau**3 / h
        stepped = pairs.mask & ~located
        # And where a sliding neuron's face changed within the step, the drift of its
        # field from the held face's, over the whole step (`_on_sliding`).
        error = with_neurons(
            jax.tree.map(jnp.zeros_like, y1),
            pairs.per_neuron(jnp.where(stepped, coef, 0.0), jnp.abs(X), width)
            + h * drift,
            jnp.zeros_like(v1),
        )
        # Stepping over must not cost the step: where the correction's error would
        # make the controller reject a step that it accepts on the solver's error
        # estimate alone (scaled RMS norm over 1), the step is kept but cut at the
        # first crossing (`rescue`; the controller still sees the correction's error,
        # so the next step is shorter).
        scale = jax.tree.map(
            lambda a, b: self.atol + self.rtol * jnp.maximum(jnp.abs(a), jnp.abs(b)),
            y0,
            y1,
        )

        def norm2(tree):  # the controller's squared norm, scaled by `scale`
            ratios = jax.tree.map(lambda e, w: jnp.sum((e / w) ** 2), tree, scale)
            return sum(jax.tree.leaves(ratios)) / size

        solver_error = jax.tree.map(jnp.abs, y_error)
        both = jax.tree.map(jnp.add, solver_error, error)
        rescue = ~(norm2(both) <= 1) & (norm2(solver_error) <= 1)  # nan: rescue
        located, stepped = located | (pairs.mask & rescue), stepped & ~rescue
        crossings = Crossings(
            pairs.dense(located, False, crossed.shape),
            pairs,
            stepped,
            times,
            rate,
            dy,
            speed,
            t0,
            jnp.array(True),
        )
        return crossings, error, rescue

    def _on_sliding(
        self,
        y,
        pattern: Pattern,
        pairs: Pairs,
        sign: Float[Array, " k"],
        crossed: Bool[Array, " k"],
        large: Bool[Array, " k"],
    ):
        """On neurons with pairs on a kink: which of the listed pairs `crossed` slide
        themselves and must be located (`sign`: +1 where a pair was active), and how
        far the field drifts from the correction's assumption about the sliding ones.

        A crossing pair slides where the field past its kink, projected along the
        neuron's sliding surfaces, sends it back, and its jump is `large` (the test in
        `_crossings`, with the unprojected field, is for neurons not sliding).

        The correction holds a neuron's free pairs on their kinks and its held pairs
        at their bounds: the face of its box problem in the piece. Where the face at
        `y` is another, with the crossings (they free a pair on a kink or hold one) or
        without them (the continued field moved a pair to a bound), the true field
        differs from the held face's by the difference of the two faces' solutions,
        $\\Delta w_j$; the box problem's solution is continuous in its data, so this
        grows from zero where the face changed (or, at a crossing, from the part of
        the jump beyond the bound). Per neuron, `|Delta w_j|` (entrywise, the larger
        of the two; 0 where the face is the piece's). Two field evaluations."""
        X, n = self.problem.inputs, pattern.kinked.shape[0]
        kinked = pattern.kinked

        def held(face):  # free and held-at-1 pairs, dense
            free = free_values(face.free, jnp.ones(face.free.shape, bool), n)
            return free, face.upper & kinked

        piece = held(pattern.face)

        def drift(box):  # |Delta w_j| where the face is not the piece's
            a, b = held(box.face), piece
            changed = jnp.any(kinked & ((a[0] != b[0]) | (a[1] != b[1])), axis=0)
            return jnp.where(changed[:, None], jnp.abs(box.direction - box.warm), 0.0)

        flipped = pairs.dense(crossed, False, kinked.shape)
        flips = eqx.tree_at(lambda p: p.active, pattern, pattern.active ^ flipped)
        F = field(y, flips, self.problem)
        most = jnp.maximum(drift(F.box), drift(field(y, pattern, self.problem).box))
        back = -sign * pairs.dots(X, neurons(F.gradient)) > 0
        return crossed & back & large, most

    def _first_crossing(self, t0, t1, e1, crossed, pattern, interp):
        """The first time in [t0, t1] at which one of the pairs `crossed` reaches its
        kink; `e1`: their pre-activations at t1 (`_excess`), negative.

        A pre-activation pass over all pairs costs a third of a gradient, and root
        finding on it takes about ten. So the root is found on one candidate per
        neuron, the pair that crosses first by linear interpolation between t0 and t1
        (a dot product each), and one pass at the root checks that no other pair
        crossed before it; if one did (rare: within a step the pre-activations are
        nearly linear), the search is repeated over all pairs.
        """
        X, norms = self.problem.inputs, self.problem.norms
        n, h = crossed.shape
        e0 = jnp.maximum(self._excess(interp.evaluate(t0), pattern), 0.0)
        fraction = jnp.where(crossed, e0 / (e0 - e1), jnp.inf)
        first = jnp.min(fraction, axis=0, keepdims=True)
        row = jnp.min(jnp.where(fraction == first, jnp.arange(n)[:, None], n), axis=0)
        has = jnp.isfinite(first[0])  # the neuron has a crossed pair
        row, col = jnp.where(has, row, 0), jnp.arange(h)
        sign = jnp.where(pattern.active[row, col], 1.0, -1.0)
        inputs = (sign / norms[row])[:, None] * X[row]

        def candidates(t):
            e = jnp.sum(inputs * neurons(interp.evaluate(t)), axis=1)
            return jnp.min(jnp.where(has, e, jnp.inf))

        def everyone(t):
            e = self._excess(interp.evaluate(t), pattern)
            return jnp.min(jnp.where(crossed, e, jnp.inf))

        f1 = jnp.min(jnp.where(has, e1[row, col], jnp.inf))
        # (Under `jax.vmap` only the seeds with an event run this: `when` in `cut`.)
        t_cut = first_root(candidates, t0, t1, candidates(t0), f1, jnp.any(has))
        # A pair past its kink at t_cut by more than the release band crossed before.
        y_cut = interp.evaluate(t_cut)
        band = KINK_TOL * jnp.linalg.norm(neurons(y_cut), axis=1)
        missed = jnp.any(crossed & (self._excess(y_cut, pattern) < -band[None, :]))
        return when(
            missed,
            lambda: first_root(
                everyone, t0, t_cut, everyone(t0), everyone(t_cut), True
            ),
            t_cut,
        )

    def switch(self, y, pattern: Pattern, cut: Cut, keep):
        """The next piece, at the end `y` of an accepted step (cut at a crossing if
        `cut.event`); the crossings stepped over before it are corrected
        (`_crossings`)."""
        crossings, event = cut.crossed, cut.event
        pairs, shape = crossings.pairs, pattern.active.shape
        dtype = neurons(y).dtype
        y, moved, pattern, exits = self._stepped_over(
            cut.t, y, pattern, crossings, keep
        )
        Z = self._preactivations(y)
        pattern, more = self._release(y, pattern, Z)
        exits = exits + more
        # Pairs within the release distance of their kink go along (near-copies of a
        # neuron reach a kink together).
        norms = jnp.linalg.norm(neurons(y), axis=1)
        near = self._excess(y, pattern, Z) <= KINK_TOL * norms[None, :]
        new = crossings.located & near & event
        y, Z = when(event, lambda: self._onto_kinks(y, new, Z), (y, Z))
        no, zero = jnp.array(False), jnp.array(0)
        y, pattern, (overflow, unresolved), count, slides = when(
            event,
            lambda: self._settle(y, pattern, new),
            (y, pattern, (zero, no), zero, zero),
        )
        # Any other pair on the wrong side changes side (e.g. one that a correction
        # carried across, or whose stepped-over crossing came right at a cut).
        band = KINK_TOL * self.problem.pair_scale(y)
        excess = jnp.where(pattern.active, Z, -Z)
        flip = ~pattern.kinked & ~new & (excess < -band) & keep

        # They crossed about |z| / (dz/dt) ago (not before the step): corrected too.
        def late():
            speed = -jnp.where(pattern.active, 1.0, -1.0) * self._preactivations(
                crossings.velocity
            )
            listed = pairs.dense(pairs.mask, False, shape)
            speed = jnp.where(listed, pairs.dense(crossings.speed, 0.0, shape), speed)
            since = jnp.minimum(
                -excess / jnp.maximum(speed, 1e-300),
                (cut.t - crossings.t0).astype(dtype),
            )
            return self._correct_late(y, pattern, flip, jnp.where(flip, since, 0.0))

        y = when(jnp.any(flip), late, y)
        pattern = eqx.tree_at(lambda p: p.active, pattern, pattern.active ^ flip)
        counts = {
            "num_kink_events": jnp.where(event, 1, 0),
            "num_crossings": count,
            "num_slides": slides,
            "num_exits": jnp.where(keep, exits, 0),
            "num_small_crossings": jnp.where(keep, jnp.sum(moved | flip), 0),
            "num_crossing_steps": jnp.where(crossings.any, 1, 0),
            "num_corrections": jnp.where(jnp.any(moved), 1, 0),
            "num_late_corrections": jnp.where(jnp.any(flip), 1, 0),
        }
        # Only a settle solves the box problem at the step's end: where a neuron has
        # more pairs on a kink than free slots, check that its free set still fits.
        if self.problem.overflows:
            many = jnp.any(jnp.sum(pattern.kinked, axis=0) > self.problem.slots)
            overflow = when(
                many & keep & ~event & (overflow == 0),
                lambda: _first(field(y, pattern, self.problem).box.overflow),
                overflow,
            )
        counts["kink_overflow_neuron"] = overflow
        jump = jnp.any(moved | flip)
        return Start(y, pattern, counts, overflow > 0, jump, unresolved & keep)

    def within(self, t, y, pattern: Pattern, cut: Cut):
        y, _, pattern, _ = self._stepped_over(
            t, y, pattern, cut.crossed, jnp.array(True)
        )
        return y, pattern

    def corrected_from(self, cut: Cut):
        crossings = cut.crossed
        return jnp.min(jnp.where(crossings.stepped, crossings.times, jnp.inf))

    def _stepped_over(self, t, y, pattern, crossings: Crossings, keep):
        """`y` at `t` in a step corrected for the crossings stepped over before `t`
        (`_correct`); which pairs those were; and the pattern there (those pairs
        on their new side), without the pairs that left their kink in the step
        (released first: the correction puts the neurons back onto the kinks of the
        pattern's free pairs) and how many left."""
        pattern, exits = self._release(y, pattern, self._preactivations(y))
        pairs, shape = crossings.pairs, pattern.active.shape
        tau = jnp.where(crossings.stepped, t - crossings.times, 0.0)
        tau = pairs.dense(tau.astype(neurons(y).dtype), 0.0, shape)
        rate = pairs.dense(crossings.rate, 0.0, shape)
        moved = (tau > 0) & keep
        y = when(jnp.any(moved), lambda: self._correct(y, pattern, moved, tau, rate), y)
        pattern = eqx.tree_at(lambda p: p.active, pattern, pattern.active ^ moved)
        return y, moved, pattern, exits

    def _correct(self, y, pattern, moved, tau, rate):
        """`y` with the effect of the crossings `moved`, `tau` before its time, added
        (`_crossings`)."""
        problem = self.problem
        X, v = problem.inputs, outgoing(y)
        Z, hidden, _, _ = forward(y, pattern, problem)
        C = jnp.where(moved, jnp.where(pattern.active, tau, -tau), 0.0)  # sigma tau
        residuals = jax.grad(problem.loss.of_predictions)
        # Past its crossing a pair's activation is off by -sigma z (linear in t, zero
        # at the crossing): the predictions' error, integrated, and its effect on
        # the residuals.
        shift = -0.5 * (C * Z) @ v
        r, rho = jax.jvp(
            lambda f: residuals(f, problem.target), (predictions(y, hidden),), (shift,)
        )
        vr = couplings(v, r)
        active = pattern.active | pattern.kinked
        # The jump in u_j's field, at the middle of [t_c, t_e].
        R = C * (vr - 0.5 * tau * rate) - jnp.where(active, couplings(v, rho), 0.0)
        dU = R.T @ X
        dv = (0.5 * C * Z).T @ r - hidden.T @ rho
        # The other piece's field responds to the jump: + dF/dy . sum J tau^2 / 2.
        new = eqx.tree_at(lambda p: p.active, pattern, pattern.active ^ moved)
        c = output_bias(y)
        zero = None if c is None else jnp.zeros_like(c)
        push = with_neurons(y, (0.5 * C * tau * vr).T @ X, jnp.zeros_like(v), zero)
        _, response = jax.jvp(
            lambda y: field(y, new, problem, search=False).gradient, (y,), (push,)
        )
        # A neuron sliding along kinks stays on them: in the true flow its field
        # after the crossing is the jump projected onto its sliding surfaces (the
        # free multipliers absorb the rest), so is the correction.
        U = pattern.onto_kinks(neurons(y) + dU - neurons(response))
        # An output bias's field is the residuals' sum: it changes by theirs.
        dc = None if c is None else c - jnp.sum(rho, axis=0) - output_bias(response)
        return with_neurons(y, U, v + dv - outgoing(response), dc)

    def _correct_late(self, y, pattern, moved, tau):
        """`_correct` to first order, for pairs `moved` that crossed a moment `tau`
        ago (the correction carried them across, or their stepped-over crossing came
        right at a cut): each one's jump held for `tau`. What it leaves is of order
        $J\\tau^2$, and $\\tau$ is the time to cross the few multiples of the kink
        tolerance by which they are past it. Costs two thirds of a gradient."""
        problem = self.problem
        _, _, _, r = forward(y, pattern, problem)
        C = jnp.where(moved, jnp.where(pattern.active, tau, -tau), 0.0)  # sigma tau
        dU = (C * couplings(outgoing(y), r)).T @ problem.inputs
        return with_neurons(y, pattern.onto_kinks(neurons(y) + dU))

    def diagnostics(self, pattern: Pattern, counts) -> dict:
        return {
            "num_sliding": jnp.sum(pattern.kinked),
            "num_crossings": counts["num_crossings"],
        }
