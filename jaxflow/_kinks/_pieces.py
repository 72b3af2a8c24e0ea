r"""The pieces of a piecewise-smooth flow: the interface between the time loop
(`_integrate.Integrator`) and a treatment of kinks (`kinks=` of `jaxflow.solve`).

The loop integrates one smooth vector field at a time, the field of the current *piece*
(for a ReLU network, an activation pattern). The piece travels in diffrax's `args` slot
of the term, so a solver step never sees a jump. After each step the pieces decide
whether the step crossed into another piece (then the loop cuts the step there) and
what the next piece is.
"""

import abc
from typing import ClassVar

import diffrax as dfx
import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PyTree


class Start(eqx.Module):
    """Where a solve (or the piece after a switch) starts."""

    y: PyTree  # the parameters (moved onto kinks where needed)
    piece: PyTree  # e.g. a `_min_norm.Pattern`; `None` for a smooth flow
    counts: dict[str, Int[Array, ""]]  # increments of the counters in `counts`
    overflow: Bool[Array, ""]  # the piece does not fit its fixed-size storage
    jump: Bool[Array, ""]  # the field changed (or `y` moved): restart the solver
    # The piece's field is not defined: e.g. no equivalent control in the box.
    unresolved: Bool[Array, ""] | bool = False


class Cut(eqx.Module):
    """Whether a step is cut at a crossing into another piece, and where."""

    event: Bool[Array, ""]  # cut the step at `t`
    t: Float[Array, ""]  # the first crossing worth locating, else the step's end
    crossed: PyTree  # what crossed (e.g. the pairs that changed sign, and when)
    error: PyTree  # added to the solver's error estimate (like `y`), or None
    # Keep the step, cut at `t`, even if the controller rejects it.
    keep: Bool[Array, ""]
    # Too much crossed for the step to be judged: reject it, whatever its error, and
    # try again up to this time (inf: no retry; None: these pieces never retry).
    retry: Float[Array, ""] | None = None


class AbstractPieces(eqx.Module):
    """A flow that is smooth piece by piece, and how to move between pieces.

    Concrete classes: `Plain` (`kinks="plain"`: one piece, $-\\nabla L$ as it is) and
    `_kinks.MinNorm` (`kinks="min-norm"`: activation patterns, crossings located,
    Filippov sliding).
    """

    counts: ClassVar[tuple[str, ...]]
    """Names of the counters these pieces add to a solve's `stats` (each starts at 0,
    and `init`/`switch` return their increments)."""

    @abc.abstractmethod
    def term(self) -> dfx.ODETerm:
        """The vector field `(t, y, piece) -> dy/dt` of the piece passed as diffrax's
        `args`: smooth in `y`, also past the piece's boundary (solvers sample there
        within a step that is then cut)."""

    @abc.abstractmethod
    def init(self, y: PyTree) -> Start:
        """The piece at the initial point `y` (which may be moved, e.g. exactly onto a
        kink it starts on)."""

    @abc.abstractmethod
    def cut(
        self, t0, t1, y0: PyTree, y1: PyTree, y_error: PyTree, piece: PyTree, interp
    ) -> Cut:
        """After a step from `(t0, y0)` to `(t1, y1)` with dense output `interp` and the
        solver's error estimate `y_error` (or None), before the controller judges it:
        the first time in `[t0, t1]` at which it left `piece` in a way worth locating.
        Crossings stepped over instead are corrected by `switch` at the step's end
        (and by `within` at times inside the step);
        `Cut.error` bounds what that correction misses, and the controller counts it
        with the solver's own error estimate."""

    @abc.abstractmethod
    def switch(
        self, y: PyTree, piece: PyTree, cut: Cut, keep: Bool[Array, ""]
    ) -> Start:
        """The piece at the end `y` of a step (accepted if `keep`), cut at a crossing
        if `cut.event`."""

    def within(self, t, y: PyTree, piece: PyTree, cut: Cut) -> tuple[PyTree, PyTree]:
        """The flow at a time `t` inside an accepted step from `piece`, from the step's
        dense output `y` there: what `switch` corrects at the step's end (crossings
        stepped over before `t`), applied at `t`, and the piece the flow is on there
        (whose field is its velocity). For the saves at `ts`; by default `y` and
        `piece` themselves."""
        return y, piece

    def field_cost(self, piece: PyTree) -> Int[Array, ""] | int:
        """Gradient evaluations that a call of the field of `piece` costs beyond one
        (for `num_vf_evals`; 0 by default). Counted, per attempted step, by the
        solver's field calls, into the counter `num_kink_evals` if the pieces have
        one."""
        return 0

    def corrected_from(self, cut: Cut) -> Float[Array, ""]:
        """The first time in the step after which `within` corrects (inf: none), for
        counting that work."""
        return jnp.array(jnp.inf)

    @abc.abstractmethod
    def diagnostics(self, piece: PyTree, counts: dict[str, Array]) -> dict[str, Array]:
        """Values recorded with the metrics at the saved times (e.g. how many pairs
        slide), from the piece and the counters so far."""


class Plain(AbstractPieces):
    """One piece: $-\\nabla L$ as it is (`kinks="plain"`), as `diffrax.diffeqsolve`
    would integrate it."""

    flow: eqx.Module
    static: PyTree
    counts: ClassVar[tuple[str, ...]] = ()

    def term(self) -> dfx.ODETerm:
        return dfx.ODETerm(
            lambda t, y, piece: self.flow.vector_field(t, y, self.static)
        )

    def init(self, y):
        return Start(y, None, {}, jnp.array(False), jnp.array(False))

    def cut(self, t0, t1, y0, y1, y_error, piece, interp):
        del t0, y0, y1, y_error, piece, interp
        return Cut(jnp.array(False), t1, None, None, jnp.array(False))

    def switch(self, y, piece, cut, keep):
        del cut, keep
        return Start(y, piece, {}, jnp.array(False), jnp.array(False))

    def diagnostics(self, piece, counts):
        del piece, counts
        return {}
