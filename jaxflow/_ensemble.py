"""`solve_ensemble`: many seeds, in chunks (one seed after another, or vmapped), over
segments of time."""

import contextlib
import dataclasses
import functools
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import cloudpickle
import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike, Float, PRNGKeyArray, PyTree

from . import _devices, _pool, _rundir
from ._custom_types import MetricFn
from ._errors import describe, describe_tree
from ._flow import GradientFlow
from ._integrate import Integrator, Outcome, advance, running
from ._options import Options, default_atol, explained, prepare, resolve
from ._results import Ensemble, concatenate, map_seeds
from .events._events import AbstractEvent
from .metrics import default_metrics


# The most memory a chunk may use to hold its parameters (and their velocities) at `ts`
# for deferred metrics.
_DEFER_BYTES = 512 * 2**20


class _Setup(eqx.Module):
    """What the seeds of an ensemble share besides their flow and state."""

    options: Options
    static: PyTree
    like: PyTree  # one seed's parameters as shapes: the structure the loop reads
    metrics: dict[str, MetricFn] | None  # None: each seed's default metrics
    save_models: bool = eqx.field(static=True)
    defer_metrics: bool = eqx.field(static=True)
    vectorize: bool = eqx.field(static=True)
    mesh: Any = eqx.field(static=True)  # the devices' mesh (axis "seeds"), or None

    def loop(self, flow, atol) -> Integrator:
        """One seed's time loop."""
        return self.options.integrator(
            flow,
            self.like,
            self.static,
            atol,
            save_models=self.save_models,
            defer_metrics=self.defer_metrics,
        )

    def each_seed(self, fn, flow, flow_axis, *batched):
        """`fn(flow, *args)` for every seed of a chunk, stacked: the arrays of
        `batched`, and of `flow` if `flow_axis` is 0, have a leading seed axis.

        Vectorized (`jax.vmap`), or one seed after the other (`jax.lax.map`). Then
        each seed runs the very computation of `jaxflow.solve` on it alone, with its
        own number of steps, and gets its bits: a vmapped matrix product whose other
        operand is shared (the data) is one larger product, which rounds differently
        from the seed's own."""
        if self.vectorize:
            in_axes = (flow_axis,) + (0,) * len(batched)
            lanes = eqx.filter_vmap(fn, in_axes=in_axes)
        elif flow_axis is None:
            lanes = lambda flow, *b: _map(lambda *a: fn(flow, *a), *b)  # noqa: E731
        else:
            lanes = lambda *b: _map(fn, *b)  # noqa: E731
        return self.on_devices(lanes, flow, flow_axis, *batched)

    def on_devices(self, fn, flow, flow_axis, *batched):
        """`fn(flow, *batched)`, where `fn` takes and returns a batch of seeds (a
        leading axis on every array but the shared flow's), run by each device on its
        own share of the seeds (`jax.shard_map`) when there are several: no device
        waits on another, or exchanges anything with it, until the chunk is done."""
        shared = flow if flow_axis is None else None
        mapped = (None if flow_axis is None else flow, batched)
        (shared_dynamic, dynamic), static = eqx.partition(
            (shared, mapped), eqx.is_array
        )
        statics = []  # the outputs' non-array part, recorded while tracing

        def local(shared_dynamic, dynamic):
            common, (own, args) = eqx.combine((shared_dynamic, dynamic), static)
            out, out_static = eqx.partition(
                fn(common if flow_axis is None else own, *args), eqx.is_array
            )
            statics.append(out_static)
            return out

        if self.mesh is not None:
            specs = jax.sharding.PartitionSpec(), jax.sharding.PartitionSpec("seeds")
            # (Unchecked: the time loop's carry mixes shared and per-device values.)
            local = jax.shard_map(
                local,
                mesh=self.mesh,
                in_specs=specs,
                out_specs=specs[1],
                check_vma=False,
            )
        out = local(shared_dynamic, dynamic)
        return eqx.combine(out, statics[0])


