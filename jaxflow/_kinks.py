r"""The minimum-norm ReLU flow, one smooth piece at a time (`kinks="min-norm"`).

Each step integrates the smooth continuation of the current piece (`_min_norm.field`)
with a diffrax solver and step-size controller (the loop is `_integrate.Integrator`).
After an accepted step, any pair whose pre-activation changed sign against the piece
marks a crossing: the first one is located on the step's dense output (Illinois root
finding), the step is cut there, the pairs at the crossing are moved onto the kink
exactly, and the minimum-norm field decides whether each slides along it or passes to
the other side. Kinks therefore cost a cut step and a restart instead of a cascade of
rejected steps, and sliding pairs stay on their surface (the field is tangent to it,
which Runge-Kutta steps preserve to rounding) instead of chattering across it.
"""

from typing import ClassVar

import diffrax as dfx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._dataset import Dataset
from ._min_norm import (
    Pattern,
    ReLUProblem,
    field,
    forward,
    pattern_at,
    slot_values,
    slots_of,
)
from ._pieces import AbstractPieces, Cut, Start
from ._relu import KINK_TOL, neurons, with_neurons
from ._roots import first_root, when
from .losses import AbstractLoss
from .models import TwoLayerReLU


def supports(flow, model) -> bool:
    """Whether the minimum-norm treatment applies: a `TwoLayerReLU` trained with a
    built-in loss on a `Dataset`."""
    return (
        isinstance(model, TwoLayerReLU)
        and isinstance(flow.loss, AbstractLoss)
        and isinstance(flow.data, Dataset)
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
        slides along it, else on the side it moves them to. `crossed`: they just
        crossed from the side `pattern` gives them (not so for pairs starting on a
        kink)."""
        X = self.problem.inputs
        on = pattern.on_kink() | new
        slots, overflow = slots_of(on)
        trial = Pattern(active=pattern.active & ~new, slots=slots)
        F = field(y, trial, self.problem)
        zdot = -(X @ neurons(F.gradient).T)
        s = slot_values(slots, F.multipliers, zdot)
        up = jnp.where(zdot != 0, zdot > 0, s >= 0.5)
        # A pair the field sends back to the side it just crossed from is at a
        # tangency (its field on that side turns at the kink), or the step's error
        # carried it over: either way it slides, and leaves when the field takes it
        # off (`_release`). Sending it back would locate the same crossing again at
        # ever shorter steps.
        back = (up == pattern.active) & crossed
        slide = new & (((s > 0) & (s < 1)) | back)
        leave = new & ~slide
        slots, _ = slots_of(on & ~leave)
        pattern = Pattern(active=trial.active | (leave & up), slots=slots)
        return pattern, overflow, jnp.sum(leave), jnp.sum(slide)

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
        on = pattern.on_kink()
        gone = on & (jnp.abs(Z) > KINK_TOL * self.problem.pair_scale(y))
        slots, _ = slots_of(on & ~gone)
        return Pattern(pattern.active | (gone & (Z > 0)), slots), jnp.sum(gone)

    def init(self, y):
        # Pairs that start on a kink are settled like a crossing at t0.
        pattern, overflow = pattern_at(y, self.problem, KINK_TOL)
        y, _ = self._onto_kinks(y, pattern.on_kink(), self._preactivations(y))
        pattern, more, crossings, slides = self._settle(
            y, pattern, pattern.on_kink(), crossed=False
        )
        counts = {name: jnp.array(0) for name in self.counts}
        counts["num_crossings"], counts["num_slides"] = crossings, slides
        return Start(y, pattern, counts, overflow | more)

    def cut(self, t0, t1, y1, pattern: Pattern, interp):
        """Whether the step [t0, t1] crossed a kink worth locating, where (the first
        crossing, else t1), and the crossing pairs."""
        X = self.problem.inputs
        # Crossings whose jumps in the field, held over the whole step, add up to less
        # than half the error the controller allows (same scaled RMS norm) are not
        # worth locating: those pairs just change side at the end of the step.
        Z1, _, _, r1 = forward(y1, pattern, self.problem)
        # Within the release band a pair counts as on its kink, whatever its sign
        # (rounding leaves |z| ~ 1e-19 on a neuron that stopped there).
        band = KINK_TOL * self.problem.pair_scale(y1)
        agreeing = jnp.where(pattern.active, Z1, -Z1)  # positive: on the piece's side
        crossed = ~pattern.on_kink() & (agreeing < -band)
        weight = (self.atol + self.rtol * jnp.abs(neurons(y1))) ** -2
        size = sum(x.size for x in jax.tree.leaves(y1))
        error = ((r1[:, None] * y1.v[None, :]) * (t1 - t0)) ** 2 * (X**2 @ weight.T)
        budget = 0.25 * size / jnp.maximum(jnp.sum(crossed), 1).astype(error.dtype)
        crossed = crossed & (error > budget)
        event = jnp.any(crossed)
        signed = agreeing / self.problem.norms[:, None]  # `_excess`
        t_cut = when(
            event,
            lambda: self._first_crossing(t0, t1, signed, crossed, pattern, interp),
            t1,
        )
        return Cut(event, t_cut, crossed)

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
        # (Under `jax.vmap` this runs for every seed when one has a crossing: the
        # others do not search.)
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
        `cut.event`)."""
        crossed, event = cut.crossed, cut.event
        Z = self._preactivations(y)
        pattern, exits = self._release(y, pattern, Z)
        # Pairs within the release distance of their kink go along (near-copies of a
        # neuron reach a kink together).
        norms = jnp.linalg.norm(neurons(y), axis=1)
        near = self._excess(y, pattern, Z) <= KINK_TOL * norms[None, :]
        new = crossed & near & event
        y, Z = when(event, lambda: self._onto_kinks(y, new, Z), (y, Z))
        pattern, overflow, crossings, slides = when(
            event,
            lambda: self._settle(y, pattern, new),
            (pattern, jnp.array(False), jnp.array(0), jnp.array(0)),
        )
        # Pairs that crossed with a small jump change side.
        band = KINK_TOL * self.problem.pair_scale(y)
        flip = ~pattern.on_kink() & ~new & (jnp.where(pattern.active, Z, -Z) < -band)
        pattern = Pattern(pattern.active ^ flip, pattern.slots)
        counts = {
            "num_kink_events": jnp.where(event, 1, 0),
            "num_crossings": crossings,
            "num_slides": slides,
            "num_exits": jnp.where(keep, exits, 0),
            "num_small_crossings": jnp.where(keep, jnp.sum(flip), 0),
        }
        return Start(y, pattern, counts, overflow)

    def diagnostics(self, pattern: Pattern, counts) -> dict:
        return {
            "num_sliding": jnp.sum(pattern.slots >= 0),
            "num_crossings": counts["num_crossings"],
        }
