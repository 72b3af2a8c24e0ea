"""Adaptive integration of the minimum-norm ReLU flow, one smooth piece at a time.

Each step integrates the smooth continuation of the current piece (`_kinks.field`) with a
diffrax solver and step-size controller. After an accepted step, any pair whose
pre-activation changed sign against the piece marks a crossing: the first one is located
on the step's dense output (Illinois root finding), the step is cut there, the pairs at
the crossing are moved onto the kink exactly, and the minimum-norm field decides whether
each slides along it or passes to the other side. Kinks therefore cost a cut step and a
restart instead of a cascade of rejected steps, and sliding pairs stay on their surface
(the field is tangent to it, which Runge-Kutta steps preserve to rounding) instead of
chattering across it.
"""

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from ._kinks import (
    RELEASE,
    Pattern,
    ReLUProblem,
    field,
    forward,
    neurons,
    pair_scale,
    pattern_at,
    slot_values,
    slots_of,
)
from ._solution import RESULTS


_COUNTS = (
    "num_steps",
    "num_accepted_steps",
    "num_rejected_steps",
    "num_restarts",
    "num_events",
    "num_crossings",
    "num_slides",
    "num_exits",
    "num_small_crossings",
)


class _State(eqx.Module):
    t: Float[Array, ""]
    tnext: Float[Array, ""]
    y: object
    pattern: Pattern
    solver_state: object
    controller_state: object
    made_jump: Bool[Array, ""]
    save_index: Array
    saved: object
    counts: dict
    result: RESULTS


def _first_root(psi, lo, hi, f_lo, f_hi, search):
    """The first zero of `psi` in `[lo, hi]`, given `f_lo >= 0 > f_hi`, by the Illinois
    variant of regula falsi. Returns the right end of the final bracket, where
    `psi <= 0`. Does nothing unless `search`."""
    tol = 4 * jnp.finfo(lo.dtype).eps * jnp.maximum(jnp.abs(lo), jnp.abs(hi))

    def cond(c):
        lo, hi, _, _, _, it = c
        return search & (it < 100) & (hi - lo > tol)

    def body(c):
        lo, hi, f_lo, f_hi, side, it = c
        t = (lo * f_hi - hi * f_lo) / (f_hi - f_lo)
        t = jnp.where((t > lo) & (t < hi), t, 0.5 * (lo + hi))
        f = psi(t)
        left = f <= 0  # the root is in [lo, t]
        f_lo = jnp.where(left & (side == -1), 0.5 * f_lo, f_lo)
        f_hi = jnp.where(~left & (side == 1), 0.5 * f_hi, f_hi)
        lo, f_lo = jnp.where(left, lo, t), jnp.where(left, f_lo, f)
        hi, f_hi = jnp.where(left, t, hi), jnp.where(left, f, f_hi)
        return lo, hi, f_lo, f_hi, jnp.where(left, -1, 1), it + 1

    init = (lo, hi, jnp.maximum(f_lo, 0.0), f_hi, jnp.array(0), jnp.array(0))
    return jax.lax.while_loop(cond, body, init)[1]


