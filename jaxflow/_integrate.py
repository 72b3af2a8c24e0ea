"""The adaptive time loop behind `jaxflow.solve` and `jaxflow.solve_ensemble`.

A diffrax solver and step-size controller advance the state one step at a time
(`solver.step`, `controller.adapt_step_size`, as `diffrax.diffeqsolve` does); around
them this loop adds what diffeqsolve does not have: a vector field split into smooth
pieces switched at located crossings (`_pieces.AbstractPieces`), events whose first
times are located on the dense output, terminal or only recorded, and a state that can
be stopped at any time and continued later, so that a long solve run in segments (and
checkpointed between them) takes exactly the steps of one uninterrupted solve. The same
loop (`advance`) steps one solve or a batch of seeds.
"""

import functools
from collections.abc import Callable
from typing import Any

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PyTree

from ._event_times import event_values, first_times, terminal_time
from ._flow import SavedFlow
from ._kinks import AbstractPieces, Cut
from ._roots import when
from ._solution import RESULTS, final_status, finite, update_result
from .events._events import AbstractEvent


_COUNTS = ("num_steps", "num_accepted_steps", "num_rejected_steps")


def _where_rows(rows: Bool[Array, " times"], value, x: Array) -> Array:
    """`value` in the rows (leading axis) of `x` marked in `rows`, `x` elsewhere."""
    return jnp.where(rows.reshape((-1,) + (1,) * (x.ndim - 1)), value, x)


def _unsaved(dtype) -> Array:
    """What a row of `saved` holds where nothing was saved: inf, or -1 for integers
    (`True` for booleans)."""
    return jnp.asarray(jnp.inf if jnp.issubdtype(dtype, jnp.floating) else -1, dtype)


def _select(pred, a, b):
    return jax.tree.map(lambda x, z: jnp.where(pred, x, z), a, b)


def _calls(solver) -> tuple[int, int] | None:
    """Field evaluations of an explicit Runge-Kutta solver per attempted step, and at
    the start (None if unknown).

    An s-stage tableau costs s evaluations a step, or s - 1 when the last stage is the
    next step's first (FSAL, e.g. Tsit5), plus one at the start. Checked against a
    counter in the loss for Tsit5, Dopri5, Dopri8 and Heun (tests).
    """
    if isinstance(solver, dfx.AbstractERK):
        tableau = solver.tableau
        stages = len(tableau.c) + 1
        return (stages - 1, 1) if tableau.fsal else (stages, 0)
    if isinstance(solver, dfx.Euler):
        return 1, 0
    return None


def _num_vf_evals(solver, num_steps) -> Array:
    """Gradient evaluations made by an explicit Runge-Kutta solver (-1 if unknown)."""
    calls = _calls(solver)
    if calls is None:
        return jnp.array(-1)
    per_step, start = calls
    return per_step * num_steps + start


class State(eqx.Module):
    """Everything a solve carries from one step to the next (and across segments)."""

    t: Float[Array, ""]
    tnext: Float[Array, ""]
    y: PyTree
    aux: PyTree  # the piece (e.g. an activation pattern; diffrax's `args`), or None
    solver_state: PyTree
    controller_state: PyTree
    made_jump: Bool[Array, ""]
    save_index: Int[Array, ""]
    saved: PyTree
    counts: dict[str, Int[Array, ""]]
    result: RESULTS
    ended: Bool[Array, ""]  # a terminal event ended the solve
    metrics: dict[str, Callable]
    event_reference: dict[str, PyTree]
    event_value: dict[str, Array]  # at t
    event_time: dict[str, Array]  # nan until located


class Taken(eqx.Module):
    """One attempted step, for the saves at `ts` within it: its dense output, where it
    ended and the state there, whether it was accepted, and the piece it integrated
    and its crossings (`AbstractPieces.within`; None: nothing to correct)."""

    interp: dfx.AbstractLocalInterpolation
    t_end: Float[Array, ""]
    y_end: PyTree
    keep: Bool[Array, ""]
    end_piece: PyTree  # the piece at `t_end`, after the switch
    piece: PyTree = None
    cut: Cut | None = None


