"""A solve's options, checked and resolved in one place for `jaxflow.solve`,
`jaxflow.solve_ensemble` and `jaxflow.gradient_descent`: the flow and model, the
metrics, the times, the tolerances and step-size controller, an implicit solver's
root-finder tolerances, the kink treatment, the precision the tolerances need.
"""

import contextlib
from typing import Any, Literal

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
from jaxtyping import Array, ArrayLike, Float, PyTree

from ._dataset import Dataset
from ._errors import check, describe, describe_tree, is_traced
from ._flow import GradientFlow
from ._integrate import Integrator
from ._kinks import pieces, treatment
from ._stiff import Auto
from .events._events import AbstractEvent, check_events


FLOAT64_HINT = (
    "Enable float64 before creating the model: `jax.config.update('jax_enable_x64', "
    "True)` (importing jaxflow does this unless JAXFLOW_ENABLE_X64=0 is set)"
)


def prepare(flow, model, metrics, fname: str):
    """Split `model` into parameter arrays and the rest, after checking `flow`, the
    model's floating-point dtypes and `metrics` (`None` stays: the defaults,
    `default_metrics`, are made where the solve is compiled, so that `jaxflow.solve`
    and every seed of `jaxflow.solve_ensemble` compute them alike)."""
    if not isinstance(flow, GradientFlow):
        raise ValueError(
            f"{fname}: `flow` must be a jaxflow.GradientFlow, got {type(flow).__name__}."
            " Build one with `jf.GradientFlow(loss, data)`."
        )
    params, static = eqx.partition(model, eqx.is_inexact_array)
    leaves = jax.tree_util.tree_leaves_with_path(params)
    if not leaves:
        raise ValueError(
            f"{fname}: `model` has no floating-point arrays to evolve, got "
            f"{type(model).__name__}."
        )
    dtypes = {}
    for path, x in leaves:
        dtypes.setdefault(str(jnp.result_type(x)), jax.tree_util.keystr(path))
    if len(dtypes) > 1:
        found = ", ".join(f"{t} (e.g. `{p}`)" for t, p in sorted(dtypes.items()))
        raise ValueError(
            f"{fname}: `model` mixes floating-point dtypes: {found}. The solvers "
            "integrate one dtype; cast the model, e.g. `jax.tree.map(lambda x: "
            "x.astype(jnp.float64) if eqx.is_inexact_array(x) else x, model)`."
        )
    data = flow.data
    if isinstance(data, Dataset) and data.X.dtype != leaves[0][1].dtype:
        raise ValueError(
            f"{fname}: `flow.data` is {data.X.dtype} but `model`'s parameters are "
            f"{leaves[0][1].dtype}; the solve runs in one precision. Cast one of them, "
            f"e.g. `jf.Dataset(X.astype(jnp.{leaves[0][1].dtype}), y)`."
        )
    if not is_traced(params):
        for path, x in leaves:
            bad = ~np.isfinite(np.asarray(x))
            if bad.any():
                raise ValueError(
                    f"{fname}: `model` must have finite parameters, but "
                    f"`{jax.tree_util.keystr(path)}` has {int(bad.sum())} inf or nan "
                    f"entries (of {bad.size})."
                )
    if metrics is not None and (
        not isinstance(metrics, dict) or not all(callable(m) for m in metrics.values())
    ):
        raise ValueError(
            f"{fname}: `metrics` must be a dict name -> metric(model, flow), got "
            f"{metrics!r}."
        )
    return params, static, metrics


@contextlib.contextmanager
def explained(fname: str, flow: GradientFlow, model):
    """Around the first trace of a solve: if tracing fails with a `TypeError` or
    `ValueError` and the loss cannot even be evaluated at `model` (say, the data's
    dimension is not the model's), raise a `ValueError` that says so, naming both;
    otherwise let the error propagate. The loss's shapes are evaluated only on failure
    (it costs a trace)."""
    try:
        yield
    except (TypeError, ValueError) as error:
        try:
            value = eqx.filter_eval_shape(flow, model)
        except Exception as e:  # whatever the loss raises on these inputs
            data = flow.data
            shapes = (
                f"X of shape {tuple(data.X.shape)} (inputs of dimension d = {data.d})"
                if isinstance(data, Dataset)
                else describe_tree(data)
            )
            text = str(e).strip()
            first = text.splitlines()[0] if text else type(e).__name__
            raise ValueError(
                f"{fname}: the loss cannot be evaluated at `model` "
                f"{describe_tree(model)} on the data, {shapes}: {first}. Check that "
                "the model's input dimension is the data's."
            ) from error
        if value.shape != ():
            raise ValueError(
                f"{fname}: the loss must return a scalar, got shape {value.shape}."
            ) from error
        raise