def _map(fn, *xs):
    """`fn` over the leading axis of the arrays of `xs`, one after the other
    (`jax.lax.map`), stacked; the other leaves are passed to every call as they are."""
    dynamic, static = eqx.partition(xs, eqx.is_array)
    statics = []

    def one(d):
        out, out_static = eqx.partition(fn(*eqx.combine(d, static)), eqx.is_array)
        statics.append(out_static)
        return out

    return eqx.combine(jax.lax.map(one, dynamic), statics[0])


# Seeds are vmapped or mapped (`_Setup.each_seed`); `flow` is mapped too when it
# varies over seeds (axis 0), else shared (None). Compiled once per chunk size.
@eqx.filter_jit
def _init(setup: _Setup, flow, params, atol, flow_axis):
    def one(flow, params, atol):
        model = eqx.combine(params, setup.static)
        metrics = (
            default_metrics(model, flow) if setup.metrics is None else setup.metrics
        )
        return setup.loop(flow, atol).init(params, metrics)

    return setup.each_seed(one, flow, flow_axis, params, atol)


@eqx.filter_jit
def _advance(setup: _Setup, flow, dynamic, static, atol, t_stop, flow_axis):
    """Step every seed of a chunk until it passes `t_stop` or its solve is over."""
    if setup.vectorize:

        def lanes(flow, dynamic, atol):
            st = eqx.combine(dynamic, static)
            return advance(
                setup.loop, st, t_stop, args=(flow, atol), in_axes=(flow_axis, 0)
            )

        return setup.on_devices(lanes, flow, flow_axis, dynamic, atol)

    def one(flow, dynamic, atol):
        return advance(
            lambda: setup.loop(flow, atol), eqx.combine(dynamic, static), t_stop
        )

    return setup.each_seed(one, flow, flow_axis, dynamic, atol)


@eqx.filter_jit
def _finish(setup: _Setup, flow, dynamic, static, atol, flow_axis) -> Outcome:
    def one(flow, dynamic, atol):
        return setup.loop(flow, atol).finish(eqx.combine(dynamic, static))

    return setup.each_seed(one, flow, flow_axis, dynamic, atol)


