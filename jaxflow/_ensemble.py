"""`solve_ensemble`: many seeds, in vmapped chunks, over segments of time."""

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from . import _rundir
from ._custom_types import MetricFn
from ._errors import describe
from ._flow import GradientFlow
from ._kinks import supports as supports_min_norm
from ._results import Ensemble
from ._solution import RESULTS
from ._solve import _check_times, _final_status, _prepare, integrator, stats_of
from .events._events import AbstractEvent, check_events
from .metrics import default_metrics


# The most memory a chunk may use to hold its parameters at `ts` for deferred metrics.
_DEFER_BYTES = 512 * 2**20


class _Setup(eqx.Module):
    """What every seed's solve shares (static) besides its flow and state."""

    t0: Float[Array, ""]
    t1: Float[Array, ""]
    ts: Float[Array, " times"]
    rtol: float = eqx.field(static=True)
    solver: dfx.AbstractSolver
    controller: dfx.AbstractStepSizeController | None
    dt0: Any
    max_steps: int = eqx.field(static=True)
    save_models: bool = eqx.field(static=True)
    defer_metrics: bool = eqx.field(static=True)
    events: dict[str, AbstractEvent]
    min_norm: bool = eqx.field(static=True)
    metrics: dict[str, MetricFn] | None
    static: Any

    def loop(self, flow, params, atol):
        if self.controller is None:
            controller = dfx.PIDController(
                rtol=self.rtol, atol=atol, pcoeff=0.3, icoeff=0.3
            )
            tolerances = (self.rtol, atol)
        else:
            controller = self.controller
            if isinstance(controller, dfx.PIDController):
                tolerances = (controller.rtol, controller.atol)
            else:
                tolerances = (jnp.nan, jnp.nan)
        return integrator(
            flow,
            params,
            self.static,
            t0=self.t0,
            t1=self.t1,
            ts=self.ts,
            solver=self.solver,
            controller=controller,
            dt0=self.dt0,
            max_steps=self.max_steps,
            save_models=self.save_models,
            events=self.events,
            min_norm=self.min_norm,
            tolerances=tolerances,
            defer_metrics=self.defer_metrics,
        )


# Seeds are vmapped; `flow` is vmapped too when it varies over seeds (axis 0) or shared
# (None). Compiled once per chunk size.
@eqx.filter_jit
def _init(setup: _Setup, flow, params, atol, flow_axis):
    def one(flow, params, atol):
        model = eqx.combine(params, setup.static)
        metrics = (
            default_metrics(model, flow) if setup.metrics is None else setup.metrics
        )
        return setup.loop(flow, params, atol).init(params, metrics)

    return eqx.filter_vmap(one, in_axes=(flow_axis, 0, 0))(flow, params, atol)