class Outcome(eqx.Module):
    """What one finished solve returns (one seed's, in an ensemble)."""

    ys: PyTree  # the parameters at `ts`, or None
    metrics: dict[str, Array]
    final: PyTree  # the parameters at `t_final`
    t_final: Float[Array, ""]
    stats: dict[str, Array]
    status: RESULTS
    event_times: dict[str, Array]


def running(st: State, t1, max_steps: int) -> Bool[Array, "..."]:
    """Whether a solve goes on (per seed, for a batch of states): before `t1`, no
    failure, no terminal event, fewer than `max_steps` steps."""
    return (
        (st.t < t1)
        & (st.result == RESULTS.successful)
        & ~st.ended
        & (st.counts["num_steps"] < max_steps)
    )


class Integrator(eqx.Module):
    """One solve's fixed inputs. `init`, then `advance` as often as wanted, then
    `finish`."""

    flow: Any
    static: PyTree
    pieces: AbstractPieces
    solver: dfx.AbstractSolver
    controller: dfx.AbstractStepSizeController
    t0: Float[Array, ""]
    t1: Float[Array, ""]
    ts: Float[Array, " times"]
    dt0: Any
    events: dict[str, AbstractEvent]
    max_steps: int = eqx.field(static=True)
    save_models: bool = eqx.field(static=True)
    # Store the parameters at `ts` in the loop and evaluate the metrics in `finish`.
    # Under `jax.vmap` a save inside the loop costs every seed whenever any one of them
    # saves (nearly every step, for many seeds); deferred, each seed pays for its own
    # `len(ts)` evaluations only, at the price of holding its parameters at `ts`.
    defer_metrics: bool = eqx.field(static=True, default=False)

    def _model(self, y):
        return eqx.combine(y, self.static)

    def _metrics(self, y, metrics, velocity: Callable[[], PyTree]):
        """The metrics at a saved point `y`, where the solve's velocity is
        `velocity()` (`SavedFlow`)."""
        model, flow = self._model(y), SavedFlow(self.flow, velocity)
        return {name: fn(model, flow) for name, fn in metrics.items()}

    def _asks_velocity(self, y, metrics) -> bool:
        """Whether some metric asks for the velocity (traced, not run): deferred
        metrics then store it with the parameters."""
        asked = []

        def velocity():
            asked.append(True)
            return y

        jax.eval_shape(lambda: self._metrics(y, metrics, velocity))
        return bool(asked)

    def _record(self, t, y, piece, aux, counts, metrics):
        """What `saved` holds for the point `y` at `t` on `piece`, with the
        diagnostics of the piece `aux` and the counters `counts`."""
        diagnostics = self.pieces.diagnostics(aux, counts)
        term = self.pieces.term()

        def velocity():
            return term.vf(t, y, piece)

        if self.defer_metrics:
            v = velocity() if self._asks_velocity(y, metrics) else None
            return (y, v), diagnostics
        values = self._metrics(y, metrics, velocity) | diagnostics
        return (y if self.save_models else None), values

    def init(self, y, metrics: dict[str, Callable]) -> State:
        term = self.pieces.term()
        start = self.pieces.init(y)
        y, aux = start.y, start.piece
        counts = {name: jnp.array(0) for name in _COUNTS} | start.counts
        result = update_result(
            RESULTS.where(finite(y), RESULTS.successful, RESULTS.nonfinite),
            RESULTS.where(start.overflow, RESULTS.kink_overflow, RESULTS.successful),
        )
        result = update_result(
            result,
            RESULTS.where(
                start.unresolved, RESULTS.sliding_unresolved, RESULTS.successful
            ),
        )
        error_order = self.solver.error_order(term)
        tnext, controller_state = self.controller.init(
            term, self.t0, self.t1, y, self.dt0, aux, self.solver.func, error_order
        )
        tnext = jnp.minimum(tnext, self.t1)
        solver_state = self.solver.init(term, self.t0, tnext, y, aux)

        model = self._model(y)
        reference = {n: e.init(model, self.flow) for n, e in self.events.items()}
        value = event_values(self.events, self.t0, model, self.flow, reference)
        time = {n: jnp.where(v <= 0, self.t0, jnp.nan) for n, v in value.items()}
        ended = self._terminal(time, jnp.array(True)) < jnp.inf

        struct = jax.eval_shape(
            lambda: self._record(self.t0, y, aux, aux, counts, metrics)
        )
        saved = jax.tree.map(
            lambda x: jnp.full((len(self.ts),) + x.shape, _unsaved(x.dtype), x.dtype),
            struct,
        )
        st = State(
            t=self.t0,
            tnext=tnext,
            y=y,
            aux=aux,
            solver_state=solver_state,
            controller_state=controller_state,
            made_jump=jnp.array(False),
            save_index=jnp.array(0),
            saved=saved,
            counts=counts,
            result=result,
            ended=ended,
            metrics=metrics,
            event_reference=reference,
            event_value=value,
            event_time=time,
        )
        # The times of `ts` at t0: as if a step had ended there.
        start_step = Taken(_Constant(y), self.t0, y, jnp.array(True), aux)
        index, saved = _save(
            self.wanted,
            lambda i: self.saved_row(st, start_step, i),
            start_step,
            saved,
            st.save_index,
            batched=False,
        )
        return eqx.tree_at(lambda s: (s.save_index, s.saved), st, (index, saved))

    def _terminal(self, time, new):
        return terminal_time(self.events, time, new, self.t0.dtype)

    def running(self, st: State) -> Bool[Array, ""]:
        return running(st, self.t1, self.max_steps)

    def wanted(self, i: Int[Array, ""], taken: Taken) -> Bool[Array, ""]:
        """Whether `ts[i]` is saved within the step `taken`."""
        ts = self.ts
        before = ts[jnp.minimum(i, len(ts) - 1)] <= taken.t_end
        return taken.keep & (i < len(ts)) & before

    def saved_row(self, st: State, taken: Taken, i: Int[Array, ""]):
        """What `saved` holds at `ts[i]`, a time within the step `taken` from `st`:
        the state at the step's end, or the dense output corrected for what the step
        stepped over before that time; the metrics on the piece the flow is on there."""
        t = self.ts[jnp.minimum(i, len(self.ts) - 1)]
        y, piece = taken.interp.evaluate(t), taken.end_piece
        if taken.cut is not None:
            y, piece = when(
                t < taken.t_end,
                lambda: self.pieces.within(t, y, taken.piece, taken.cut),
                (taken.y_end, taken.end_piece),
            )
        return self._record(t, y, piece, st.aux, st.counts, st.metrics)

    def step(self, st: State) -> tuple[State, Taken]:
        """One attempted step from `st`: the state after it, its saves at `ts` not yet
        made (`saved` as in `st`), and what making them needs."""
        term = self.pieces.term()
        solver, controller = self.solver, self.controller
        y1, y_error, dense, solver_state, solver_result = solver.step(
            term, st.t, st.tnext, st.y, st.aux, st.solver_state, st.made_jump
        )
        interp = solver.interpolation_cls(t0=st.t, t1=st.tnext, **dense)
        # Kink crossings: the first one worth locating cuts the step; what stepping
        # over the others misses counts as error.
        cut = self.pieces.cut(st.t, st.tnext, st.y, y1, y_error, st.aux, interp)
        if cut.error is not None and y_error is not None:
            y_error = jax.tree.map(lambda e, c: jnp.abs(e) + c, y_error, cut.error)
        y_error = jax.tree.map(lambda e: jnp.where(jnp.isnan(e), jnp.inf, e), y_error)
        keep, next_t0, next_t1, jump, controller_state, controller_result = (
            controller.adapt_step_size(
                st.t,
                st.tnext,
                st.y,
                y1,
                st.aux,
                y_error,
                solver.error_order(term),
                st.controller_state,
            )
        )
        # A step rejected only for the error of stepping over its crossings is kept
        # up to the first one (the controller's shorter step follows from there).
        keep = keep | (cut.keep & cut.event)
        if cut.retry is not None:
            # Too many crossings to list: the step is tried again, shorter.
            retry = cut.retry < st.tnext
            keep = keep & ~retry
            next_t0 = jnp.where(retry, st.t, next_t0)
            next_t1 = jnp.where(retry, cut.retry, next_t1)
        event = keep & cut.event
        t_end = jnp.where(event, cut.t, st.tnext)
        y_end = _select(event, interp.evaluate(t_end), y1)

        reference = st.event_reference
        model = self._model(y_end)
        value = event_values(self.events, t_end, model, self.flow, reference)
        time = first_times(
            self.events,
            self.flow,
            lambda t: self._model(interp.evaluate(t)),
            st.t,
            t_end,
            reference,
            st.event_value,
            value,
            st.event_time,
            keep,
        )
        t_stop = self._terminal(time, keep)
        ended = t_stop < jnp.inf
        # Times past a terminal event did not happen.
        time = {n: jnp.where(ended & (x > t_stop), jnp.nan, x) for n, x in time.items()}
        t_end = jnp.where(ended, t_stop, t_end)
        y_end = _select(ended, interp.evaluate(t_end), y_end)

        switched = self.pieces.switch(
            y_end,
            st.aux,
            eqx.tree_at(lambda c: (c.event, c.t), cut, (event & ~ended, t_end)),
            keep,
        )
        y_end, aux = switched.y, switched.piece

        c = st.counts
        counts = {
            "num_steps": c["num_steps"] + 1,
            "num_accepted_steps": c["num_accepted_steps"] + jnp.where(keep, 1, 0),
            "num_rejected_steps": c["num_rejected_steps"] + jnp.where(keep, 0, 1),
        }
        counts |= {k: c[k] + v for k, v in switched.counts.items()}
        if "num_corrections" in counts:
            # The saves in this step that `within` corrects cost a correction each.
            ts, i = self.ts, jnp.arange(len(self.ts))
            later = (i >= st.save_index) & (ts < t_end)
            corrected = later & (ts > self.pieces.corrected_from(cut)) & keep
            n = counts["num_corrections"]
            counts["num_corrections"] = n + jnp.sum(corrected, dtype=n.dtype)
        if "num_restarts" in c:
            counts["num_restarts"] = c["num_restarts"] + jnp.where(st.made_jump, 1, 0)
        if "num_kink_evals" in counts:
            # The step's field calls (and after a restart, the first stage again, as
            # at the start) beyond a gradient.
            per_step, start = _calls(self.solver) or (1, 0)
            calls = per_step + jnp.where(st.made_jump, start, 0)
            n = counts["num_kink_evals"]
            cost = calls * self.pieces.field_cost(st.aux)
            counts["num_kink_evals"] = n + jnp.asarray(cost).astype(n.dtype)
        # The first failure counts: non-finite, then overflow, solver, controller.
        ok = RESULTS.successful
        result = functools.reduce(
            update_result,
            [
                RESULTS.where(keep & ~finite(y_end), RESULTS.nonfinite, ok),
                RESULTS.where(switched.overflow, RESULTS.kink_overflow, ok),
                RESULTS.where(switched.unresolved, RESULTS.sliding_unresolved, ok),
                RESULTS.where(keep, RESULTS.promote(solver_result), ok),
                RESULTS.promote(controller_result),
            ],
        )
        step = next_t1 - next_t0
        tnext = jnp.where(event, t_end + step, next_t1)
        new = State(
            t=jnp.where(keep, t_end, st.t),
            tnext=jnp.minimum(tnext, self.t1),
            y=_select(keep, y_end, st.y),
            aux=_select(keep, aux, st.aux),
            solver_state=_select(keep, solver_state, st.solver_state),
            controller_state=controller_state,
            made_jump=jnp.where(keep, event | jump | switched.jump, st.made_jump),
            save_index=st.save_index,
            saved=st.saved,
            counts=counts,
            result=update_result(st.result, result),
            ended=ended,
            metrics=st.metrics,
            event_reference=st.event_reference,
            event_value=_select(keep, value, st.event_value),
            event_time=time,
        )
        return new, Taken(interp, t_end, y_end, keep, aux, st.aux, cut)

    def advance(self, st: State, t_stop) -> State:
        """Step until `t_stop` is passed (the last step may end beyond it: steps are
        never clipped there, so segments do not change the trajectory) or the solve is
        over."""
        return advance(lambda: self, st, t_stop)

    def stats(self, counts: dict[str, Array]) -> dict[str, Array]:
        """The solve's step counts, and the gradient evaluations they cost."""
        stats = dict(counts, max_steps=jnp.asarray(self.max_steps))
        extra = 0
        if self.dt0 is None and isinstance(
            self.controller, dfx.AbstractAdaptiveStepSizeController
        ):
            extra = extra + 2  # choosing the first step
        if "num_kink_events" in counts:
            # Restarts re-evaluate a first-same-as-last stage; each kink event (and the
            # start) evaluates the field once more to decide slide or cross.
            solver = self.solver
            fsal = isinstance(solver, dfx.AbstractERK) and solver.tableau.fsal
            extra = extra + counts["num_kink_events"] + 1
            extra = extra + (counts["num_restarts"] if fsal else 0)
            # Correcting a step's end for the crossings stepped over: a forward pass
            # with the residuals' derivative and a derivative of the field, about
            # three gradients.
            extra = extra + 3 * counts["num_corrections"]
            # A late correction (`_two_layer.MinNorm._correct_late`): a forward pass
            # and a product with the inputs, counted as a gradient.
            extra = extra + counts.get("num_late_corrections", 0)
        if "num_kink_evals" in counts:
            # The kink treatment's own work, in gradients (`_kinks._sliding`).
            extra = extra + counts["num_kink_evals"]
        evals = _num_vf_evals(self.solver, counts["num_steps"])
        stats["num_vf_evals"] = jnp.where(evals >= 0, evals + extra, evals)
        return stats

    def finish(self, st: State) -> Outcome:
        """The outcome of a finished (or stopped) solve."""
        result = update_result(
            st.result,
            RESULTS.where(st.ended, RESULTS.event_occurred, RESULTS.successful),
        )
        result = update_result(
            result,
            RESULTS.where(
                st.t < self.t1, RESULTS.max_steps_reached, RESULTS.successful
            ),
        )
        later = jnp.arange(len(self.ts)) >= st.save_index
        saved = st.saved
        if self.defer_metrics:
            (ys, velocities), diagnostics = saved
            # One time at a time (a vmap over `ts` would hold all their activations).
            # Rows never saved hold inf: evaluate zeros there, then mark them unsaved.
            rows = jax.tree.map(lambda x: _where_rows(later, 0.0, x), (ys, velocities))
            values = jax.lax.map(
                lambda row: self._metrics(row[0], st.metrics, lambda: row[1]), rows
            )
            values = jax.tree.map(
                lambda x: _where_rows(later, _unsaved(x.dtype), x), values
            )
            saved = (ys if self.save_models else None), values | diagnostics
        # After a terminal event nothing was computed: nan (inf marks a failure).
        ys, values = jax.tree.map(
            lambda x: (
                _where_rows(st.ended & later, jnp.nan, x)
                if jnp.issubdtype(x.dtype, jnp.floating)
                else x
            ),
            saved,
        )
        stats = self.stats(st.counts)
        if hasattr(self.solver, "stats"):  # a solver's own record (`_stiff.Auto`)
            stats |= self.solver.stats(st.solver_state)
        return Outcome(
            ys=ys,
            metrics=values,
            final=st.y,
            t_final=st.t,
            stats=stats,
            status=final_status(result, st.y, self.flow, self.static),
            event_times=st.event_time,
        )


