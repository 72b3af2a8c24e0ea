from typing import Any, Literal

import diffrax as dfx
import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike, Float

from ._custom_types import MetricFn, RealScalarLike
from ._errors import is_traced
from ._flow import GradientFlow
from ._options import Options, default_atol, explained, prepare, resolve
from ._solution import RESULTS, Solution, status_name, succeeded
from .events._events import AbstractEvent
from .metrics import default_metrics


@eqx.filter_jit
def _solve(flow, params, static, metrics, options: Options, atol, save_models: bool):
    if metrics is None:
        metrics = default_metrics(eqx.combine(params, static), flow)
    # With `save_models` the models at `ts` are stored anyway: evaluate the metrics on
    # them after the loop (compiled once, not at every step that saves).
    loop = options.integrator(
        flow,
        params,
        static,
        atol,
        save_models=save_models,
        defer_metrics=save_models,
    )
    return loop.finish(loop.advance(loop.init(params, metrics), loop.t1))


def solve(
    flow: GradientFlow,
    model: Any,
    *,
    t1: RealScalarLike,
    t0: RealScalarLike = 0.0,
    ts: Float[ArrayLike, " times"] | None = None,
    rtol: float = 1e-8,
    atol: float | None = None,
    solver: dfx.AbstractSolver | Literal["auto"] | None = None,
    stepsize_controller: dfx.AbstractStepSizeController | None = None,
    dt0: RealScalarLike | None = None,
    max_steps: int = 100_000,
    metrics: dict[str, MetricFn] | None = None,
    save_models: bool = True,
    throw: bool = False,
    kinks: Literal["auto", "min-norm", "general", "plain"] = "auto",
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
    - `solver`: a diffrax solver, `diffrax.Tsit5()` by default; or `"auto"`: Tsit5
        until the flow is stiff, then Kvaerno5 (the switch time in
        `stats["stiff_from"]`; `jaxflow._stiff.Auto`).
    - `stepsize_controller`: overrides the default
        `diffrax.PIDController(rtol, atol, pcoeff=0.3, icoeff=0.3)`.
    - `dt0`: the first step, chosen automatically by default.
    - `max_steps`: the most steps (accepted and rejected) before stopping with status
        `max_steps_reached`.
    - `metrics`: dict name -> `metric(model, flow)`, evaluated at `ts`;
        `jaxflow.metrics.default_metrics(model, flow)` by default. With `save_models`
        they are evaluated on the stored models after the time loop (compiled once);
        without, inside it, at the steps that pass a time of `ts`. The `flow` they
        get answers `min_norm_gradient` with minus the velocity the solve follows
        at that time (its piece's field, sliding pairs included).
    - `save_models`: whether to store the model at `ts` (`False` keeps only metrics,
        for long solves).
    - `throw`: raise if the solve did not succeed: a `RuntimeError` naming the status,
        its message and the time reached (under `jax.jit` or `jax.vmap`, an
        `equinox.error_if` at run time). By default the status is reported in the
        solution instead, so one failing seed under `jax.vmap` spoils no other.
    - `kinks`: how to treat the kinks of a ReLU network, where $-\nabla L$ jumps.
        - `"min-norm"`: follow the minimum-norm element of the Clarke subdifferential
            (the Filippov sliding velocity on a kink surface): crossings are located on
            the dense output and the step restarted there; pairs that slide stay on
            their surface exactly. Records `num_sliding` and `num_crossings` among the
            metrics and `num_kink_events`, `num_crossings`, `num_slides`, `num_exits`,
            `num_restarts` in `stats`. For a `jaxflow.models.TwoLayerReLU`, or a
            `jaxflow.models.MLP` with one hidden ReLU layer (any number of outputs, an
            output bias), with a built-in loss on a `Dataset`, the two-layer rule
            (`_kinks`); for any other
            network whose loss calls `jax.nn.relu` or `jax.nn.leaky_relu` (an `MLP`,
            `eqx.nn.MLP(..., activation=jax.nn.relu)`, a module of your own), the
            equivalent control of Filippov sliding through every layer (`_sliding`),
            which on a two-layer net is the same flow.
        - `"general"`: the second mechanism even for a `TwoLayerReLU` (to cross-check
            the two).
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
    on traced values raise at run time instead. With `throw=True`, a `RuntimeError`
    carrying the status message if the solve failed.

    !!! Example

        ```python
        sol = jf.solve(flow, net, t1=100.0, rtol=1e-10, ts=jnp.geomspace(1e-3, 100, 50))
        sol.metrics["loss"][-1], sol.stats["num_accepted_steps"], sol.message
        ```
    """
    params, static, metrics = prepare(flow, model, metrics, "solve")
    options = resolve(
        "solve",
        flow,
        model,
        params,
        t0=t0,
        t1=t1,
        ts=ts,
        rtol=rtol,
        atol=atol,
        solver=solver,
        stepsize_controller=stepsize_controller,
        dt0=dt0,
        max_steps=max_steps,
        kinks=kinks,
        events=events,
    )
    atol = default_atol(params, options.rtol) if options.atol is None else options.atol
    with explained("solve", flow, model):
        out = _solve(flow, params, static, metrics, options, atol, save_models)
    final = eqx.combine(out.final, static)
    if throw:
        if is_traced(out.status._value):
            final = out.status.error_if(final, ~succeeded(out.status))
        elif not succeeded(out.status):
            # Concrete: raise here, with the status first (not below a JIT traceback).
            name = status_name(out.status)
            raise RuntimeError(
                f"solve: the solve failed at t={float(out.t_final):.6g} (t1="
                f"{float(options.t1):.6g}) with status {name}: {RESULTS[out.status]}"
            )
    rtol, atol = options.tolerances(atol)
    # (Concrete tolerances as NumPy: two dispatched conversions were 5% of a short solve.)
    xp = jnp if is_traced(rtol, atol) else np
    return Solution(
        ts=options.ts,
        ys=None if out.ys is None else eqx.combine(out.ys, static),
        final=final,
        t_final=out.t_final,
        metrics=out.metrics,
        stats=out.stats,
        status=out.status,
        event_times=out.event_times,
        rtol=xp.asarray(rtol, dtype=float),
        atol=xp.asarray(atol, dtype=float),
        solver=type(options.solver).__name__,
    )