@eqx.filter_jit
def _advance(setup: _Setup, flow, dynamic, static, atol, t_stop, flow_axis):
    """Step every seed of a chunk until it passes `t_stop` or its solve is over: the
    seeds' `Integrator.advance`, with the loop over steps written for the whole chunk.

    A while loop under `jax.vmap` selects its whole carry between old and new every
    step, for the seeds that have stopped. The carry includes the store at `ts`
    (seeds x times x parameters for deferred metrics): on separable n=200, width 50,
    64 seeds and 50 times, that select was 30% of the solve. Here only the step is
    vmapped, and each save writes its one row per seed in place.
    """
    vmap = lambda fn: eqx.filter_vmap(fn, in_axes=(flow_axis, 0, 0))  # noqa: E731

    def prepared(flow, dynamic, atol):
        st = eqx.combine(dynamic, static)
        loop = setup.loop(flow, st.y, atol)
        return st, loop, loop.running(st) & (st.t < t_stop)

    def step(flow, dynamic, atol):
        st, loop, go = prepared(flow, dynamic, atol)
        new, taken = loop.step(st)
        new = jax.tree.map(
            lambda a, b: jnp.where(go, a, b), eqx.filter(new, eqx.is_array), dynamic
        )
        return new, eqx.tree_at(lambda t: t.keep, taken, taken.keep & go)

    def row(flow, dynamic, atol, taken, i):
        st, loop, _ = prepared(flow, dynamic, atol)
        return loop.saved_row(st, taken, i)

    times = setup.ts

    def body(carry):
        dynamic, saved = carry
        new, taken = vmap(step)(flow, dynamic, atol)

        def wanted(i):
            before = times[jnp.minimum(i, len(times) - 1)] <= taken.t_end
            return taken.keep & (i < len(times)) & before

        def save(c):
            i, saved = c
            values = eqx.filter_vmap(row, in_axes=(flow_axis, 0, 0, 0, 0))(
                flow, dynamic, atol, taken, i
            )
            rows = jnp.where(wanted(i), i, len(times))  # out of range: dropped
            saved = jax.tree.map(
                lambda b, v: jax.vmap(lambda b, v, j: b.at[j].set(v, mode="drop"))(
                    b, v, rows
                ),
                saved,
                values,
            )
            return i + jnp.where(wanted(i), 1, 0), saved

        index, saved = jax.lax.while_loop(
            lambda c: jnp.any(wanted(c[0])), save, (dynamic.save_index, saved)
        )
        return eqx.tree_at(lambda s: s.save_index, new, index), saved

    def cond(carry):
        return jnp.any(vmap(lambda *a: prepared(*a)[2])(flow, carry[0], atol))

    saved = dynamic.saved
    dynamic = eqx.tree_at(lambda s: s.saved, dynamic, None)
    static = eqx.tree_at(lambda s: s.saved, static, None)
    dynamic, saved = jax.lax.while_loop(cond, body, (dynamic, saved))
    return eqx.tree_at(lambda s: s.saved, dynamic, saved, is_leaf=lambda x: x is None)


@eqx.filter_jit
def _finish(setup: _Setup, flow, dynamic, static, atol, flow_axis):
    def one(flow, dynamic, atol):
        st = eqx.combine(dynamic, static)
        loop = setup.loop(flow, st.y, atol)
        (saved, values), final, t_final, counts, status, times = loop.finish(st)
        status = _final_status(status, final, flow, setup.static)
        return saved, values, final, t_final, stats_of(counts, loop), status, times

    return eqx.filter_vmap(one, in_axes=(flow_axis, 0, 0))(flow, dynamic, atol)


def _running(st, t1) -> np.ndarray:
    """Seeds whose solve goes on (numpy, on the host copy of the states)."""
    return (
        (np.asarray(st.t) < t1)
        & (np.asarray(st.result._value) == int(RESULTS.successful._value))
        & ~np.asarray(st.ended)
    )


def _keys(keys) -> PRNGKeyArray:
    keys = jnp.asarray(keys) if not isinstance(keys, jax.Array) else keys
    if jnp.issubdtype(keys.dtype, jax.dtypes.prng_key):
        if keys.ndim != 1:
            raise ValueError(
                f"solve_ensemble: `keys` must be a 1-D array of keys (one per seed), "
                f"got shape {keys.shape}."
            )
        return keys
    if keys.ndim == 2 and keys.dtype == jnp.uint32:
        return jax.random.wrap_key_data(keys)
    raise ValueError(
        "solve_ensemble: `keys` must be one key per seed, e.g. "
        "`jax.random.split(jax.random.key(0), 64)`, got "
        f"{describe(keys)} of dtype {keys.dtype}."
    )


