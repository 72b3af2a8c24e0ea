"""The adaptive time loop behind `jaxflow.solve` and `jaxflow.solve_ensemble`.

A diffrax solver and step-size controller advance the state one step at a time
(`solver.step`, `controller.adapt_step_size`, as `diffrax.diffeqsolve` does); around
them this loop adds what diffeqsolve does not have: a vector field split into smooth
pieces switched at located crossings (`_piecewise`), events whose first times are
located on the dense output, terminal or only recorded, and a state that can be
stopped at any time and continued later, so that a long solve run in segments (and
checkpointed between them) takes exactly the steps of one uninterrupted solve.
"""

from collections.abc import Callable
from typing import Any

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PyTree

from ._roots import first_root
from ._solution import RESULTS
from .events._events import AbstractEvent, as_value


_COUNTS = ("num_steps", "num_accepted_steps", "num_rejected_steps")


def _where_rows(rows: Bool[Array, " times"], value, x: Array) -> Array:
    """`value` in the rows (leading axis) of `x` marked in `rows`, `x` elsewhere."""
    return jnp.where(rows.reshape((-1,) + (1,) * (x.ndim - 1)), value, x)


def _unsaved(dtype) -> Array:
    """What a row of `saved` holds where nothing was saved: inf, or -1 for integers
    (`True` for booleans)."""
    return jnp.asarray(jnp.inf if jnp.issubdtype(dtype, jnp.floating) else -1, dtype)


