"""Seed ensembles: batched against sequential solves, throughput and memory against batch
size, segments with per-seed termination on heavy-tailed finishing times, memory
bounded by the chunk size on MNIST (1024 seeds of the 0-vs-1 problem, n=2000), and
seeds per second over several processes (JAX's distributed runtime, and job arrays).

    python benchmarks/ensemble.py                  # all sections, a table each
    python benchmarks/ensemble.py --sections 1 3   # some of them
    python benchmarks/ensemble.py --sections 5 --processes 1 2 4
    python benchmarks/ensemble.py --sections 5 --processes 1 2 --process-seeds 256
    python benchmarks/ensemble.py --sections 6     # vmapped, mapped, a loop (issue 38)
    python benchmarks/ensemble.py --sections 7     # a default-mode step's branches
    python benchmarks/ensemble.py --quick          # smaller sizes, for a smoke run

Peak memory is measured in a fresh subprocess per configuration: the process's maximum
resident set (`ru_maxrss`) on the CPU, plus the device's `peak_bytes_in_use` on a GPU.
Times are wall-clock, compilation excluded where a row says "warm" (the same call run
twice, the second timed).
"""

import argparse
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import jaxflow as jf


# The ReLU sections use kinks="plain": on separable data with n=200, width 50, the
# neurons cross ~5,000 data hyperplanes while they align, and locating each crossing
# (the default "min-norm") costs ~8x the wall time of letting the controller reject
# steps there (benchmarks/RESULTS.md); on MNIST n=2000 it is worse. What is measured
# here, batching and memory, is the same for both.
KINKS = "plain"


def separable_problem(n=200, d=20, width=50, scale=1e-6):
    data = jf.datasets.separable(jax.random.key(0), n, d, 0.3)
    flow = jf.GradientFlow(jf.losses.exponential, data)

    def init(key):
        return jf.models.TwoLayerReLU(d, width, scale=scale, key=key)

    return flow, init


def timed(fn):
    start = time.perf_counter()
    out = fn()
    jax.block_until_ready(jax.tree.leaves(out))
    return out, time.perf_counter() - start


def section_batched_vs_sequential(
    seeds: int, t1: float, rtol: float, n=200, d=20, width=50
):
    print(
        f"\n## 1. {seeds} seeds, separable n={n}, d={d}, width {width}, scale 1e-6, "
        f"t1={t1:g}, rtol {rtol:g}, kinks={KINKS}: one chunk, mapped and vmapped, "
        "against sequential solves\n"
    )
    flow, init = separable_problem(n, d, width)
    keys = jax.random.split(jax.random.key(1), seeds)
    ts = jnp.geomspace(1e-2, t1, 50)
    kw = dict(t1=t1, ts=ts, rtol=rtol, save_models=False, kinks=KINKS)

    def sequential():
        return [jf.solve(flow, init(k), **kw) for k in keys]

    def batched(vectorize):
        return jf.solve_ensemble(flow, init, keys, batch_size=seeds, segments=1,
                                 vectorize=vectorize, processes=1, **kw)  # fmt: skip

    timed(lambda: jf.solve(flow, init(keys[0]), **kw))  # compile
    sols, t_seq = timed(sequential)
    steps = np.array([int(s.stats["num_steps"]) for s in sols])
    grad_one, grad_batched = _gradient_cost(flow, init, keys)
    print("| mode | wall s | seeds/s | seeds bitwise equal to jf.solve alone | largest "
          "relative difference of the loss curves |")  # fmt: skip
    print("|---|---|---|---|---|")
    print(f"| {seeds} sequential jf.solve (warm) | {t_seq:.2f} | {seeds / t_seq:.1f} "
          "| - | - |")  # fmt: skip
    walls = {}
    for vectorize in (False, True):
        _, cold = timed(lambda: batched(vectorize))
        ens, walls[vectorize] = timed(lambda: batched(vectorize))
        same = sum(
            np.array_equal(ens.final.W[i], s.final.W)
            and np.array_equal(ens.metrics["loss"][i], s.metrics["loss"])
            for i, s in enumerate(sols)
        )
        agree = max(
            float(np.max(np.abs(s.metrics["loss"] - ens.metrics["loss"][i])))
            / float(np.max(np.abs(s.metrics["loss"])))
            for i, s in enumerate(sols)
        )
        how = "vmapped (vectorize=True)" if vectorize else "mapped (vectorize=False)"
        for label, wall in (("warm", walls[vectorize]), ("compilation included", cold)):
            print(f"| solve_ensemble, one chunk of {seeds}, {how}, {label} | "
                  f"{wall:.2f} | {seeds / wall:.1f} | {same}/{seeds} | {agree:.1e} |")  # fmt: skip
    print(
        f"\nMapped (the CPU default) against vmapped: {walls[True] / walls[False]:.2f}x "
        f"the speed; against sequential solves: {t_seq / walls[False]:.2f}x. Steps per "
        f"seed {steps.min()}-{steps.max()} (mean {steps.mean():.0f}): vmapped, the "
        f"chunk takes as many as its slowest seed. One gradient costs {grad_one:.1f} us "
        f"alone and {grad_batched:.1f} us per seed vmapped over {seeds} seeds."
    )