def _segments(segments, t0, t1, dtype) -> np.ndarray:
    """Stop times of the segments, ending at t1."""
    t0, t1 = float(t0), float(t1)
    if segments is None or isinstance(segments, int):
        count = 8 if segments is None else segments
        if count < 1:
            raise ValueError(
                f"solve_ensemble: `segments` must be >= 1, got {segments!r}."
            )
        # Log-spaced: alignment happens at t ~ log(1/eps), convergence much later.
        first = (t1 - t0) * 1e-3 if count > 1 else t1 - t0
        stops = t0 + np.geomspace(first, t1 - t0, count)
    else:
        stops = np.asarray(segments, dtype=float)
        if (
            stops.ndim != 1
            or stops.size == 0
            or np.any(np.diff(stops) <= 0)
            or stops[0] <= t0
            or not np.isclose(stops[-1], t1)
        ):
            raise ValueError(
                "solve_ensemble: `segments` must be an int or an increasing 1-D array "
                f"of stop times in (t0, t1] ending at t1={t1!r}, got {segments!r}."
            )
    stops[-1] = t1
    return stops.astype(dtype)


def _bucket(count: int, batch_size: int, multiple: int) -> int:
    """Chunk size for `count` seeds: a power of two up to `batch_size` (few distinct
    shapes, so few compilations), a multiple of the device count."""
    size = min(batch_size, 1 << max(count - 1, 0).bit_length())
    return max(multiple, math.ceil(size / multiple) * multiple)


class _Devices:
    """Places chunks of seeds on the devices: split over them along the seed axis."""

    def __init__(self, devices):
        self.devices = list(jax.devices() if devices is None else devices)
        if len(self.devices) > 1:
            mesh = jax.sharding.Mesh(np.array(self.devices), ("seeds",))
            self.split = jax.sharding.NamedSharding(
                mesh, jax.sharding.PartitionSpec("seeds")
            )
            self.same = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        else:
            self.split = self.same = jax.sharding.SingleDeviceSharding(self.devices[0])

    def put(self, tree, batched: bool):
        sharding = self.split if batched else self.same
        return jax.tree.map(
            lambda x: jax.make_array_from_callback(
                np.shape(x), sharding, lambda index: np.asarray(x)[index]
            ),
            tree,
        )

    @staticmethod
    def get(tree):
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            return multihost_utils.process_allgather(tree, tiled=True)
        return jax.tree.map(np.asarray, tree)