def _running(options: Options, st) -> np.ndarray:
    """Seeds whose solve goes on, from the host copy of their states."""
    return np.asarray(running(st, options.t1, options.max_steps))


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
        stops = np.array(segments, dtype=float)  # a copy: the last is set to t1
        if (
            stops.ndim != 1
            or stops.size == 0
            or not np.all(np.isfinite(stops))
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

    def __init__(self, devices, fname: str):
        # In a multi-process run each process solves its own part on its own devices.
        self.devices = list(jax.local_devices() if devices is None else devices)
        foreign = [d for d in self.devices if d.process_index != jax.process_index()]
        if foreign:
            raise ValueError(
                f"{fname}: `devices` must be devices of this process (process "
                f"{jax.process_index()}): each process solves its own part of the "
                f"seeds on its own devices; got {foreign}."
            )
        self.mesh = None
        if len(self.devices) > 1:
            mesh = self.mesh = jax.sharding.Mesh(np.array(self.devices), ("seeds",))
            self.split = jax.sharding.NamedSharding(
                mesh, jax.sharding.PartitionSpec("seeds")
            )
            self.same = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        else:
            self.split = self.same = jax.sharding.SingleDeviceSharding(self.devices[0])

    def put(self, tree, batched: bool):
        sharding = self.split if batched else self.same
        return jax.tree.map(
            lambda x: (
                jax.make_array_from_callback(
                    np.shape(x), sharding, lambda index: np.asarray(x)[index]
                )
                if eqx.is_array(x)
                else x
            ),  # e.g. a loss written as a lambda
            tree,
        )

    @staticmethod
    def get(tree):
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
    solver: dfx.AbstractSolver | Literal["auto"] | None = None,
    stepsize_controller: dfx.AbstractStepSizeController | None = None,
    dt0: float | None = None,
    max_steps: int = 100_000,
    metrics: dict[str, MetricFn] | None = None,
    save_models: bool = False,
    kinks: Literal["auto", "min-norm", "general", "plain"] = "auto",
    devices: list | None = None,
    callback: Callable[[int, float], None] | None = None,
    throw: bool = False,
    vectorize: bool | None = None,
    part: tuple[int, int] | None = None,
    processes: int | None = None,
) -> Ensemble:
    r"""Solve the gradient flow from many random initialisations: `jaxflow.solve` per
    seed, in chunks (on the CPU each seed gets the bits of `jaxflow.solve` on it alone;
    see `vectorize`), run in segments of time between which finished seeds leave the
    batch, optionally checkpointed and split over several devices.

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
        uninterrupted run. The call's configuration (`config.json`) is written there
        when it starts, the results when it ends (`jaxflow.load_ensemble`,
        `jaxflow show RUN_DIR`). For the whole call the directory is locked: a `lock`
        file holds this process's host name and PID, and is removed at the end, also
        when the call raises. A second call on the same directory meanwhile raises a
        `ValueError` naming the holder. The holder refreshes the lock's modification
        time every 30 s; a lock left by a process no longer running on this host
        (killed), or by one on another host that has not refreshed it for 5 minutes, is
        taken over, with a warning. A directory that holds a
        checkpoint or results of a different run, or an unreadable (truncated or
        corrupted) checkpoint or results file, raises a `ValueError` that names the
        file and how to start again; two runs are never mixed.
    - `progress`: show a progress bar over segments (seeds finished, min and median
        time reached).
    - `devices`: the devices of this process to split each chunk over, along the seed
        axis; all of `jax.local_devices()` by default.
    - `part`: `(I, N)`: solve only the I-th of N slices of the seeds (contiguous, as
        even as can be: `numpy.array_split` of `0 ... seeds-1`), e.g. one job of a job
        array. Give every part the same arguments, all the `keys` included. With
        `checkpoint_dir`, the part is written to that directory's `parts/I-of-N` (a run
        directory of its own, locked, checkpointed and resumed as above), so the N
        parts can run at any time, in any order, on any machines that share the
        directory; `jaxflow.load_ensemble` joins them. The first part to start records
        the run's settings there; a part whose settings differ is refused with a
        `ValueError` that names them. Returns the part's seeds (`seeds` holds their
        numbers in the run).
    - `processes`: how many worker processes of this machine solve the seeds, each a
        part of them (`part`, below) at a time, one seed after the other: the way to
        use all of the CPU's cores (several JAX CPU devices are not safe, see
        `jaxflow._devices`). Each seed's results are bitwise those of one process.
        Default (`None`): the environment variable `JAXFLOW_PROCESSES` if set
        (a number, or `auto`), else `auto`: one process per core (at most one per
        seed) when the seeds are solved unvectorized on the only CPU device of a
        single-process run, with no `callback` or `devices`; one (this process)
        otherwise. The workers start at the first call that needs them (a few
        seconds) and keep their compiled programs for the next calls. The run is
        split into as many parts as workers (`part`); with `checkpoint_dir`, into
        as many as the run there already has (1 for a run not split into parts). The
        arguments are sent to the workers with cloudpickle; if they cannot be
        pickled, `auto` solves in this process.
    - `callback`: called as `callback(segment, stop_time)` after each segment (and its
        checkpoint) is done.
    - `vectorize`: solve the seeds of a chunk together under `jax.vmap` (`True`), or
        one after the other in one compiled program (`False`). Unvectorized, each seed
        gets exactly the bits of `jaxflow.solve` on it alone, whatever its chunk, batch
        size or device count, and takes only its own steps. Vectorized, a matrix
        product with the shared data is computed for the whole chunk at once and
        rounds differently (to well within the tolerance), so a seed's bits depend on
        its chunk; on accelerators that is the fast way. A kink's rare work (locating,
        settling, correcting) runs only for the seeds that need it, gathered a
        chunk at a time. Default (`None`): `False` on the CPU, `True` elsewhere.
    - `throw`: raise a `RuntimeError` naming the failed seeds and their statuses if
        any seed did not succeed (after the run directory, if any, is written). By
        default failures are reported per seed in `status`.

    **Several processes.** After `jax.distributed.initialize(...)` (more than one
    process), every process makes the same call. Each solves its own part,
    `(jax.process_index(), jax.process_count())`, on its own devices, and with
    `checkpoint_dir` writes, checkpoints and resumes it as a part (above); the parts are
    then gathered, so that every process returns the whole `Ensemble`. If a process
    cannot start its part (refused, locked out), every process raises before solving.
    `part` cannot be given then.

    **Returns:**

    A `jaxflow.Ensemble`. Unvectorized, each seed's results are bitwise the same
    whether the run is whole, in parts or over several processes.

    **Raises:**

    `ValueError` for bad arguments, naming the value received, or a `checkpoint_dir`
    (or part of it) that holds a different run (of a part: naming the settings that
    differ), is in use by another process, or holds an unreadable checkpoint or results
    file. A seed that fails (status other than `successful` or
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
    given = dict(locals())  # every argument, for the workers (`processes`)
    fname = "solve_ensemble"
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(
            f"{fname}: `batch_size` must be a positive int, got {batch_size!r}."
        )
    keys = _keys(keys)
    count = keys.shape[0]
    part = _part(part, count, fname)
    index = np.arange(count) if part is None else _slices(count, part[1])[part[0]]
    seeds = _Seeds(flow, init, keys[index], fname)
    params_one, _, checked = prepare(seeds.flow_one, seeds.model_one, metrics, fname)
    options = resolve(
        fname,
        seeds.flow_one,
        seeds.model_one,
        params_one,
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
    dtype = np.asarray(options.t0).dtype
    stops = _segments(segments, options.t0, options.t1, dtype)
    atols = np.asarray(
        default_atol(seeds.params, rtol, batched=True)
        if atol is None
        else np.full(seeds.count, atol),
        dtype,
    )
    # Metrics are evaluated after the time loop, from the parameters stored at `ts`,
    # unless that store would be large (then they are evaluated in the loop, where
    # under vmap every seed pays whenever one of them saves). Between segments the host
    # holds every seed's state, store included: the bound is on all seeds, not a chunk
    # (nor a part: every part decides as the whole run would). With each point its
    # velocity, for the metrics that ask for it (`Integrator._record`).
    stored = 2 * count * len(options.ts) * seeds.bytes_per_seed
    place = _Devices(devices, fname)
    if vectorize is None:
        vectorize = place.devices[0].platform != "cpu"
    parts, workers, auto = _parts_for(
        processes, count, part, vectorize, place, given, fname
    )
    if parts > 1:
        given["keys"] = keys
        ensemble = _in_workers(given, parts, workers, auto, progress)
        return _raise_if_failed(ensemble, throw, fname)
    setup = _Setup(
        options=options,
        static=seeds.static,
        like=jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params_one),
        metrics=metrics if metrics is None else checked,
        save_models=save_models,
        defer_metrics=save_models or stored <= _DEFER_BYTES,
        vectorize=bool(vectorize),
        mesh=place.mesh,
    )
    chunks = _Chunks(seeds, place, batch_size)

    def open_run() -> _rundir.RunDir:
        arguments = {
            "rtol": rtol,
            "atol": atol,
            "stepsize_controller": repr(stepsize_controller),
            "dt0": dt0,
            "max_steps": max_steps,
            "metrics": None if metrics is None else sorted(metrics),
            "save_models": save_models,
        }
        config = _run_config(seeds, options, chunks, stops) | arguments
        if part is None:
            return _rundir.RunDir(checkpoint_dir, config, fname)
        # The whole run's settings, the same in every part (libraries included: they
        # decide the bits); its first seed stands for the initial models and data
        # (drawn by `init`, and `flow`, from its key).
        first = _Seeds(flow, init, keys[:1], fname)
        whole = _run_config(first, options, chunks, stops) | arguments
        whole.pop("devices")
        whole |= {
            "seeds": count,
            "keys": np.asarray(jax.random.key_data(keys)).tolist(),
            "vectorize": setup.vectorize,
            "parts": part[1],
            "libraries": _rundir.libraries(),
        }
        whole = _rundir.settings(whole)
        whole["fingerprint"] = _rundir.fingerprint(
            whole,
            first.params,
            first.flow_arrays(),
            dataclasses.replace(setup, mesh=None),
        )
        path = _rundir.join(checkpoint_dir, whole, part, fname)
        config |= {"part": list(part), "run": whole["fingerprint"]}
        what = f"part {part[0]}/{part[1]} of the run directory `checkpoint_dir`"
        return _rundir.RunDir(path, config, fname, what)

    # The run directory is locked from here to the end, exceptions included.
    with contextlib.ExitStack() as stack:
        problem = None
        try:
            run = None if checkpoint_dir is None else stack.enter_context(open_run())
        except ValueError as error:
            problem = error
        _every_process_ready(problem, fname)
        ensemble = _solve(
            setup, seeds, chunks, atols, stops, run, progress, callback, index
        )
    if jax.process_count() > 1:
        sizes = [len(i) for i in _slices(count, jax.process_count())]
        ensemble = _gather(ensemble, sizes)
    return _raise_if_failed(ensemble, throw, fname)


def _raise_if_failed(ensemble: Ensemble, throw: bool, fname: str) -> Ensemble:
    """`ensemble`, unless `throw` and some seed failed: then a `RuntimeError` naming
    the first five."""
    failed = np.flatnonzero(~ensemble.succeeded)
    if throw and failed.size:
        messages = ensemble.messages
        listed = "; ".join(
            f"seed {ensemble.seeds[i]}: {messages[i]}" for i in failed[:5]
        )
        more = f"; and {failed.size - 5} more" if failed.size > 5 else ""
        raise RuntimeError(
            f"{fname}: {failed.size} of {ensemble.num_seeds} seeds failed "
            f"({listed}{more})."
        )
    return ensemble


def _every_process_ready(problem: ValueError | None, fname: str) -> None:
    """Raise `problem` (this process could not start its part: refused, locked out);
    in a multi-process run, raise on every process if any could not start, rather than
    leave the others to solve and then wait for it."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        failed = np.flatnonzero(
            multihost_utils.process_allgather(np.array(problem is not None))
        )
        if failed.size and problem is None:
            raise ValueError(
                f"{fname}: process(es) {failed.tolist()} could not start their part "
                "of the run (their error says why); this process stops too."
            )
    if problem is not None:
        raise problem