def _gradient_cost(flow, init, keys, reps=200):
    """Microseconds per seed of one gradient evaluation: alone, and vmapped."""
    models = eqx.filter_vmap(init)(keys)
    params, static = eqx.partition(models, eqx.is_inexact_array)
    one = jax.tree.map(lambda x: x[0], params)
    _, static_one = eqx.partition(init(keys[0]), eqx.is_inexact_array)

    def cost(fn, arg):
        fn = jax.jit(fn)
        jax.block_until_ready(fn(arg))
        start = time.perf_counter()
        for _ in range(reps):
            out = fn(arg)
        jax.block_until_ready(out)
        return (time.perf_counter() - start) / reps * 1e6

    field = lambda p: flow.vector_field(0.0, p, static_one)  # noqa: E731
    return cost(field, one), cost(jax.vmap(field), params) / len(keys)


def _measure(config: dict) -> dict:
    """Run one configuration in a fresh process; its timing and peak memory."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(config)],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def _child(config: dict) -> None:
    kind = config["kind"]
    if kind == "mnist":
        data = jf.datasets.mnist(digits=(0, 1), n=config["n"])
        flow = jf.GradientFlow(jf.losses.exponential, data)
        d, width = data.d, config["width"]

        def init(key):
            return jf.models.TwoLayerReLU(
                d, width, scale=config["scale"], init="gaussian", key=key
            )

    else:
        flow, init = separable_problem()
    keys = jax.random.split(jax.random.key(2), config["seeds"])
    kw = dict(
        t1=config["t1"],
        ts=jnp.geomspace(config["t1"] * 1e-3, config["t1"], config.get("times", 20)),
        rtol=config["rtol"],
        batch_size=config["batch_size"],
        segments=config.get("segments", 1),
        save_models=False,
        kinks=config.get("kinks", KINKS),
        processes=1,  # this process's path; section 6 measures worker processes
    )
    ens, cold = timed(lambda: jf.solve_ensemble(flow, init, keys, **kw))
    warm = None
    if config.get("warm", True):
        ens, warm = timed(lambda: jf.solve_ensemble(flow, init, keys, **kw))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # GiB (KiB units)
    device = jax.devices()[0]
    stats = device.memory_stats() if device.platform == "gpu" else None
    print(
        json.dumps(
            {
                "cold": cold,
                "warm": warm,
                "rss_gib": rss,
                "device_peak_gib": None
                if not stats
                else stats.get("peak_bytes_in_use", 0) / 2**30,
                "steps_max": int(np.max(ens.stats["num_steps"])),
                "steps_median": float(np.median(ens.stats["num_steps"])),
                "status": sorted(set(ens.status_name)),
            }
        )
    )


def section_batch_sizes(sizes, t1: float, rtol: float):
    print(
        f"\n## 2. Throughput and memory against batch size (separable n=200, d=20, "
        f"width 50, scale 1e-6, t1={t1:g}, rtol {rtol:g}; seeds = batch size, one "
        "chunk; a fresh process each)\n"
    )
    print(
        "| batch size | warm wall s | seeds/s | with compilation s | peak RSS GiB | "
        "device peak GiB | steps (median, max) |"
    )
    print("|---|---|---|---|---|---|---|")
    for size in sizes:
        r = _measure(
            dict(kind="separable", seeds=size, batch_size=size, t1=t1, rtol=rtol)
        )
        device = "-" if r["device_peak_gib"] is None else f"{r['device_peak_gib']:.2f}"
        print(
            f"| {size} | {r['warm']:.2f} | {size / r['warm']:.1f} | {r['cold']:.1f} | "
            f"{r['rss_gib']:.2f} | {device} | {r['steps_median']:.0f}, "
            f"{r['steps_max']} |",
            flush=True,
        )


def section_heavy_tail(seeds: int, rtol: float, n: int, d: int, cap: float):
    print(
        f"\n## 3. Heavy-tailed finishing times: {seeds} seeds, terminal event steady "
        "state (gradient norm 1e-6 of its initial value)\n"
    )
    # Least squares (jf.models.Linear), a data set per seed whose first input
    # column is scaled by r = P^(-1/2), P ~ Pareto(1) capped at `cap`: the
    # condition number grows like 1/r^2 = P, and an explicit solver's steps to the
    # steady state grow with it (stability limits the step, the slowest mode sets the
    # time). So the steps per seed are heavy-tailed: most seeds finish in ~100 steps,
    # a few need 100x more. A per-seed data set, `flow` as a function of the key.
    kx, kw = jax.random.split(jax.random.key(0))
    X = jax.random.normal(kx, (n, d))
    y = X @ jax.random.normal(kw, (d,)) + 0.1 * jax.random.normal(kw, (n,))

    def flow(key):
        r = jnp.minimum(jax.random.pareto(key, 1.0), cap) ** -0.5
        return jf.GradientFlow(jf.losses.square, jf.Dataset(X.at[:, 0].multiply(r), y))

    def init(key):
        return jf.models.Linear(d, key=key)

    keys = jax.random.split(jax.random.key(3), seeds)
    # The slowest seed ends near t = cap / 2; the default log-spaced segments start at
    # t1 / 1000, so most seeds leave after the first two.
    t1 = 2.0 * cap
    kw = dict(
        t1=t1,
        ts=jnp.geomspace(1e-2, t1, 40),
        rtol=rtol,
        events={"done": jf.events.SteadyState(1e-6)},
        save_models=False,
        batch_size=seeds,
        max_steps=10**6,
        processes=1,
    )

    modes = (
        ("one vmapped solve to the slowest seed's end", 1),
        ("16 log-spaced segments, finished seeds leave", 16),
    )
    # Compile every shape of both modes first (chunks shrink as seeds leave), then
    # time both warm.
    cold = [
        timed(lambda: jf.solve_ensemble(flow, init, keys, segments=m, **kw))[1]
        for _, m in modes
    ]
    rows = []
    for (label, segments), first in zip(modes, cold):
        ens, warm = timed(
            lambda: jf.solve_ensemble(flow, init, keys, segments=segments, **kw)
        )
        rows.append((label, first, warm, ens))
    times = np.asarray(rows[0][3].event_times["done"])
    steps = np.asarray(rows[0][3].stats["num_steps"])
    q = np.quantile(times, [0.1, 0.5, 0.9, 1.0])
    qs = np.quantile(steps, [0.1, 0.5, 0.9, 1.0])
    print(
        f"Finishing times: 10% {q[0]:.3g}, median {q[1]:.3g}, 90% {q[2]:.3g}, max "
        f"{q[3]:.3g}; steps per seed: 10% {qs[0]:.0f}, median {qs[1]:.0f}, 90% "
        f"{qs[2]:.0f}, max {qs[3]:.0f} (max / mean {qs[3] / steps.mean():.1f}); "
        f"statuses {sorted(set(rows[0][3].status_name))}.\n"
    )
    print("| mode | wall s (first call) | wall s (warm) | total steps |")
    print("|---|---|---|---|")
    for label, cold, warm, ens in rows:
        print(
            f"| {label} | {cold:.2f} | {warm:.2f} | {int(np.sum(ens.stats['num_steps']))} |"
        )
    same = np.allclose(
        rows[0][3].event_times["done"], rows[1][3].event_times["done"], rtol=1e-9
    )
    print(
        f"\nSegments are {rows[0][2] / rows[1][2]:.1f}x faster (warm); event times "
        f"agree to 1e-9: {same}."
    )


def section_mnist_memory(seeds: int, batch_sizes, n: int, t1: float):
    print(
        f"\n## 4. Memory bounded by the chunk: {seeds} seeds, MNIST 0 vs 1 (n={n}, "
        f"d=784), width 50, gaussian init scale 1e-3, metrics only at 4 times, t1={t1:g}, "
        f"kinks={KINKS} (a fresh process each)\n"
    )
    try:
        jf.datasets.mnist(digits=(0, 1), n=10)
    except FileNotFoundError as error:
        print(f"Skipped: {error}")
        return
    print("| seeds | batch size | wall s | peak RSS GiB | device peak GiB | steps |")
    print("|---|---|---|---|---|---|")
    for batch_size in batch_sizes:
        r = _measure(
            dict(
                kind="mnist",
                n=n,
                width=50,
                scale=1e-3,
                seeds=seeds,
                batch_size=batch_size,
                t1=t1,
                rtol=1e-8,
                segments=2,
                times=4,
                warm=False,
            )
        )
        device = "-" if r["device_peak_gib"] is None else f"{r['device_peak_gib']:.2f}"
        print(
            f"| {seeds} | {batch_size} | {r['cold']:.1f} | {r['rss_gib']:.2f} | "
            f"{device} | {r['steps_median']:.0f} |",
            flush=True,
        )


def _process_child(config: dict) -> None:
    """One process of section 5: its share of the seeds, timed; JSON on stdout."""
    start = time.perf_counter()
    if config["mode"] == "distributed":
        jax.distributed.initialize(
            f"127.0.0.1:{config['port']}", config["processes"], config["process"]
        )
    joined = time.perf_counter()
    flow, init = separable_problem()
    keys = jax.random.split(jax.random.key(2), config["seeds"])
    part = (
        (config["process"], config["processes"]) if config["mode"] == "part" else None
    )
    ens, wall = timed(
        lambda: jf.solve_ensemble(
            flow,
            init,
            keys,
            t1=config["t1"],
            ts=jnp.geomspace(config["t1"] * 1e-3, config["t1"], 20),
            rtol=config["rtol"],
            segments=8,
            save_models=False,
            kinks=KINKS,
            checkpoint_dir=config["out"],
            part=part,
            processes=1,  # one process per part, as in a job array
        )
    )
    print(
        json.dumps(
            {
                "initialize": joined - start,
                "solve": wall,
                "seeds": int(ens.num_seeds),
                "ok": bool(ens.succeeded.all()),
                "rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            }
        )
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def section_processes(counts, seeds: int, t1: float, rtol: float):
    print(
        f"\n## 5. Beyond one process: {seeds} seeds (separable n=200, d=20, width 50, "
        f"scale 1e-6, t1={t1:g}, rtol {rtol:g}, kinks={KINKS}, 8 segments, "
        "checkpointed), split over P processes of one CPU device each, all started at "
        "once; JAX's distributed runtime (a coordinator on 127.0.0.1, the parts "
        "joined into every process) or a job array (--part I/P, no runtime)\n"
    )
    work = Path(tempfile.mkdtemp(prefix="jaxflow-processes-"))
    # Compiled programs shared by the processes, as JAX's persistent cache on a shared
    # file system would: the first row fills it.
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        JAX_COMPILATION_CACHE_DIR=str(work / "xla-cache"),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    )
    env.pop("XLA_FLAGS", None)

    def run(mode: str, processes: int) -> dict:
        out = work / f"{mode}-{processes}-{time.monotonic_ns()}"
        port = _free_port()
        start = time.perf_counter()
        children = [
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--process-child",
                    json.dumps(
                        dict(
                            mode=mode,
                            processes=processes,
                            process=i,
                            port=port,
                            seeds=seeds,
                            t1=t1,
                            rtol=rtol,
                            out=str(out),
                        )
                    ),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )  # fmt: skip
            for i in range(processes)
        ]
        results = []
        for child in children:
            stdout, stderr = child.communicate(timeout=3600)
            if child.returncode != 0:
                raise RuntimeError(stderr[-3000:])
            results.append(json.loads(stdout.strip().splitlines()[-1]))
        wall = time.perf_counter() - start
        written = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
        joined = jf.load_ensemble(out)
        return dict(
            wall=wall,
            solve=max(r["solve"] for r in results),
            initialize=max(r["initialize"] for r in results),
            rss=max(r["rss_gib"] for r in results),
            ok=all(r["ok"] for r in results) and joined.num_seeds == seeds,
            bytes_per_seed=written / seeds,
            final=np.asarray(joined.final["W"]),
        )

    print(
        "| path | processes | seeds each | wall s (start to exit) | slowest solve s | "
        "initialize s | seeds/s (wall) | speed-up (wall) | peak RSS GiB a process | "
        "run directory bytes a seed, at the end | all succeeded, joined equal to one process |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    cold = run("single", 1)
    rows = [("one process, cold (compiles)", 1, cold)]
    base = run("single", 1)
    rows.append(("one process (solve_ensemble)", 1, base))
    rows.append(("distributed runtime, 1 process", 1, run("distributed", 1)))
    rows.append(("part 0/1", 1, run("part", 1)))
    for p in counts:
        if p > 1:
            rows.append(("distributed runtime", p, run("distributed", p)))
            rows.append(("job array (--part I/P)", p, run("part", p)))
    for label, p, r in rows:
        equal = r["ok"] and np.array_equal(r["final"], base["final"])
        print(
            f"| {label} | {p} | {-(-seeds // p)} | {r['wall']:.2f} | {r['solve']:.2f} | "
            f"{r['initialize']:.2f} | {seeds / r['wall']:.2f} | "
            f"{base['wall'] / r['wall']:.2f} | {r['rss']:.2f} | "
            f"{r['bytes_per_seed']:.0f} | {equal} |",
            flush=True,
        )
    over = {label: r["wall"] / base["wall"] for label, p, r in rows[2:4]}
    print(
        "\nAt one process, wall against the one-process path: "
        + ", ".join(f"{label} {ratio:.3f}x" for label, ratio in over.items())
        + f". Compilation (cold minus warm, one process): "
        f"{cold['wall'] - base['wall']:.1f} s."
    )
    shutil.rmtree(work, ignore_errors=True)


def section_vmapped(
    seed_counts, t1: float, rtol: float, kinks_modes, n=100, d=10, width=20
):
    """Issue 38: the vmapped path (GPU default) against the mapped one (CPU default)
    and a Python loop of a jitted `jf.solve`, in the default kink mode and plain."""
    print(
        f"\n## 6. Vmapped, mapped and a loop of jitted solves: separable n={n}, d={d}, "
        f"width {width}, scale 1e-6, exponential loss, t1={t1:g}, rtol {rtol:g}, 20 "
        "saved times; warm walls (each call run twice, the second timed)\n"
    )
    flow, init = separable_problem(n, d, width)
    ts = jnp.linspace(t1 / 20, t1, 20)
    cores = jf._devices.usable_cores()
    print(f"The CPU default is `solve_ensemble` with neither `vectorize` nor `processes`: "
          f"here {min(cores, max(seed_counts))} worker processes (one per core, "
          f"{cores}). 'one process' is `processes=1`, the path each worker runs. Cold: "
          "the first call (worker start and compilation included).\n")  # fmt: skip
    print("| seeds | kinks | default s (cold) | one process s | vmapped s | loop s | "
          "loop / default | one process / default | vmapped / one process | steps "
          "mean (max) | vmapped max relative difference |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for seeds in seed_counts:
        keys = jax.random.split(jax.random.key(1), seeds)
        for kinks in kinks_modes:
            kw = dict(t1=t1, ts=ts, rtol=rtol, kinks=kinks, save_models=False)
            solve = jax.jit(lambda k: jf.solve(flow, init(k), **kw))

            def ensemble(**given):
                return jf.solve_ensemble(flow, init, keys, batch_size=seeds, segments=1,
                                         **given, **kw)  # fmt: skip

            walls, outs, cold = {}, {}, {}
            for way, fn in (
                ("default", lambda: ensemble()),
                ("one", lambda: ensemble(vectorize=False, processes=1)),
                ("vmapped", lambda: ensemble(vectorize=True)),
                ("loop", lambda: [solve(k) for k in keys]),
            ):
                _, cold[way] = timed(fn)
                outs[way], walls[way] = timed(fn)
            one, vmapped = outs["one"], outs["vmapped"]
            assert all(
                np.array_equal(a, b)
                for a, b in zip(jax.tree.leaves(outs["default"].final),
                                jax.tree.leaves(one.final))
            ), "the default's results differ from one process's"  # fmt: skip
            steps = np.asarray(one.stats["num_steps"])
            worst = max(
                float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(b))
                for a, b in zip(jax.tree.leaves(vmapped.final),
                                jax.tree.leaves(one.final))
            )  # fmt: skip
            w = walls
            print(f"| {seeds} | {kinks} | {w['default']:.2f} ({cold['default']:.1f}) "
                  f"| {w['one']:.2f} | {w['vmapped']:.2f} | {w['loop']:.2f} | "
                  f"{w['loop'] / w['default']:.2f} | {w['one'] / w['default']:.2f} | "
                  f"{w['vmapped'] / w['one']:.2f} | {steps.mean():.0f} ({steps.max()}) "
                  f"| {worst:.1e} |", flush=True)  # fmt: skip


def section_branches(seeds: int, t1: float, rtol: float, n=100, d=10, width=20):
    """Issue 38: where a vmapped default-mode solve's time goes, branch by branch.

    Each rare branch (a `jaxflow._roots.when` site) is run `1 + EXTRA` times in turn,
    the last result kept: the wall's increase over `EXTRA` is that branch's cost, on the
    same trajectory (the same bits). How often each branch is taken is counted one seed
    after the other (mapped), in a run of its own."""
    EXTRA = 4
    import unittest.mock

    from jaxflow import _roots
    from jaxflow._kinks._min_norm import field

    print(
        f"\n## 7. The branches of a vmapped default-mode solve: {seeds} seeds of "
        f"section 6's problem, t1={t1:g}, rtol {rtol:g}, {len(jax.devices())} "
        "device(s). Each branch run 5 times in turn: its cost is a quarter of the "
        "wall's increase (warm, best of 2 against the unchanged solve's best of 2, "
        "interleaved)\n"
    )
    flow, init = separable_problem(n, d, width)
    keys = jax.random.split(jax.random.key(1), seeds)
    ts = jnp.linspace(t1 / 20, t1, 20)
    original = _roots._branch
    sites, taken = {}, {}

    def site() -> str:  # the caller of `when`: this frame, `_branch`, `when`, it
        code, line = sys._getframe(3).f_code, sys._getframe(3).f_lineno
        return f"{code.co_name} ({Path(code.co_filename).name}:{line})"

    def recording(call, pred, dynamic, default):
        sites.setdefault(site(), None)
        return original(call, pred, dynamic, default)

    def counting(call, pred, dynamic, default):
        where = site()

        def add(p):
            taken[where] = taken.get(where, 0) + int(p)
            return p

        shape = jax.ShapeDtypeStruct(jnp.shape(pred), jnp.bool_)
        pred = jax.pure_callback(add, shape, pred)  # (the predicate, counted)
        return original(call, pred, dynamic, default)

    def doubling(target):
        def patched(call, pred, dynamic, default):
            if site() != target:
                return original(call, pred, dynamic, default)

            def repeated(dynamic):
                out = call(dynamic)
                for _ in range(EXTRA):  # each call's input depends on the last output
                    keep = jax.lax.optimization_barrier(jnp.array(False))
                    again = call(jax.lax.optimization_barrier((dynamic, out))[0])
                    out = jax.tree.map(lambda a, b: jnp.where(keep, a, b), out, again)
                return out

            return original(repeated, pred, dynamic, default)

        return patched

    def compiled(patch, vectorize, variant):
        """The solve, traced with `patch` in place; a distinct `max_steps` (never
        reached) for each variant keeps each compiled program apart. The min-norm
        field is jitted on its own: its trace is dropped, to be traced anew."""
        run = lambda: jf.solve_ensemble(  # noqa: E731
            flow, init, keys, t1=t1, ts=ts, rtol=rtol, batch_size=seeds, segments=1,
            vectorize=vectorize, save_models=False, progress=False,
            max_steps=10**6 + variant,
        )  # fmt: skip
        field._cached.clear_cache()
        with unittest.mock.patch.object(_roots, "_branch", patch):
            return run, timed(run)[0]

    compiled(counting, False, 1)
    base, out = compiled(recording, True, 0)
    steps = np.asarray(out.stats["num_steps"])
    seed_steps = steps.sum()
    whole = min(timed(base)[1] for _ in range(2))
    print(f"Whole solve, vmapped: {whole:.2f} s; {seed_steps} seed-steps, the longest "
          f"seed {steps.max()} steps.\n")  # fmt: skip
    print(
        "| branch (`when` site) | taken per seed-step | cost s | share of the solve |"
    )
    print("|---|---|---|---|")
    for i, where in enumerate(sites, start=2):
        if not taken.get(where):  # (nothing to measure: its work never runs)
            print(f"| {where} | 0 | - | - |")
            continue
        run = compiled(doubling(where), True, i)[0]
        pairs = [(timed(run)[1], timed(base)[1]) for _ in range(2)]
        cost = (min(p[0] for p in pairs) - min(p[1] for p in pairs)) / EXTRA
        print(f"| {where} | {taken.get(where, 0) / seed_steps:.3f} | {cost:.3f} | "
              f"{cost / whole:.1%} |", flush=True)  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", type=int, nargs="*", default=[1, 2, 3, 4, 5, 6])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--processes",
        type=int,
        nargs="*",
        default=[1, 2, 4],
        help="section 5: the numbers of processes",
    )
    parser.add_argument(
        "--process-seeds",
        type=int,
        default=None,
        help="section 5: the number of seeds (default 64, --quick 16)",
    )
    parser.add_argument(
        "--kinks",
        nargs="*",
        default=["auto", "plain"],
        help="section 6: the kink modes ('general': the general sliding treatment)",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--process-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    # MNIST: JAXFLOW_DATA, else the project's shared data beside the checkout.
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
    if "JAXFLOW_DATA" not in os.environ and shared.is_dir():
        os.environ["JAXFLOW_DATA"] = str(shared)
    if args.child is not None:
        return _child(json.loads(args.child))
    if args.process_child is not None:
        return _process_child(json.loads(args.process_child))
    device = jax.devices()[0]
    print(
        f"# jaxflow ensemble benchmark: {platform.machine()}, {device.platform} "
        f"({device.device_kind}, {len(jax.devices())} device(s)), {os.cpu_count()} "
        f"cores, jax {jax.__version__}, jaxflow {jf.__version__}"
    )
    quick = args.quick
    if 1 in args.sections:
        # The study's size, then a small one where per-step overhead dominates.
        for n, d, width in ((200, 20, 50), (40, 10, 10)):
            section_batched_vs_sequential(
                16 if quick else 64, 10.0 if quick else 100.0, 1e-8, n, d, width
            )
    if 2 in args.sections:
        sizes = [1, 4, 16] if quick else [1, 4, 16, 64, 256, 1024]
        section_batch_sizes(sizes, 0.1, 1e-8)
    if 3 in args.sections:
        section_heavy_tail(32 if quick else 64, 1e-8, 1000, 20, 1e4)
    if 4 in args.sections:
        cpu = device.platform == "cpu"
        if quick:
            section_mnist_memory(16, [4, 16], 500, 1e-3)
        else:  # the study's size; on two CPU cores a short horizon (a step or two a
            # seed: one gradient of n=2000 costs ~10 ms a seed here). Memory depends
            # on the chunk and the number of seeds, not on the steps.
            section_mnist_memory(
                1024, [64, 256] if cpu else [64, 256, 1024], 2000, 1e-4 if cpu else 10.0
            )
    if 5 in args.sections:
        seeds = args.process_seeds or (16 if quick else 64)
        section_processes(args.processes, seeds, 10.0 if quick else 100.0, 1e-8)
    if 6 in args.sections:
        section_vmapped(
            [4, 16] if quick else [16, 128], 2.0 if quick else 20.0, 1e-8, args.kinks
        )
    if 7 in args.sections:
        section_branches(4 if quick else 16, 1.0 if quick else 2.0, 1e-8)


if __name__ == "__main__":
    main()