def solve_ensemble(
    flow: GradientFlow | Callable[[PRNGKeyArray], GradientFlow],
    init: Callable[[PRNGKeyArray], Any],
    keys: PRNGKeyArray,
    *,
    t1: float,
    t0: float = 0.0,
    ts: Float[ArrayLike, " times"] | None = None,
    events: dict[str, AbstractEvent] | None = None,
    batch_size: int = 256,
    segments: int | Float[ArrayLike, " segments"] | None = None,
    checkpoint_dir: str | Path | None = None,
    progress: bool = False,
    rtol: float = 1e-8,
    atol: float | None = None,
    solver: dfx.AbstractSolver | None = None,
    stepsize_controller: dfx.AbstractStepSizeController | None = None,
    dt0: float | None = None,
    max_steps: int = 100_000,
    metrics: dict[str, MetricFn] | None = None,
    save_models: bool = False,
    kinks: Literal["auto", "min-norm", "plain"] = "auto",
    devices: list | None = None,
    callback: Callable[[int, float], None] | None = None,
) -> Ensemble:
    r"""Solve the gradient flow from many random initialisations: `jaxflow.solve` per
    seed, vmapped in chunks, run in segments of time between which finished seeds leave
    the batch, optionally checkpointed and split over several devices.

    **Arguments:**

    - `flow`: a `jaxflow.GradientFlow` shared by all seeds, or a function
        `key -> GradientFlow` for a data set that varies over seeds (e.g. resampled).
    - `init`: a function `key -> model`, e.g.
        `lambda k: jf.models.TwoLayerReLU(d, 50, scale=1e-6, key=k)`.
    - `keys`: one key per seed, e.g. `jax.random.split(jax.random.key(0), 256)`.
        With a per-seed `flow`, each seed's key is split in two: the first half draws
        the data, the second the model.
    - `t1`, `t0`, `ts`, `rtol`, `atol`, `solver`, `stepsize_controller`, `dt0`,
        `max_steps`, `metrics`, `save_models`, `kinks`: as for `jaxflow.solve`, per seed
        (`atol=None` is `rtol` times each seed's own largest initial parameter).
        `save_models` is `False` by default here: metrics only.
    - `events`: dict name -> `jaxflow.events.AbstractEvent`; a terminal one ends its
        seed's solve (status `event_occurred`), and the seed leaves the batch.
    - `batch_size`: the most seeds solved together in one vmapped chunk (bounds memory).
    - `segments`: how many log-spaced segments to cut $[t_0, t_1]$ into (default 8, the
        first ending at $t_0 + 10^{-3}(t_1 - t_0)$), or their stop times. Segments do not
        change the trajectory: a segment's last step may end beyond its stop time, and
        the next continues from there with the same solver and controller state.
    - `checkpoint_dir`: a run directory. After every segment the state of all seeds is
        written there atomically; calling `solve_ensemble` again with the same arguments
        resumes from the last segment written, and ends with results bitwise equal to an
        uninterrupted run. At the end the results are written there too
        (`jaxflow.load_ensemble`, `jaxflow show RUN_DIR`).
    - `progress`: show a progress bar over segments (seeds finished, min and median
        time reached).
    - `devices`: the devices to split each chunk over, along the seed axis; all of
        `jax.devices()` by default.
    - `callback`: called as `callback(segment, stop_time)` after each segment (and its
        checkpoint) is done.

    **Returns:**

    A `jaxflow.Ensemble`.

    **Raises:**

    `ValueError` for bad arguments, naming the value received, or a `checkpoint_dir`
    that holds a different run. A seed that fails (status other than `successful` or
    `event_occurred`) does not raise: it is reported in `status` and the other seeds
    are unaffected.

    !!! Example

        ```python
        ens = jf.solve_ensemble(
            flow, lambda k: jf.models.TwoLayerReLU(20, 50, scale=1e-6, key=k),
            jax.random.split(jax.random.key(0), 256), t1=1e4,
            ts=jnp.geomspace(1e-2, 1e4, 200),
            events={"stationary": jf.events.SteadyState(1e-6)},
        )
        ens.metrics["loss"].shape, ens.event_times["stationary"], ens.summary()
        ```
    """
    fname = "solve_ensemble"
    keys = _keys(keys)
    per_seed_flow = not isinstance(flow, GradientFlow)
    if per_seed_flow and not callable(flow):
        raise ValueError(
            f"{fname}: `flow` must be a jaxflow.GradientFlow or a function key -> "
            f"GradientFlow, got {type(flow).__name__}."
        )
    if not callable(init):
        raise ValueError(
            f"{fname}: `init` must be a function key -> model, got {init!r}."
        )
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(
            f"{fname}: `batch_size` must be a positive int, got {batch_size!r}."
        )
    if kinks not in ("auto", "min-norm", "plain"):
        raise ValueError(
            f"{fname}: `kinks` must be 'auto', 'min-norm' or 'plain', got {kinks!r}."
        )
    if not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(
            f"{fname}: `max_steps` must be a positive int, got {max_steps!r}."
        )
    if not rtol > 0:
        raise ValueError(f"{fname}: `rtol` must be > 0, got {rtol!r}.")
    if atol is not None and not atol >= 0:
        raise ValueError(f"{fname}: `atol` must be >= 0 or None, got {atol!r}.")
    events = check_events(events, fname)
    num_seeds = keys.shape[0]

    if per_seed_flow:
        data_keys, model_keys = jax.vmap(jax.random.split, out_axes=1)(keys)
        flows = eqx.filter_vmap(flow)(data_keys)
        flow_axis = 0
        flow_one = jax.tree.map(lambda x: x[0] if eqx.is_array(x) else x, flows)
    else:
        model_keys, flows, flow_axis, flow_one = keys, flow, None, flow
    models = eqx.filter_vmap(init)(model_keys)
    params, static = eqx.partition(models, eqx.is_inexact_array)
    model_one = eqx.combine(jax.tree.map(lambda x: x[0], params), static)
    _, _, checked = _prepare(flow_one, model_one, metrics, fname)
    if kinks == "min-norm" and not supports_min_norm(flow_one, model_one):
        raise ValueError(
            f"{fname}: kinks='min-norm' needs a jaxflow.models.TwoLayerReLU with a "
            f"built-in loss on a Dataset, got model {type(model_one).__name__}. Use "
            "kinks='plain'."
        )
    min_norm = kinks == "min-norm" or (
        kinks == "auto" and supports_min_norm(flow_one, model_one)
    )
    dtype = jnp.result_type(*jax.tree.leaves(params))
    if rtol < 1e-6 and jnp.finfo(dtype).eps > 1e-10:
        raise ValueError(
            f"{fname}: rtol={rtol!r} needs float64 parameters, got {dtype}."
        )
    t0_, t1_ = jnp.asarray(t0, dtype), jnp.asarray(t1, dtype)
    if not float(t1_) > float(t0_):
        raise ValueError(f"{fname}: need t1 > t0, got t0={t0!r}, t1={t1!r}.")
    ts = jnp.linspace(t0_, t1_, 101) if ts is None else jnp.asarray(ts, dtype)
    ts = _check_times(ts, t0_, t1_, fname)
    stops = _segments(segments, t0_, t1_, dtype)
    if atol is None:
        scale = jnp.max(
            jnp.stack(
                [
                    jnp.max(jnp.abs(x.reshape(num_seeds, -1)), axis=1, initial=0.0)
                    for x in jax.tree.leaves(params)
                ]
            ),
            axis=0,
        )
        atols = np.asarray(rtol * jnp.where(scale > 0, scale, 1.0), dtype)
    else:
        atols = np.full(num_seeds, atol, dtype)
    # Metrics are evaluated after the time loop, from the parameters stored at `ts`,
    # unless that store would be large (then they are evaluated in the loop, where
    # under vmap every seed pays whenever one of them saves). Between segments the host
    # holds every seed's state, store included: the bound is on all seeds, not a chunk.
    stored = (
        num_seeds
        * len(ts)
        * sum(x[0].size * x.dtype.itemsize for x in jax.tree.leaves(params))
    )
    setup = _Setup(
        t0=t0_,
        t1=t1_,
        ts=ts,
        rtol=rtol,
        solver=dfx.Tsit5() if solver is None else solver,
        controller=stepsize_controller,
        dt0=dt0,
        max_steps=max_steps,
        save_models=save_models,
        defer_metrics=save_models or stored <= _DEFER_BYTES,
        events=events,
        min_norm=min_norm,
        metrics=metrics if metrics is None else checked,
        static=static,
    )
    place = _Devices(devices)
    multiple = len(place.devices)
    config = {
        "seeds": num_seeds,
        "keys": np.asarray(jax.random.key_data(keys)).tolist(),
        "model": _describe_tree(model_one),
        "flow": _describe_tree(flow_one),
        "flow_per_seed": per_seed_flow,
        "t0": float(t0_),
        "t1": float(t1_),
        "ts": np.asarray(ts).tolist(),
        "segments": np.asarray(stops).tolist(),
        "rtol": rtol,
        "atol": atol,
        "solver": repr(setup.solver),
        "stepsize_controller": repr(stepsize_controller),
        "dt0": dt0,
        "max_steps": max_steps,
        "kinks": "min-norm" if min_norm else "plain",
        "events": {name: repr(event) for name, event in events.items()},
        "metrics": None if metrics is None else sorted(metrics),
        "save_models": save_models,
        "batch_size": batch_size,
        "devices": [str(d) for d in place.devices],
    }
    shared_flow = None if per_seed_flow else place.put(flows, False)

    def run_chunks(fn, index, *batched):
        """`fn(flow, *chunk)` over chunks of the seeds `index` (rows `index` of the
        arrays in `batched`, padded to a bucket size, put on the devices); the results
        on the host, one row per seed in `index`."""
        dynamic, static = [], None
        for start in range(0, len(index), batch_size):
            part = index[start : start + batch_size]
            size = _bucket(len(part), batch_size, multiple)
            padded = np.concatenate([part, np.full(size - len(part), part[0])])
            chunk = [place.put(_take(b, padded), True) for b in batched]
            flow_chunk = (
                place.put(_take(flows, padded), True) if per_seed_flow else shared_flow
            )
            out, static = eqx.partition(fn(flow_chunk, *chunk), eqx.is_array)
            dynamic.append(_take(place.get(out), slice(0, len(part))))
        dynamic = jax.tree.map(lambda *xs: np.concatenate(xs), *dynamic)
        return eqx.combine(dynamic, static)

    everyone = np.arange(num_seeds)
    flows = jax.tree.map(lambda x: np.asarray(x) if eqx.is_array(x) else x, flows)
    states = run_chunks(
        lambda f, p, a: _init(setup, f, p, a, flow_axis),
        everyone,
        _take(params, everyone),
        atols,
    )
    dynamic, state_static = eqx.partition(states, eqx.is_array)

    run = _rundir.Checkpoint(checkpoint_dir) if checkpoint_dir is not None else None
    done = 0
    if run is not None:
        fingerprint = _rundir.fingerprint(
            dynamic, eqx.filter(flows, eqx.is_array), atols, stops, batch_size, setup
        )
        done, loaded = run.load(fingerprint, dynamic)
        if loaded is not None:
            dynamic = loaded

    bar = _rundir.progress_bar(len(stops), done, progress)
    for k in range(done, len(stops)):
        st = eqx.combine(dynamic, state_static)
        running = _running(st, float(t1_)) & (np.asarray(st.t) < stops[k])
        index = np.flatnonzero(running)
        if index.size:
            advanced = run_chunks(
                lambda f, d, a: _advance(
                    setup, f, d, state_static, a, stops[k], flow_axis
                ),
                index,
                dynamic,
                atols,
            )
            dynamic = jax.tree.map(
                lambda whole, part: _scatter(whole, index, part),
                dynamic,
                eqx.filter(advanced, eqx.is_array),
            )
        if run is not None:
            run.save(k + 1, fingerprint, dynamic)
        st = eqx.combine(dynamic, state_static)
        _rundir.update_bar(bar, st, _running(st, float(t1_)), num_seeds)
        if callback is not None:
            callback(k, float(stops[k]))
    if bar is not None:
        bar.close()
    outputs = run_chunks(
        lambda f, d, a: _finish(setup, f, d, state_static, a, flow_axis),
        everyone,
        dynamic,
        atols,
    )
    ensemble = _ensemble(outputs, setup, atols, num_seeds, stops)
    if run is not None:
        _rundir.write(run.path, ensemble, config)
    return ensemble