def _slices(count: int, parts: int) -> list[np.ndarray]:
    """The seeds of each of `parts` parts of a run of `count` seeds: contiguous slices
    of `0 ... count-1`, as even as they can be."""
    return np.array_split(np.arange(count), parts)


def _part(part, count: int, fname: str) -> tuple[int, int] | None:
    """`part` checked, as `(I, N)`; in a multi-process run, this process's."""
    processes = jax.process_count()
    if processes > 1:
        if part is not None:
            raise ValueError(
                f"{fname}: `part` cannot be given in a multi-process run "
                f"(jax.process_count() = {processes}): each process solves its own "
                f"part, (jax.process_index(), jax.process_count()). Got {part!r}."
            )
        if processes > count:
            raise ValueError(
                f"{fname}: {count} seeds cannot be split over jax.process_count() = "
                f"{processes} processes; give at least one seed a process."
            )
        part = (jax.process_index(), processes)
    if part is None:
        return None
    if not (
        isinstance(part, tuple | list)
        and len(part) == 2
        and all(
            isinstance(x, int | np.integer) and not isinstance(x, bool) for x in part
        )
        and 0 <= part[0] < part[1]
    ):
        raise ValueError(
            f"{fname}: `part` must be (I, N) with 0 <= I < N, to solve the I-th of N "
            f"slices of the seeds, got {part!r}."
        )
    if part[1] > count:
        raise ValueError(
            f"{fname}: `part` {tuple(part)!r} splits {count} seeds into {part[1]} "
            f"parts; there can be at most {count} (one seed a part)."
        )
    return int(part[0]), int(part[1])