class _Constant(eqx.Module):
    """The dense output of a step that stays at `y`."""

    y: PyTree

    def evaluate(self, t):
        del t
        return self.y


def _write(b, v, j):
    return b.at[j].set(v, mode="drop")


def _save(wanted, row, taken, saved, index, *, batched: bool):
    """Write `row(i)` into row `i` of `saved` for `i = index, index + 1, ...` while
    `wanted(i, taken)` (per seed, when `batched`: then `wanted` and `row` are the
    vmapped ones); returns the next index and `saved`."""
    put = jax.vmap(_write) if batched else _write

    def body(c):
        i, saved = c
        want = wanted(i, taken)
        values = row(i)
        rows = jnp.where(want, i, jnp.iinfo(jnp.int32).max)  # out of range: dropped
        saved = jax.tree.map(lambda b, v: put(b, v, rows), saved, values)
        return i + jnp.where(want, 1, 0), saved

    def cond(c):
        return jnp.any(wanted(c[0], taken))

    # Most steps save nothing: skip the loop then (XLA would otherwise hoist the work
    # of a loop-invariant save, e.g. the one time of `ts=[t1]`, into every step).
    return jax.lax.cond(
        cond((index, saved)),
        lambda c: jax.lax.while_loop(cond, body, c),
        lambda c: c,
        (index, saved),
    )