def _describe_tree(tree) -> str:
    """The type and array shapes of a model or flow, for the run's configuration."""
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    shapes = ", ".join(
        f"{jax.tree_util.keystr(path)}: {tuple(np.shape(x))}"
        for path, x in leaves
        if eqx.is_array(x)
    )
    return f"{type(tree).__name__}({shapes})"


def _take(tree, index):
    """The seeds `index` of the arrays in `tree` (leading axis), on the host."""
    return jax.tree.map(lambda x: np.asarray(x)[index] if eqx.is_array(x) else x, tree)


def _scatter(whole: np.ndarray, index, part) -> np.ndarray:
    whole = np.array(whole, copy=True)
    whole[index] = part
    return whole


def _ensemble(outputs, setup: _Setup, atols, num_seeds: int, stops) -> Ensemble:
    saved, values, final, t_final, stats, status, times = outputs
    return Ensemble(
        ts=np.asarray(setup.ts),
        ys=None if saved is None else eqx.combine(saved, setup.static),
        final=eqx.combine(final, setup.static),
        t_final=t_final,
        metrics=values,
        stats=stats,
        status=status,
        event_times=times,
        rtol=setup.rtol,
        atol=atols,
        solver=type(setup.solver).__name__,
        seeds=np.arange(num_seeds),
        segments=np.asarray(stops),
    )