def check_times(ts: ArrayLike, lo, hi, fname: str, dtype=None) -> Array:
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
    # (NaN fails every comparison: test `isfinite` explicitly.)
    bad = (
        ~xp.isfinite(ts)
        | (ts < lo - slack)
        | (ts > hi + slack)
        | xp.concatenate([xp.zeros(1, bool), ts[1:] < ts[:-1]])
    )
    return check(
        xp.clip(ts, lo, hi).astype(ts.dtype),
        bad,
        lambda: (
            f"{fname}: `ts` must be finite, non-decreasing and inside "
            f"[{describe(lo)}, {describe(hi)}], got {describe(ts)}."
        ),
    )


def default_atol(params: PyTree, rtol, batched: bool = False):
    """`rtol · max|θ|` (`rtol` where θ = 0): of each seed when `batched` (leading
    axis), in NumPy when the parameters are concrete."""
    leaves = jax.tree.leaves(params)
    xp = jnp if is_traced(leaves, rtol) else np
    # As NumPy arrays: NumPy functions on JAX arrays would dispatch to JAX, and under
    # an outer `jax.jit` (parameters closed over) produce tracers.
    leaves = [xp.asarray(x) for x in leaves]
    rows = [x.reshape((x.shape[0] if batched else 1, -1)) for x in leaves]
    scale = xp.max(
        xp.stack([xp.max(xp.abs(x), axis=1, initial=0.0) for x in rows]), axis=0
    )
    atol = rtol * xp.where(scale > 0, scale, 1.0)
    return atol if batched else atol[0]


def _uses_step_size_tolerances(solver) -> bool:
    """Whether `solver` is implicit with diffrax's default root-finder tolerances
    (`_UseStepSizeTol`: the step-size controller's, which only `diffrax.diffeqsolve`
    fills in)."""
    finder = getattr(solver, "root_finder", None)
    return isinstance(solver, dfx.AbstractImplicitSolver) and all(
        type(getattr(finder, name, None)).__name__ == "_UseStepSizeTol"
        for name in ("rtol", "atol", "norm")
    )


def _with_root_tolerances(solver, rtol, atol, norm):
    """`solver` with its Newton tolerances those of the step-size controller, where it
    takes them from there (for `solver="auto"`, its implicit solver's)."""
    if isinstance(solver, Auto):
        implicit = _with_root_tolerances(solver.implicit, rtol, atol, norm)
        return eqx.tree_at(lambda s: s.implicit, solver, implicit)
    if not _uses_step_size_tolerances(solver):
        return solver
    return eqx.tree_at(
        lambda s: (s.root_finder.rtol, s.root_finder.atol, s.root_finder.norm),
        solver,
        (rtol, jnp.max(jnp.asarray(atol)), norm),
    )


class Options(eqx.Module):
    """What a solve runs with, checked (`resolve`); one per solve, shared by the seeds
    of an ensemble, which differ in their `atol` only."""

    t0: Float[Array, ""]
    t1: Float[Array, ""]
    ts: Float[Array, " times"]
    rtol: Any
    atol: Any  # as given: `None` is `default_atol` of each seed
    solver: dfx.AbstractSolver
    stepsize_controller: dfx.AbstractStepSizeController | None
    dt0: Any
    events: dict[str, AbstractEvent]
    max_steps: int = eqx.field(static=True)
    # "min-norm": the two-layer specialization; "general": `_sliding`, any network.
    kinks: Literal["min-norm", "general", "plain"] = eqx.field(static=True)

    def controller(self, atol) -> dfx.AbstractStepSizeController:
        """The step-size controller: the user's, or the default PID controller."""
        if self.stepsize_controller is not None:
            return self.stepsize_controller
        return dfx.PIDController(rtol=self.rtol, atol=atol, pcoeff=0.3, icoeff=0.3)

    def tolerances(self, atol) -> tuple[Any, Any]:
        """The controller's `(rtol, atol)`, nan where it has none (not a PID)."""
        controller = self.stepsize_controller
        if controller is None:  # the default PID controller
            return self.rtol, atol
        if isinstance(controller, dfx.PIDController):
            return controller.rtol, controller.atol
        return jnp.nan, jnp.nan

    def integrator(
        self, flow, params, static, atol, *, save_models: bool, defer_metrics: bool
    ) -> Integrator:
        """The time loop of one solve (one seed of an ensemble, `params` its
        parameters, of which only the structure is used) with tolerance `atol`."""
        controller = self.controller(atol)
        rtol, atol = self.tolerances(atol)
        norm = getattr(controller, "norm", optx.rms_norm)
        solver = _with_root_tolerances(self.solver, rtol, atol, norm)
        # Unknown tolerances (a controller other than PID) count as zero: every
        # crossing located, no control left unresolved for being immaterial.
        dtype = jnp.result_type(self.t0)
        rtol, atol = (
            jnp.nan_to_num(jnp.asarray(x, dtype), nan=0.0) for x in (rtol, atol)
        )
        return Integrator(
            flow=flow,
            static=static,
            pieces=pieces(
                self.kinks, flow, params, static, self.t1 - self.t0, rtol, atol
            ),
            solver=solver,
            controller=controller,
            t0=self.t0,
            t1=self.t1,
            ts=self.ts,
            dt0=self.dt0,
            events=self.events,
            max_steps=self.max_steps,
            save_models=save_models,
            defer_metrics=defer_metrics,
        )