def _parts_for(processes, count, part, vectorize, place, given, fname):
    """`(parts, workers, auto)`: the run split into `parts` parts, solved by `workers`
    worker processes (`processes`; `auto`: chosen here); `parts` 1: this process
    solves the run whole."""
    auto = processes is None
    if auto:
        processes = os.environ.get("JAXFLOW_PROCESSES", "auto")
        if processes != "auto":
            if not processes.isdigit() or int(processes) < 1:
                raise ValueError(
                    f"{fname}: the environment variable JAXFLOW_PROCESSES must be "
                    f"'auto' or a positive number of processes, got {processes!r}."
                )
            processes, auto = int(processes), False
    elif isinstance(processes, bool) or not (
        isinstance(processes, int | np.integer) and processes >= 1
    ):
        raise ValueError(
            f"{fname}: `processes` must be a positive int, or None (automatic), got "
            f"{processes!r}."
        )
    if os.environ.get(_pool.IN_WORKER):
        return 1, 1, auto
    devices = place.devices
    conflicts = [
        (vectorize, "`vectorize=True`"),
        (part is not None, f"`part` {part!r}"),
        (given["callback"] is not None, "a `callback`"),
        (given["devices"] is not None, f"`devices` {given['devices']!r}"),
        (len(devices) > 1, f"{len(devices)} devices"),
        (devices[0].platform != "cpu", f"a {devices[0].platform} device"),
    ]
    conflict = next((text for found, text in conflicts if found), None)
    if conflict is None:
        workers = min(_devices.usable_cores() if auto else processes, count)
    elif auto or processes == 1:
        workers = 1
    else:
        raise ValueError(
            f"{fname}: `processes={processes}` splits the seeds over worker processes, "
            "each solving them one after the other on one CPU device; it cannot be "
            f"combined with {conflict}. Give `processes=1`, or leave it out."
        )
    # A run directory keeps the split it was started with.
    recorded = (
        None
        if given["checkpoint_dir"] is None or part is not None
        else _rundir.recorded_parts(given["checkpoint_dir"])
    )
    parts = workers if recorded is None else recorded
    return parts, min(workers, parts), auto


