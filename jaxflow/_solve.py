from typing import Any, Literal

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
from jaxtyping import Array, ArrayLike, Float

from ._custom_types import MetricFn, RealScalarLike
from ._errors import check, describe, is_traced
from ._flow import GradientFlow
from ._integrate import Integrator
from ._kinks import ReLUProblem, supports as supports_min_norm
from ._piecewise import Kinks, Smooth
from ._solution import RESULTS, Solution, succeeded
from .events._events import AbstractEvent, check_events
from .metrics import default_metrics


_FLOAT64_HINT = (
    "Enable float64 before creating the model: `jax.config.update('jax_enable_x64', "
    "True)` (importing jaxflow does this unless JAXFLOW_ENABLE_X64=0 is set)"
)


def _prepare(flow, model, metrics, fname: str):
    """Split `model` into parameter arrays and the rest; pick the metrics."""
    if not isinstance(flow, GradientFlow):
        raise ValueError(
            f"{fname}: `flow` must be a jaxflow.GradientFlow, got {type(flow).__name__}."
            " Build one with `jf.GradientFlow(loss, data)`."
        )
    params, static = eqx.partition(model, eqx.is_inexact_array)
    leaves = jax.tree.leaves(params)
    if not leaves:
        raise ValueError(
            f"{fname}: `model` has no floating-point arrays to evolve, got "
            f"{type(model).__name__}."
        )
    if metrics is None:
        metrics = default_metrics(model, flow)
    elif not isinstance(metrics, dict) or not all(
        callable(m) for m in metrics.values()
    ):
        raise ValueError(
            f"{fname}: `metrics` must be a dict name -> metric(model, flow), got "
            f"{metrics!r}."
        )
    return params, static, metrics


def _check_times(ts: ArrayLike, lo, hi, fname: str, dtype=None) -> Array:
    """`ts` as a 1-D float array inside `[lo, hi]`, non-decreasing. Concrete values are
    checked in NumPy (a solve's set-up should not cost a dozen dispatched JAX ops)."""
    xp = jnp if is_traced(ts, lo, hi) else np
    ts = xp.asarray(ts)
    if dtype is not None:
        ts = ts.astype(dtype)
    elif not xp.issubdtype(ts.dtype, xp.floating):
        ts = ts.astype(float)
    if ts.ndim != 1 or ts.shape[0] == 0:
        raise ValueError(
            f"{fname}: `ts` must be a non-empty 1-D array of times, got shape "
            f"{ts.shape}."
        )
    # Rounding in e.g. `jnp.geomspace(a, t1)` may overshoot t1 by an ulp: clip that.
    slack = 8 * xp.finfo(ts.dtype).eps * xp.maximum(xp.abs(lo), xp.abs(hi))
    bad = (
        (ts < lo - slack)
        | (ts > hi + slack)
        | xp.concatenate([xp.zeros(1, bool), ts[1:] < ts[:-1]])
    )
    return check(
        xp.clip(ts, lo, hi).astype(ts.dtype),
        bad,
        lambda: (
            f"{fname}: `ts` must be non-decreasing and inside [{describe(lo)}, "
            f"{describe(hi)}], got {describe(ts)}."
        ),
    )


def _default_atol(params, rtol):
    """`rtol · max|θ|` (`rtol` where θ = 0), in NumPy when the parameters are
    concrete."""
    leaves = jax.tree.leaves(params)
    if is_traced(leaves):
        scale = jnp.max(jnp.array([jnp.max(jnp.abs(x), initial=0.0) for x in leaves]))
        return rtol * jnp.where(scale > 0, scale, 1.0)
    scale = max(float(np.max(np.abs(x), initial=0.0)) for x in leaves)
    return rtol * (scale if scale > 0 else 1.0)


def _save(params, static, flow, metrics: dict[str, MetricFn], save_models: bool):
    model = eqx.combine(params, static)
    values = {name: fn(model, flow) for name, fn in metrics.items()}
    return (params if save_models else None), values


def _final_status(status, params, flow: GradientFlow, static):
    """Mark non-finite parameters, loss or gradient at the end of a solve."""

    def all_finite(tree):
        return jnp.all(
            jnp.array([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)])
        )

    value, gradient = flow.value_and_gradient(params, static)
    finite = all_finite(params)
    status = RESULTS.where(finite, status, RESULTS.nonfinite)
    bad_gradient = finite & ~(all_finite(gradient) & jnp.isfinite(value))
    return RESULTS.where(bad_gradient, RESULTS.nonfinite_gradient, status)