def _finite(tree) -> Bool[Array, ""]:
    return jnp.all(jnp.array([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


class State(eqx.Module):
    """Everything a solve carries from one step to the next (and across segments)."""

    t: Float[Array, ""]
    tnext: Float[Array, ""]
    y: PyTree
    aux: PyTree  # the piece (activation pattern), or None
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
    ended, and whether it was accepted."""

    interp: dfx.AbstractLocalInterpolation
    t_end: Float[Array, ""]
    keep: Bool[Array, ""]

    def evaluate(self, t):
        return self.interp.evaluate(t)


class Integrator(eqx.Module):
    """One solve's fixed inputs. `init`, then `advance` as often as wanted, then
    `finish`."""

    flow: Any
    static: PyTree
    pieces: Any  # _piecewise.Smooth or _piecewise.Kinks
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

    def _metrics(self, y, metrics):
        model = self._model(y)
        return {name: fn(model, self.flow) for name, fn in metrics.items()}

    def _record(self, y, aux, counts, metrics):
        diagnostics = self.pieces.diagnostics(aux, counts)
        if self.defer_metrics:
            return y, diagnostics
        values = self._metrics(y, metrics) | diagnostics
        return (y if self.save_models else None), values

    def _events_at(self, t, y, reference):
        model = self._model(y)
        return {
            name: as_value(event(t, model, self.flow, reference[name])).astype(t.dtype)
            for name, event in self.events.items()
        }

    def _save_until(self, t_end, evaluate, st: State, go, saved, index):
        ts = self.ts

        def cond(c):
            i, _ = c
            return go & (i < len(ts)) & (ts[jnp.minimum(i, len(ts) - 1)] <= t_end)

        def body(c):
            i, saved = c
            values = self._record(evaluate(ts[i]), st.aux, st.counts, st.metrics)
            return i + 1, jax.tree.map(lambda b, v: b.at[i].set(v), saved, values)

        # Most steps save nothing: skip the loop then (XLA would otherwise hoist the
        # work of a loop-invariant save, e.g. the one time of `ts=[t1]`, into every
        # step).
        return jax.lax.cond(
            cond((index, saved)),
            lambda c: jax.lax.while_loop(cond, body, c),
            lambda c: c,
            (index, saved),
        )

    def init(self, y, metrics: dict[str, Callable]) -> State:
        term = self.pieces.term()
        y, aux, piece_counts, overflow = self.pieces.init(y)
        counts = {name: jnp.array(0) for name in _COUNTS} | piece_counts
        result = RESULTS.where(overflow, RESULTS.kink_overflow, RESULTS.successful)
        result = RESULTS.where(_finite(y), result, RESULTS.nonfinite)
        error_order = self.solver.error_order(term)
        tnext, controller_state = self.controller.init(
            term, self.t0, self.t1, y, self.dt0, aux, self.solver.func, error_order
        )
        tnext = jnp.minimum(tnext, self.t1)
        solver_state = self.solver.init(term, self.t0, tnext, y, aux)

        model = self._model(y)
        reference = {n: e.init(model, self.flow) for n, e in self.events.items()}
        value = self._events_at(self.t0, y, reference)
        time = {n: jnp.where(v <= 0, self.t0, jnp.nan) for n, v in value.items()}
        ended = self._terminal(time, jnp.array(True)) < jnp.inf

        struct = jax.eval_shape(lambda: self._record(y, aux, counts, metrics))
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
        index, saved = self._save_until(
            self.t0, lambda t: y, st, jnp.array(True), saved, jnp.array(0)
        )
        return eqx.tree_at(lambda s: (s.save_index, s.saved), st, (index, saved))

    def _terminal(self, time, new):
        """The time at which a terminal event completed (all components located), if
        it completed in this step (`new`), else inf."""
        t_end = jnp.array(jnp.inf, self.t0.dtype)
        for name, event in self.events.items():
            if event.terminal:
                done = jnp.all(~jnp.isnan(time[name])) & new
                t_end = jnp.minimum(
                    t_end, jnp.where(done, jnp.max(time[name]), jnp.inf)
                )
        return t_end

    def running(self, st: State) -> Bool[Array, ""]:
        return (
            (st.t < self.t1)
            & (st.result == RESULTS.successful)
            & ~st.ended
            & (st.counts["num_steps"] < self.max_steps)
        )

    def _step(self, st: State) -> State:
        new, taken = self.step(st)
        index, saved = self._save_until(
            taken.t_end, taken.evaluate, st, taken.keep, st.saved, st.save_index
        )
        return eqx.tree_at(lambda s: (s.save_index, s.saved), new, (index, saved))

    def saved_row(self, st: State, taken: Taken, i: Int[Array, ""]):
        """What `saved` holds at `ts[i]`, a time within the step `taken` from `st`."""
        return self._record(
            taken.evaluate(self.ts[jnp.minimum(i, len(self.ts) - 1)]),
            st.aux,
            st.counts,
            st.metrics,
        )

    def step(self, st: State) -> tuple[State, Taken]:
        """One attempted step from `st`: the state after it, its saves at `ts` not yet
        made (`saved` as in `st`), and what making them needs."""
        term = self.pieces.term()
        solver, controller = self.solver, self.controller
        y1, y_error, dense, solver_state, solver_result = solver.step(
            term, st.t, st.tnext, st.y, st.aux, st.solver_state, st.made_jump
        )
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
        interp = solver.interpolation_cls(t0=st.t, t1=st.tnext, **dense)

        # A kink crossing cuts the step.
        event, t_end, crossed = self.pieces.cut(st.t, st.tnext, y1, st.aux, interp)
        event = keep & event
        t_end = jnp.where(event, t_end, st.tnext)
        y_end = jax.tree.map(
            lambda a, b: jnp.where(event, a, b), interp.evaluate(t_end), y1
        )

        # Events: locate the first time of each component that turned <= 0.
        value = self._events_at(t_end, y_end, st.event_reference)
        time = {}
        for name, event_fn in self.events.items():
            new = keep & jnp.isnan(st.event_time[name]) & (value[name] <= 0)
            shape = value[name].shape

            def psi(t, name=name, event_fn=event_fn, shape=shape):
                def component(tk, k):
                    return event_fn.component(
                        tk,
                        self._model(interp.evaluate(tk)),
                        self.flow,
                        st.event_reference[name],
                        k,
                    ).astype(tk.dtype)

                flat = jnp.reshape(t, (-1,))
                out = jax.vmap(component)(flat, jnp.arange(flat.size))
                return jnp.reshape(out, shape)

            located = first_root(
                psi, st.t, t_end, st.event_value[name], value[name], new
            )
            time[name] = jnp.where(new, located, st.event_time[name])
        t_stop = self._terminal(time, keep)
        ended = t_stop < jnp.inf
        # Times past a terminal event did not happen.
        time = {n: jnp.where(ended & (x > t_stop), jnp.nan, x) for n, x in time.items()}
        t_end = jnp.where(ended, t_stop, t_end)
        y_end = jax.tree.map(
            lambda a, b: jnp.where(ended, a, b), interp.evaluate(t_end), y_end
        )

        y_end, aux, piece_counts, overflow = self.pieces.switch(
            y_end, st.aux, crossed, event & ~ended, keep
        )

        def pick(a, b):
            return jax.tree.map(lambda x, z: jnp.where(keep, x, z), a, b)

        c = st.counts
        counts = {
            "num_steps": c["num_steps"] + 1,
            "num_accepted_steps": c["num_accepted_steps"] + jnp.where(keep, 1, 0),
            "num_rejected_steps": c["num_rejected_steps"] + jnp.where(keep, 0, 1),
        }
        counts |= {k: c[k] + v for k, v in piece_counts.items()}
        if "num_restarts" in c:
            counts["num_restarts"] = c["num_restarts"] + jnp.where(st.made_jump, 1, 0)
        result = RESULTS.where(keep, RESULTS.promote(solver_result), RESULTS.successful)
        result = RESULTS.where(
            result == RESULTS.successful, RESULTS.promote(controller_result), result
        )
        result = RESULTS.where(overflow, RESULTS.kink_overflow, result)
        result = RESULTS.where(keep & ~_finite(y_end), RESULTS.nonfinite, result)
        step = next_t1 - next_t0
        tnext = jnp.where(event, t_end + step, next_t1)
        new = State(
            t=jnp.where(keep, t_end, st.t),
            tnext=jnp.minimum(tnext, self.t1),
            y=pick(y_end, st.y),
            aux=pick(aux, st.aux),
            solver_state=pick(solver_state, st.solver_state),
            controller_state=controller_state,
            made_jump=jnp.where(keep, event | jump, st.made_jump),
            save_index=st.save_index,
            saved=st.saved,
            counts=counts,
            result=RESULTS.where(st.result == RESULTS.successful, result, st.result),
            ended=ended,
            metrics=st.metrics,
            event_reference=st.event_reference,
            event_value=pick(value, st.event_value),
            event_time=time,
        )
        return new, Taken(interp, t_end, keep)

    def advance(self, st: State, t_stop) -> State:
        """Step until `t_stop` is passed (the last step may end beyond it: steps are
        never clipped there, so segments do not change the trajectory) or the solve is
        over."""
        # The metrics in the state may hold functions: loop over the arrays only.
        dynamic, static = eqx.partition(st, eqx.is_array)

        def cond(dynamic):
            st = eqx.combine(dynamic, static)
            return self.running(st) & (st.t < t_stop)

        def body(dynamic):
            st = self._step(eqx.combine(dynamic, static))
            return eqx.filter(st, eqx.is_array)

        return eqx.combine(jax.lax.while_loop(cond, body, dynamic), static)

    def finish(self, st: State):
        """`saved, final, t_final, counts, result, event_time` of a finished solve."""
        result = RESULTS.where(
            (st.result == RESULTS.successful) & st.ended,
            RESULTS.event_occurred,
            st.result,
        )
        result = RESULTS.where(
            (result == RESULTS.successful) & (st.t < self.t1),
            RESULTS.max_steps_reached,
            result,
        )
        later = jnp.arange(len(self.ts)) >= st.save_index
        saved = st.saved
        if self.defer_metrics:
            ys, diagnostics = saved
            # One time at a time (a vmap over `ts` would hold all their activations).
            # Rows never saved hold inf: evaluate zeros there, then mark them unsaved.
            rows = jax.tree.map(lambda x: _where_rows(later, 0.0, x), ys)
            values = jax.lax.map(lambda y: self._metrics(y, st.metrics), rows)
            values = jax.tree.map(
                lambda x: _where_rows(later, _unsaved(x.dtype), x), values
            )
            saved = (ys if self.save_models else None), values | diagnostics
        # After a terminal event nothing was computed: nan (inf marks a failure).
        saved = jax.tree.map(
            lambda x: (
                _where_rows(st.ended & later, jnp.nan, x)
                if jnp.issubdtype(x.dtype, jnp.floating)
                else x
            ),
            saved,
        )
        return saved, st.y, st.t, st.counts, result, st.event_time