def solve_piecewise(
    flow,
    params,
    static,
    metrics,
    t0,
    t1,
    ts,
    solver,
    controller,
    dt0,
    max_steps,
    save_models,
    save,
    rtol,
    atol,
):
    """The loop of `jaxflow.solve(kinks="min-norm")`; same inputs and outputs as its
    plain counterpart, plus the pattern diagnostics in `metrics` and `stats`."""
    problem = ReLUProblem(flow, eqx.combine(params, static))
    X = problem.inputs
    term = dfx.ODETerm(
        lambda t, y, pattern: jax.tree.map(
            jnp.negative, field(y, pattern, problem).gradient
        )
    )
    error_order = solver.error_order(term)

    def excess(y, pattern):
        """Pre-activations signed so that positive agrees with `pattern`."""
        Z = X @ neurons(y).T
        return jnp.where(pattern.active, Z, -Z) / problem.norms[:, None]

    def settle(y, pattern, new):
        """Put the pairs `new` (at z = 0) on their kink if the minimum-norm field
        slides along it, else on the side it moves them to."""
        on = pattern.on_kink() | new
        slots, overflow = slots_of(on)
        trial = Pattern(active=pattern.active & ~new, slots=slots)
        F = field(y, trial, problem)
        zdot = -(X @ neurons(F.gradient).T)
        s = slot_values(slots, F.multipliers, zdot)
        slide = new & (s > 0) & (s < 1)
        leave = new & ~slide
        up = jnp.where(zdot != 0, zdot > 0, s >= 0.5)
        slots, _ = slots_of(on & ~leave)
        pattern = Pattern(active=trial.active | (leave & up), slots=slots)
        return pattern, overflow, jnp.sum(leave), jnp.sum(slide)

    def onto_kinks(y, new):
        """Move the neurons so that z_ij = 0 exactly for the pairs `new`."""
        Z = X @ neurons(y).T
        U = neurons(y) - jnp.where(new, Z / problem.norms[:, None] ** 2, 0.0).T @ X
        if y.b is None:
            return eqx.tree_at(lambda m: m.W, y, U)
        d = y.W.shape[1]
        return eqx.tree_at(lambda m: (m.W, m.b), y, (U[:, :d], U[:, d]))

    def release(y, pattern):
        """Pairs on a kink whose pre-activation has grown away from zero leave it."""
        Z = X @ neurons(y).T
        on = pattern.on_kink()
        gone = on & (jnp.abs(Z) > RELEASE * pair_scale(y, problem))
        slots, _ = slots_of(on & ~gone)
        return Pattern(pattern.active | (gone & (Z > 0)), slots), jnp.sum(gone)

    def record(y, index, pattern, counts, saved):
        values = save(y, static, flow, metrics, save_models) + (
            {
                "num_sliding": jnp.sum(pattern.slots >= 0),
                "num_crossings": counts["num_crossings"],
            },
        )
        return jax.tree.map(lambda b, v: b.at[index].set(v), saved, values)

    # Pairs that start on a kink are settled like a crossing at t0.
    pattern, overflow = pattern_at(params, problem, RELEASE)
    params = onto_kinks(params, pattern.on_kink())
    pattern, more, crossings, slides = settle(params, pattern, pattern.on_kink())
    counts = {name: jnp.array(0) for name in _COUNTS}
    counts["num_crossings"], counts["num_slides"] = crossings, slides
    result = RESULTS.where(overflow | more, RESULTS.kink_overflow, RESULTS.successful)

    tnext, controller_state = controller.init(
        term, t0, t1, params, dt0, pattern, solver.func, error_order
    )
    tnext = jnp.minimum(tnext, t1)
    solver_state = solver.init(term, t0, tnext, params, pattern)

    struct = jax.eval_shape(
        lambda: (
            save(params, static, flow, metrics, save_models)
            + ({"num_sliding": jnp.array(0), "num_crossings": jnp.array(0)},)
        )
    )
    saved = jax.tree.map(
        lambda x: jnp.full(
            (len(ts),) + x.shape,
            jnp.inf if jnp.issubdtype(x.dtype, jnp.floating) else -1,
            x.dtype,
        ),
        struct,
    )

    def save_until(t_end, evaluate, pattern, counts, index, saved, go):
        def cond(c):
            i, _ = c
            return go & (i < len(ts)) & (ts[jnp.minimum(i, len(ts) - 1)] <= t_end)

        def body(c):
            i, saved = c
            return i + 1, record(evaluate(ts[i]), i, pattern, counts, saved)

        return jax.lax.while_loop(cond, body, (index, saved))

    save_index, saved = save_until(
        t0, lambda t: params, pattern, counts, jnp.array(0), saved, jnp.array(True)
    )

    def body(st: _State) -> _State:
        y1, y_error, dense, solver_state, solver_result = solver.step(
            term, st.t, st.tnext, st.y, st.pattern, st.solver_state, st.made_jump
        )
        y_error = jax.tree.map(lambda e: jnp.where(jnp.isnan(e), jnp.inf, e), y_error)
        keep, next_t0, next_t1, _, controller_state, controller_result = (
            controller.adapt_step_size(
                st.t,
                st.tnext,
                st.y,
                y1,
                st.pattern,
                y_error,
                error_order,
                st.controller_state,
            )
        )
        interp = solver.interpolation_cls(t0=st.t, t1=st.tnext, **dense)

        # The first pair to change sign against the piece, if any. Crossings whose
        # jumps in the field, held over the whole step, add up to less than half the
        # error the controller allows (same scaled RMS norm) are not worth locating:
        # those pairs just change side at the end of the step.
        Z1, _, _, r1 = forward(y1, st.pattern, problem)
        # Within the release band a pair counts as on its kink, whatever its sign
        # (rounding leaves |z| ~ 1e-19 on a neuron that stopped there).
        band = RELEASE * pair_scale(y1, problem)
        crossed = ~st.pattern.on_kink() & (
            jnp.where(st.pattern.active, Z1, -Z1) < -band
        )
        weight = (atol + rtol * jnp.abs(neurons(y1))) ** -2
        size = sum(x.size for x in jax.tree.leaves(y1))
        error = ((r1[:, None] * y1.v[None, :]) * (st.tnext - st.t)) ** 2 * (
            X**2 @ weight.T
        )
        budget = 0.25 * size / jnp.maximum(jnp.sum(crossed), 1).astype(error.dtype)
        crossed = crossed & (error > budget)
        event = keep & jnp.any(crossed)

        def psi(t):
            e = excess(interp.evaluate(t), st.pattern)
            return jnp.min(jnp.where(crossed, e, jnp.inf))

        # psi(t0) costs a pre-activation pass: only when there is a crossing.
        f0 = jax.lax.cond(event, lambda: psi(st.t), lambda: jnp.zeros_like(st.t))
        signed = jnp.where(st.pattern.active, Z1, -Z1) / problem.norms[:, None]
        f1 = jnp.min(jnp.where(crossed, signed, jnp.inf))
        t_cut = _first_root(psi, st.t, st.tnext, f0, f1, event)
        t_end = jnp.where(event, t_cut, st.tnext)
        y_end = jax.tree.map(
            lambda a, b: jnp.where(event, a, b), interp.evaluate(t_end), y1
        )

        save_index, saved = save_until(
            t_end,
            interp.evaluate,
            st.pattern,
            st.counts,
            st.save_index,
            st.saved,
            keep,
        )

        # The new piece.
        pattern, exits = release(y_end, st.pattern)
        # Pairs within the release distance of their kink go along (near-copies of a
        # neuron reach a kink together).
        norms = jnp.linalg.norm(neurons(y_end), axis=1)
        near = excess(y_end, st.pattern) <= RELEASE * norms[None, :]
        new = crossed & near & event
        y_end = onto_kinks(y_end, new)
        pattern, overflow, crossings, slides = jax.lax.cond(
            event,
            settle,
            lambda y, pattern, new: (pattern, False, jnp.array(0), jnp.array(0)),
            y_end,
            pattern,
            new,
        )
        # Pairs that crossed with a small jump change side.
        flip = (
            ~pattern.on_kink()
            & ~new
            & (excess(y_end, pattern) * problem.norms[:, None] < -band)
        )
        pattern = Pattern(pattern.active ^ flip, pattern.slots)

        def pick(a, b):
            return jax.tree.map(lambda x, z: jnp.where(keep, x, z), a, b)

        c = st.counts
        counts = {
            "num_steps": c["num_steps"] + 1,
            "num_accepted_steps": c["num_accepted_steps"] + jnp.where(keep, 1, 0),
            "num_rejected_steps": c["num_rejected_steps"] + jnp.where(keep, 0, 1),
            "num_restarts": c["num_restarts"] + jnp.where(st.made_jump, 1, 0),
            "num_events": c["num_events"] + jnp.where(event, 1, 0),
            "num_crossings": c["num_crossings"] + crossings,
            "num_slides": c["num_slides"] + slides,
            "num_exits": c["num_exits"] + jnp.where(keep, exits, 0),
            "num_small_crossings": c["num_small_crossings"]
            + jnp.where(keep, jnp.sum(flip), 0),
        }
        result = RESULTS.where(keep, RESULTS.promote(solver_result), RESULTS.successful)
        result = RESULTS.where(
            result == RESULTS.successful, RESULTS.promote(controller_result), result
        )
        result = RESULTS.where(overflow, RESULTS.kink_overflow, result)
        t_new = jnp.where(keep, t_end, st.t)
        step = next_t1 - next_t0
        tnext = jnp.where(keep & event, t_end + step, next_t1)
        tnext = jnp.minimum(tnext, t1)
        return _State(
            t=t_new,
            tnext=tnext,
            y=pick(y_end, st.y),
            pattern=pick(pattern, st.pattern),
            solver_state=pick(solver_state, st.solver_state),
            controller_state=controller_state,
            made_jump=jnp.where(keep, event, st.made_jump),
            save_index=save_index,
            saved=saved,
            counts=counts,
            result=RESULTS.where(st.result == RESULTS.successful, result, st.result),
        )

    def cond(st: _State):
        return (
            (st.t < t1)
            & (st.result == RESULTS.successful)
            & (st.counts["num_steps"] < max_steps)
        )

    init = _State(
        t=t0,
        tnext=tnext,
        y=params,
        pattern=pattern,
        solver_state=solver_state,
        controller_state=controller_state,
        made_jump=jnp.array(False),
        save_index=save_index,
        saved=saved,
        counts=counts,
        result=result,
    )
    st = jax.lax.while_loop(cond, body, init)
    result = RESULTS.where(
        (st.result == RESULTS.successful) & (st.t < t1),
        RESULTS.max_steps_reached,
        st.result,
    )
    return st.saved, st.y, st.t, st.counts, result