def advance(make: Callable[..., Integrator], st: State, t_stop, args=(), in_axes=None):
    """Step until every solve passes `t_stop` (the last step may end beyond it) or is
    over: the one time loop of `jaxflow.solve` and `jaxflow.solve_ensemble`.

    One solve: `make()` is its `Integrator`, `st` its state. A batch of seeds
    (`in_axes` given): `make(*args)` is one seed's `Integrator`, `args` mapped over
    the seeds along `in_axes`, and the arrays of `st` carry a leading seed axis. Then
    only the step and the saved rows are vmapped, not the loop: a while loop under
    `jax.vmap` selects its whole carry between old and new every step, including the
    store at `ts` (seeds x times x parameters for deferred metrics), which on a
    64-seed ensemble took a third of the solve. Here a seed that has stopped keeps its
    state, and each save writes one row per seed in place.
    """
    batched = in_axes is not None
    # Per-seed functions take `(args, x, y)`; for a batch, all three are mapped.
    if batched:
        over = lambda fn: eqx.filter_vmap(fn, in_axes=(tuple(in_axes), 0, 0))  # noqa: E731
    else:
        over = lambda fn: fn  # noqa: E731
    saved = st.saved
    st = eqx.tree_at(lambda s: s.saved, st, None)
    dynamic, static = eqx.partition(st, eqx.is_array)

    def goes(a, dynamic, _):
        st = eqx.combine(dynamic, static)
        return make(*a).running(st) & (st.t < t_stop)

    def step(a, dynamic, _):
        new, taken = make(*a).step(eqx.combine(dynamic, static))
        new = eqx.filter(new, eqx.is_array)
        if not batched:  # the loop's condition: this solve goes on
            return new, taken
        go = goes(a, dynamic, None)
        new = jax.tree.map(lambda x, y: jnp.where(go, x, y), new, dynamic)
        return new, eqx.tree_at(lambda t: t.keep, taken, taken.keep & go)

    def wanted(a, i, taken):
        return make(*a).wanted(i, taken)

    def row(a, dynamic, at):
        taken, i = at
        return make(*a).saved_row(eqx.combine(dynamic, static), taken, i)

    def body(carry):
        dynamic, saved = carry
        new, taken = over(step)(args, dynamic, None)
        index, saved = _save(
            lambda i, taken: over(wanted)(args, i, taken),
            lambda i: over(row)(args, dynamic, (taken, i)),
            taken,
            saved,
            dynamic.save_index,
            batched=batched,
        )
        return eqx.tree_at(lambda s: s.save_index, new, index), saved

    def cond(carry):
        return jnp.any(over(goes)(args, carry[0], None))

    dynamic, saved = jax.lax.while_loop(cond, body, (dynamic, saved))
    st = eqx.combine(dynamic, static)
    return eqx.tree_at(lambda s: s.saved, st, saved, is_leaf=lambda x: x is None)