def _num_vf_evals(solver, num_steps) -> Array:
    """Gradient evaluations made by an explicit Runge-Kutta solver (-1 if unknown).

    Per attempted step, an s-stage tableau costs s evaluations, or s - 1 when the last
    stage is the next step's first (FSAL, e.g. Tsit5), plus one at the start. Checked
    against a counter in the loss for Tsit5, Dopri5, Dopri8 and Heun (tests).
    """
    if isinstance(solver, dfx.AbstractERK):
        tableau = solver.tableau
        stages = len(tableau.c) + 1
        per_step, start = (stages - 1, 1) if tableau.fsal else (stages, 0)
    elif isinstance(solver, dfx.Euler):
        per_step, start = 1, 0
    else:
        return jnp.array(-1)
    return per_step * num_steps + start


def integrator(
    flow,
    params,
    static,
    *,
    t0,
    t1,
    ts,
    solver,
    controller,
    dt0,
    max_steps,
    save_models,
    events,
    min_norm,
    tolerances,
    defer_metrics=False,
) -> Integrator:
    """The time loop of one solve (also one seed of an ensemble)."""
    if min_norm:
        # Unknown tolerances (a controller other than PID): locate every crossing.
        dtype = jnp.result_type(t0)
        rtol, atol = (
            jnp.nan_to_num(jnp.asarray(x, dtype), nan=0.0) for x in tolerances
        )
        problem = ReLUProblem(flow, eqx.combine(params, static))
        pieces = Kinks(problem, rtol, atol)
    else:
        pieces = Smooth(flow, static)
    return Integrator(
        flow=flow,
        static=static,
        pieces=pieces,
        solver=solver,
        controller=controller,
        t0=t0,
        t1=t1,
        ts=ts,
        dt0=dt0,
        events=events,
        max_steps=max_steps,
        save_models=save_models,
        defer_metrics=defer_metrics,
    )


def stats_of(counts, integrator: Integrator) -> dict[str, Array]:
    """The solve's step counts, and the gradient evaluations they cost."""
    solver, controller = integrator.solver, integrator.controller
    stats = dict(counts, max_steps=jnp.asarray(integrator.max_steps))
    extra = 0
    if integrator.dt0 is None and isinstance(
        controller, dfx.AbstractAdaptiveStepSizeController
    ):
        extra = extra + 2  # choosing the first step
    if "num_kink_events" in counts:
        # Restarts re-evaluate a first-same-as-last stage; each kink event (and the
        # start) evaluates the field once more to decide slide or cross.
        fsal = isinstance(solver, dfx.AbstractERK) and solver.tableau.fsal
        extra = extra + counts["num_kink_events"] + 1
        extra = extra + (counts["num_restarts"] if fsal else 0)
    evals = _num_vf_evals(solver, counts["num_steps"])
    stats["num_vf_evals"] = jnp.where(evals >= 0, evals + extra, evals)
    return stats


@eqx.filter_jit
def _solve(flow, params, static, metrics, config):
    loop = integrator(flow, params, static, **config)
    st = loop.init(params, metrics)
    st = loop.advance(st, loop.t1)
    (saved, values), final, t_final, counts, status, event_times = loop.finish(st)
    status = _final_status(status, final, flow, static)
    return saved, values, final, t_final, stats_of(counts, loop), status, event_times


def _root_tolerances(solver, rtol, atol, norm):
    """An implicit solver's Newton tolerances, which diffrax takes from the step-size
    controller by default, as Python numbers: its root finder's arithmetic accepts no
    JAX arrays there, and jaxflow's default `atol` is one. (The largest `atol` where it
    varies; `rtol` for both when they are traced.)"""
    finder = getattr(solver, "root_finder", None)
    if not isinstance(solver, dfx.AbstractImplicitSolver) or not all(
        type(getattr(finder, name, None)).__name__ == "_UseStepSizeTol"
        for name in ("rtol", "atol", "norm")
    ):
        return solver
    try:
        rtol, atol = float(rtol), float(jnp.max(atol))
    except (TypeError, jax.errors.ConcretizationTypeError):
        rtol = atol = 1e-8
    return eqx.tree_at(
        lambda s: (s.root_finder.rtol, s.root_finder.atol, s.root_finder.norm),
        solver,
        (rtol, atol, norm),
    )