def _in_workers(given: dict, parts: int, workers: int, auto: bool, progress: bool):
    """The run of `solve_ensemble(**given)`, split into `parts` parts solved by
    `workers` worker processes (by this one if 1, or if its arguments cannot be sent
    to a worker and `processes` was chosen automatically, `auto`), and joined."""
    given = given | {"processes": 1, "progress": False, "throw": False}
    tasks = [
        functools.partial(solve_ensemble, **given | {"part": (i, parts)})
        for i in range(parts)
    ]
    if workers > 1:
        try:
            cloudpickle.dumps(tasks[0])
        except Exception as error:
            if not auto:
                raise ValueError(
                    "solve_ensemble: with `processes`, the arguments are sent to "
                    f"worker processes, and these cannot be pickled ({error})."
                ) from error
            workers = 1
    bar = _rundir.progress_bar(given["keys"].shape[0], 0, progress, unit="seed")

    def done(i, ensemble):
        if bar is not None:
            bar.update(ensemble.num_seeds)
        return ensemble

    if workers > 1:
        results = _pool.run(tasks, workers, done)
    else:
        results = [done(i, task()) for i, task in enumerate(tasks)]
    if bar is not None:
        bar.close()
    return concatenate(results)


def _gather(ensemble: Ensemble, sizes: list[int]) -> Ensemble:
    """The parts of every process (process p's of `sizes[p]` seeds) joined in process
    order, on every process."""
    from jax.experimental import multihost_utils

    most = max(sizes)

    def one(x):  # padded to the largest part, gathered, the padding dropped
        x = np.concatenate([x, np.repeat(x[:1], most - len(x), axis=0)])
        every = multihost_utils.process_allgather(x, tiled=False)
        return np.concatenate([every[p, :size] for p, size in enumerate(sizes)])

    return map_seeds(one, ensemble)