def resolve(
    fname: str,
    flow: GradientFlow,
    model,
    params: PyTree,
    *,
    t0,
    t1,
    ts,
    rtol,
    atol,
    solver,
    stepsize_controller,
    dt0,
    max_steps,
    kinks,
    events,
) -> Options:
    """Check a solve's arguments and resolve their defaults (`model`: one seed's
    initial point, `params` its parameter arrays)."""
    events = check_events(events, fname)
    kinks = treatment(flow, model, kinks, fname)
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(
            f"{fname}: `max_steps` must be a positive int, got {max_steps!r}."
        )
    # Times in the parameters' precision: diffrax mixes them with the state.
    dtype = jnp.result_type(*jax.tree.leaves(params))
    if atol is not None and not is_traced(atol) and not 0 <= atol < np.inf:
        raise ValueError(
            f"{fname}: `atol` must be finite and >= 0, or None, got {atol!r}."
        )
    if not is_traced(rtol) and 0 < rtol < 1e-6 and jnp.finfo(dtype).eps > 1e-10:
        raise ValueError(
            f"{fname}: rtol={rtol!r} needs float64 parameters, but the model has "
            f"{dtype} arrays, whose precision cannot reach it. {FLOAT64_HINT}, or use "
            "rtol >= 1e-6."
        )
    # (Tolerances may be traced, e.g. to solve at several without recompiling.)
    if not is_traced(rtol) and not 10 * jnp.finfo(dtype).eps <= rtol < np.inf:
        raise ValueError(
            f"{fname}: `rtol` must be finite and at least 10 eps of the parameters' "
            f"{jnp.dtype(dtype).name} ({10 * float(jnp.finfo(dtype).eps):.1e}), got "
            f"{rtol!r}."
        )
    # Tolerances given as arrays (say, to solve at several without recompiling) in
    # the parameters' precision; Python floats are weakly typed already.
    if not isinstance(rtol, float | int):
        rtol = (jnp if is_traced(rtol) else np).asarray(rtol, dtype)
    if atol is not None and not isinstance(atol, float | int):
        atol = (jnp if is_traced(atol) else np).asarray(atol, dtype)
    traced = is_traced(t0, t1)
    xp = jnp if traced else np
    t0, t1 = xp.asarray(t0, dtype=dtype), xp.asarray(t1, dtype=dtype)
    bad = ~(xp.isfinite(t0) & xp.isfinite(t1) & (t1 > t0))
    if traced or bad:
        t1 = check(
            t1,
            bad,
            lambda: (
                f"{fname}: need finite t0 < t1, got t0={describe(t0)}, "
                f"t1={describe(t1)}."
            ),
        )
    ts = xp.linspace(t0, t1, 101) if ts is None else ts
    if isinstance(solver, str) and solver == "auto":
        solver = Auto()
    solver = dfx.Tsit5() if solver is None else solver
    if not isinstance(solver, dfx.AbstractSolver):
        raise ValueError(
            f"{fname}: `solver` must be a diffrax solver or 'auto', got {solver!r}."
        )
    implicit = solver.implicit if isinstance(solver, Auto) else solver
    if _uses_step_size_tolerances(implicit) and not isinstance(
        stepsize_controller, None | dfx.PIDController
    ):
        raise ValueError(
            f"{fname}: the implicit solver {type(implicit).__name__} takes its Newton "
            "tolerances from the step-size controller, and "
            f"{type(stepsize_controller).__name__} has none. Give the solver a root "
            "finder with tolerances, e.g. `root_finder=optimistix.Newton(rtol=1e-8, "
            "atol=1e-8)`."
        )
    return Options(
        t0=t0,
        t1=t1,
        ts=check_times(ts, t0, t1, fname, dtype=dtype),
        rtol=rtol,
        atol=atol,
        solver=solver,
        stepsize_controller=stepsize_controller,
        dt0=dt0,
        events=events,
        max_steps=max_steps,
        kinks=kinks,
    )