def solve(
    flow: GradientFlow,
    model: Any,
    *,
    t1: RealScalarLike,
    t0: RealScalarLike = 0.0,
    ts: Float[ArrayLike, " times"] | None = None,
    rtol: float = 1e-8,
    atol: float | None = None,
    solver: dfx.AbstractSolver | None = None,
    stepsize_controller: dfx.AbstractStepSizeController | None = None,
    dt0: RealScalarLike | None = None,
    max_steps: int = 100_000,
    metrics: dict[str, MetricFn] | None = None,
    save_models: bool = True,
    throw: bool = False,
    kinks: Literal["auto", "min-norm", "plain"] = "auto",
    events: dict[str, AbstractEvent] | None = None,
) -> Solution:
    r"""Integrate the gradient flow $\dot\theta = -\nabla L(\theta)$ from `model` at
    `t0` to `t1` with an adaptive diffrax solver.

    **Arguments:**

    - `flow`: a `jaxflow.GradientFlow`.
    - `model`: the initial point; its floating-point arrays are the parameters.
    - `t1`, `t0`: the time interval (`t0 = 0` by default).
    - `ts`: times at which to save the model and the metrics, non-decreasing inside
        `[t0, t1]`. Defaults to 101 evenly spaced times. Values between steps come from
        the solver's dense output, at the solver's accuracy.
    - `rtol`, `atol`: tolerances of the default PID step-size controller (error per step
        below `atol + rtol |θ|`, elementwise). `atol=None` takes `rtol · max|θ(t0)|`,
        so a small initialisation is resolved to relative accuracy too. `rtol < 1e-6`
        requires float64 parameters.
    - `solver`: a diffrax solver, `diffrax.Tsit5()` by default.
    - `stepsize_controller`: overrides the default
        `diffrax.PIDController(rtol, atol, pcoeff=0.3, icoeff=0.3)`.
    - `dt0`: the first step, chosen automatically by default.
    - `max_steps`: the most steps (accepted and rejected) before stopping with status
        `max_steps_reached`.
    - `metrics`: dict name -> `metric(model, flow)`, evaluated at `ts`;
        `jaxflow.metrics.default_metrics(model, flow)` by default. With `save_models`
        they are evaluated on the stored models after the time loop (compiled once);
        without, inside it, at the steps that pass a time of `ts`.
    - `save_models`: whether to store the model at `ts` (`False` keeps only metrics,
        for long solves).
    - `throw`: raise if the solve did not succeed. By default the status is reported in
        the solution instead, so one failing seed under `jax.vmap` spoils no other.
    - `kinks`: how to treat the kinks of a ReLU network, where $-\nabla L$ jumps.
        - `"min-norm"`: follow the minimum-norm element of the Clarke subdifferential
            (the Filippov sliding velocity on a kink surface): crossings are located on
            the dense output and the step restarted there; pairs that slide stay on
            their surface exactly. Records `num_sliding` and `num_crossings` among the
            metrics and `num_kink_events`, `num_crossings`, `num_slides`, `num_exits`,
            `num_restarts` in `stats`. Needs a `jaxflow.models.TwoLayerReLU`, a
            built-in loss and a `Dataset`.
        - `"plain"`: integrate $-\nabla L$ with $\sigma'(0) = 0$ as it is, step by
            step as `diffrax.diffeqsolve` would; kinks cost rejected steps and sliding
            chatters.
        - `"auto"` (default): `"min-norm"` where it applies, else `"plain"`.
    - `events`: dict name -> `jaxflow.events.AbstractEvent`, e.g.
        `{"stationary": jf.events.SteadyState(1e-6)}`. The first time of each is located
        on the dense output (`sol.event_times[name]`, nan if it did not happen); a
        terminal one ends the solve with status `event_occurred`, which counts as
        success, and the metrics at later `ts` are nan.

    **Returns:**

    A `jaxflow.Solution`: `ts`, `ys`, `final`, `metrics`, `stats`, `status`,
    `event_times`, `rtol`, `atol`, `solver`.

    **Raises:**

    `ValueError` for bad arguments, naming the value received; under `jax.jit`, checks
    on traced values raise at run time instead. With `throw=True`, an error carrying the
    status message if the solve failed.

    !!! Example

        ```python
        sol = jf.solve(flow, net, t1=100.0, rtol=1e-10, ts=jnp.geomspace(1e-3, 100, 50))
        sol.metrics["loss"][-1], sol.stats["num_accepted_steps"], sol.message
        ```
    """
    params, static, metrics = _prepare(flow, model, metrics, "solve")
    events = check_events(events, "solve")
    if kinks not in ("auto", "min-norm", "plain"):
        raise ValueError(
            f"solve: `kinks` must be 'auto', 'min-norm' or 'plain', got {kinks!r}."
        )
    if kinks == "min-norm" and not supports_min_norm(flow, model):
        raise ValueError(
            "solve: kinks='min-norm' needs a jaxflow.models.TwoLayerReLU trained with a "
            "built-in loss (jaxflow.losses) on a jaxflow.Dataset, got model "
            f"{type(model).__name__}, loss {type(flow.loss).__name__}, data "
            f"{type(flow.data).__name__}. Use kinks='plain'."
        )
    min_norm = kinks == "min-norm" or (
        kinks == "auto" and supports_min_norm(flow, model)
    )
    if not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(
            f"solve: `max_steps` must be a positive int, got {max_steps!r}."
        )
    if not rtol > 0:
        raise ValueError(f"solve: `rtol` must be > 0, got {rtol!r}.")
    if atol is not None and not atol >= 0:
        raise ValueError(f"solve: `atol` must be >= 0 or None, got {atol!r}.")
    dtypes = {jnp.result_type(x) for x in jax.tree.leaves(params)}
    low = sorted(str(t) for t in dtypes if jnp.finfo(t).eps > 1e-10)
    if low and rtol < 1e-6:
        raise ValueError(
            f"solve: rtol={rtol!r} needs float64 parameters, but the model has {low} "
            f"arrays, whose precision cannot reach it. {_FLOAT64_HINT}, or use "
            "rtol >= 1e-6."
        )
    # Times in the parameters' precision: diffrax mixes them with the state.
    tdtype = jnp.result_type(*jax.tree.leaves(params))
    traced = is_traced(t0, t1)
    xp = jnp if traced else np
    t0, t1 = xp.asarray(t0, dtype=tdtype), xp.asarray(t1, dtype=tdtype)
    if traced or not t1 > t0:
        t1 = check(
            t1,
            ~(t1 > t0),
            lambda: f"solve: need t1 > t0, got t0={describe(t0)}, t1={describe(t1)}.",
        )
    ts = xp.linspace(t0, t1, 101) if ts is None else ts
    ts = _check_times(ts, t0, t1, "solve", dtype=tdtype)
    # (Concrete times stay NumPy scalars: `_solve` traces them all the same.)
    if atol is None:
        atol = _default_atol(params, rtol)
    if stepsize_controller is None:
        stepsize_controller = dfx.PIDController(
            rtol=rtol, atol=atol, pcoeff=0.3, icoeff=0.3
        )
    if isinstance(stepsize_controller, dfx.PIDController):
        rtol, atol = stepsize_controller.rtol, stepsize_controller.atol
    else:
        rtol = atol = jnp.nan
    solver = _root_tolerances(
        dfx.Tsit5() if solver is None else solver,
        rtol,
        atol,
        getattr(stepsize_controller, "norm", optx.rms_norm),
    )
    config = dict(
        t0=t0,
        t1=t1,
        ts=ts,
        solver=solver,
        controller=stepsize_controller,
        dt0=dt0,
        max_steps=max_steps,
        save_models=save_models,
        events=events,
        min_norm=min_norm,
        tolerances=(rtol, atol),
        # The models at `ts` are stored anyway: evaluate the metrics on them after the
        # loop (compiled once, not at every step that saves).
        defer_metrics=save_models,
    )
    saved, values, final, t_final, stats, status, event_times = _solve(
        flow, params, static, metrics, config
    )
    final = eqx.combine(final, static)
    # (Concrete tolerances as NumPy: two dispatched conversions were 5% of a short solve.)
    tol = jnp if is_traced(rtol, atol) else np
    if throw:
        final = status.error_if(final, ~succeeded(status))
    return Solution(
        ts=ts,
        ys=None if saved is None else eqx.combine(saved, static),
        final=final,
        t_final=t_final,
        metrics=values,
        stats=stats,
        status=status,
        event_times=event_times,
        rtol=tol.asarray(rtol, dtype=float),
        atol=tol.asarray(atol, dtype=float),
        solver=type(config["solver"]).__name__,
    )