def _solve(
    setup: _Setup,
    seeds,
    chunks,
    atols: np.ndarray,
    stops: np.ndarray,
    run,
    progress: bool,
    callback,
    numbers: np.ndarray,
) -> Ensemble:
    """The seeds' time loops, segment by segment; checkpointed to `run` (a run
    directory whose lock this process holds) unless it is None. `numbers`: the seeds'
    numbers in the run."""
    options = setup.options
    everyone = np.arange(seeds.count)
    with explained("solve_ensemble", seeds.flow_one, seeds.model_one):
        states = chunks.run(
            lambda f, p, a: _init(setup, f, p, a, seeds.flow_axis),
            everyone,
            _take(seeds.params, everyone),
            atols,
        )
    dynamic, state_static = eqx.partition(states, eqx.is_array)

    done, fingerprint = 0, None
    if run is not None:
        fingerprint = _rundir.fingerprint(
            dynamic,
            seeds.flow_arrays(),
            atols,
            stops,
            chunks.batch_size,
            # Not the devices: a seed's result does not depend on them (unvectorized).
            dataclasses.replace(setup, mesh=None),
        )
        done, loaded = run.load(fingerprint, dynamic)
        if loaded is not None:
            dynamic = loaded
        run.start(fingerprint)

    bar = _rundir.progress_bar(len(stops), done, progress)
    for k in range(done, len(stops)):
        st = eqx.combine(dynamic, state_static)
        goes = _running(options, st) & (np.asarray(st.t) < stops[k])
        index = np.flatnonzero(goes)
        if index.size:
            # Padded with a seed that has nothing to do here, where there is one: a
            # copy of a running seed would repeat its work (all of it, mapped).
            idle = np.flatnonzero(~goes)
            advanced = chunks.run(
                lambda f, d, a: _advance(
                    setup, f, d, state_static, a, stops[k], seeds.flow_axis
                ),
                index,
                dynamic,
                atols,
                filler=idle[0] if idle.size else None,
            )
            dynamic = jax.tree.map(
                lambda whole, part: _scatter(whole, index, part),
                dynamic,
                eqx.filter(advanced, eqx.is_array),
            )
        if run is not None:
            run.save(k + 1, fingerprint, dynamic)
        st = eqx.combine(dynamic, state_static)
        _rundir.update_bar(bar, st, _running(options, st), seeds.count)
        if callback is not None:
            callback(k, float(stops[k]))
    if bar is not None:
        bar.close()
    outputs = chunks.run(
        lambda f, d, a: _finish(setup, f, d, state_static, a, seeds.flow_axis),
        everyone,
        dynamic,
        atols,
    )
    ensemble = _ensemble(outputs, setup, atols, numbers, stops)
    if run is not None:
        run.finish(ensemble, fingerprint)
    return ensemble


class _Seeds:
    """The seeds' initial models and flows (one shared, or one per seed) on the host,
    drawn from their keys."""

    def __init__(self, flow, init, keys, fname: str):
        self.keys = keys
        self.per_seed_flow = not isinstance(flow, GradientFlow)
        if self.per_seed_flow and not callable(flow):
            raise ValueError(
                f"{fname}: `flow` must be a jaxflow.GradientFlow or a function key -> "
                f"GradientFlow, got {type(flow).__name__}."
            )
        if not callable(init):
            raise ValueError(
                f"{fname}: `init` must be a function key -> model, got {init!r}."
            )
        # Each seed's model (and flow) is made by calling `init(key)` on its own, as a
        # user making that seed alone would: under `jax.vmap` the random draws and
        # norms round differently, and the seed would start elsewhere.
        if self.per_seed_flow:
            data_keys, model_keys = jax.vmap(jax.random.split, out_axes=1)(keys)
            flows = [flow(k) for k in data_keys]
            self.flow_one = flows[0]
            self.flows = _stack(flows)
            self.flow_axis = 0
        else:
            model_keys, self.flows, self.flow_one, self.flow_axis = (
                keys,
                flow,
                flow,
                None,
            )
        models = [init(k) for k in model_keys]
        self.model_one = models[0]
        self.params, self.static = eqx.partition(_stack(models), eqx.is_inexact_array)
        self.count = keys.shape[0]
        self.bytes_per_seed = sum(
            x[0].size * x.dtype.itemsize for x in jax.tree.leaves(self.params)
        )

    def flow_arrays(self):
        return eqx.filter(self.flows, eqx.is_array)


class _Chunks:
    """Runs a function over chunks of at most `batch_size` seeds, each padded to a
    bucket size and put on the devices."""

    def __init__(self, seeds: _Seeds, place: _Devices, batch_size: int):
        self.seeds, self.place, self.batch_size = seeds, place, batch_size
        self.shared_flow = (
            None if seeds.per_seed_flow else place.put(seeds.flows, False)
        )

    def run(self, fn, index, *batched, filler=None):
        """`fn(flow, *chunk)` over chunks of the seeds `index` (rows `index` of the
        arrays in `batched`); the results on the host, one row per seed in `index`.
        A chunk is padded with copies of seed `filler` (by default its first)."""
        dynamic, static = [], None
        multiple = len(self.place.devices)
        for start in range(0, len(index), self.batch_size):
            part = index[start : start + self.batch_size]
            size = _bucket(len(part), self.batch_size, multiple)
            pad = part[0] if filler is None else filler
            padded = np.concatenate([part, np.full(size - len(part), pad)])
            chunk = [self.place.put(_take(b, padded), True) for b in batched]
            flow = (
                self.place.put(_take(self.seeds.flows, padded), True)
                if self.seeds.per_seed_flow
                else self.shared_flow
            )
            out, static = eqx.partition(fn(flow, *chunk), eqx.is_array)
            dynamic.append(_take(self.place.get(out), slice(0, len(part))))
        dynamic = jax.tree.map(lambda *xs: np.concatenate(xs), *dynamic)
        return eqx.combine(dynamic, static)


def _stack(trees: list):
    """The arrays of `trees` (alike but for their values) stacked along a new leading
    axis, as NumPy arrays; the rest from the first."""
    arrays, static = eqx.partition(trees[0], eqx.is_array)
    leaves = [jax.tree.leaves(eqx.filter(t, eqx.is_array)) for t in trees]
    stacked = [
        np.stack([np.asarray(x[i]) for x in leaves]) for i in range(len(leaves[0]))
    ]
    return eqx.combine(jax.tree.unflatten(jax.tree.structure(arrays), stacked), static)


def _run_config(seeds: _Seeds, options: Options, chunks: _Chunks, stops) -> dict:
    """What a run directory's `config.json` records of the run (with the arguments as
    given)."""
    return {
        "seeds": seeds.count,
        "keys": np.asarray(jax.random.key_data(seeds.keys)).tolist(),
        "model": describe_tree(seeds.model_one),
        "flow": describe_tree(seeds.flow_one),
        "flow_per_seed": seeds.per_seed_flow,
        "t0": float(options.t0),
        "t1": float(options.t1),
        "ts": np.asarray(options.ts).tolist(),
        "segments": np.asarray(stops).tolist(),
        "solver": repr(options.solver),
        "kinks": options.kinks,
        "events": {name: repr(event) for name, event in options.events.items()},
        "batch_size": chunks.batch_size,
        "devices": [str(d) for d in chunks.place.devices],
    }


def _take(tree, index):
    """The seeds `index` of the arrays in `tree` (leading axis), on the host."""
    return jax.tree.map(lambda x: np.asarray(x)[index] if eqx.is_array(x) else x, tree)


def _scatter(whole: np.ndarray, index, part) -> np.ndarray:
    whole = np.array(whole, copy=True)
    whole[index] = part
    return whole


def _ensemble(out: Outcome, setup: _Setup, atols, numbers, stops) -> Ensemble:
    return Ensemble(
        ts=np.asarray(setup.options.ts),
        ys=None if out.ys is None else eqx.combine(out.ys, setup.static),
        final=eqx.combine(out.final, setup.static),
        t_final=out.t_final,
        metrics=out.metrics,
        stats=out.stats,
        status=out.status,
        event_times=out.event_times,
        rtol=setup.options.rtol,
        atol=atols,
        solver=type(setup.options.solver).__name__,
        seeds=np.asarray(numbers),
        segments=np.asarray(stops),
    )
