"""Start-up: how long a new process takes before it has a result, with and without JAX's
persistent compilation cache (`jf.enable_compilation_cache`, which the `jaxflow` command
turns on by itself).

    python benchmarks/startup.py             # both sections
    python benchmarks/startup.py --runs 3    # more `jaxflow demo` runs on the warm cache

Section 1 runs `jaxflow demo` in new processes against one fresh cache folder
(`XDG_CACHE_HOME` in a temporary folder): the first run compiles and fills the cache,
the later ones load from it. Section 2 times the phases of the default (min-norm) solve
of `benchmarks/run.py`'s separable problem in new processes: tracing and lowering,
XLA compilation without the cache, and with it. Every row is a new process; walls are
wall-clock seconds on this machine.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time


PHASES = r"""
import json, sys, time
start = time.perf_counter()
import jax, jax.numpy as jnp
import jaxflow as jf
if sys.argv[1] == "cache":
    jf.enable_compilation_cache()
imported = time.perf_counter()
dkey, mkey = jax.random.split(jax.random.key(0))
data = jf.datasets.separable(dkey, 200, 20, 0.3)
net = jf.models.TwoLayerReLU(20, 50, scale=1e-6, key=mkey)
flow = jf.GradientFlow(jf.losses.exponential, data)
solve = jax.jit(lambda net: jf.solve(flow, net, t1=1e3, rtol=1e-8, save_models=False))
ready = time.perf_counter()
lowered = solve.lower(net)
traced = time.perf_counter()
compiled = lowered.compile()
done = time.perf_counter()
jax.block_until_ready(compiled(net))
ran = time.perf_counter()
print(json.dumps({"import": imported - start, "data": ready - imported,
                  "trace": traced - ready, "compile": done - traced, "run": ran - done,
                  "hlo_lines": lowered.as_text().count("\n")}))
"""


def demo_runs(runs: int) -> None:
    print("## 1. `jaxflow demo` in new processes, one fresh cache folder\n")
    print("| run | cache | wall s | of the first |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as out:
        env = {**os.environ, "XDG_CACHE_HOME": cache}
        first = None
        for run in range(1 + runs):
            start = time.perf_counter()
            subprocess.run(
                ["jaxflow", "demo", "--out", out],
                env=env,
                check=True,
                capture_output=True,
            )
            wall = time.perf_counter() - start
            first = first or wall
            state = "empty (compiles)" if run == 0 else "warm (loads)"
            print(f"| {run + 1} | {state} | {wall:.2f} | {wall / first:.0%} |")
        entries = sum(len(f) for _, _, f in os.walk(os.path.join(cache, "jaxflow")))
        print(f"\ncache entries after the runs: {entries}\n")


def phases() -> None:
    print("## 2. The default solve's phases (separable n=200, width 50, rtol 1e-8)\n")
    print(
        "| cache | import s | data s | trace+lower s | compile s | run s | HLO lines |"
    )
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "XDG_CACHE_HOME": cache}
        for mode in ("none", "cache", "cache"):
            out = subprocess.run(
                [sys.executable, "-c", PHASES, mode],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            p = json.loads(out.strip().splitlines()[-1])
            label = {"none": "off"}.get(mode, "on")
            print(
                f"| {label} | {p['import']:.2f} | {p['data']:.2f} | {p['trace']:.2f} | "
                f"{p['compile']:.2f} | {p['run']:.2f} | {p['hlo_lines']} |"
            )
    print(
        "\n(the first 'on' row fills the cache from a process that compiles; the "
        "second loads it)\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2, help="warm demo runs")
    parser.add_argument("--sections", nargs="+", type=int, default=[1, 2])
    args = parser.parse_args()
    import jax

    print(
        f"# Start-up: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, JAX {jax.__version__}, "
        f"{time.strftime('%Y-%m-%d')}\n"
    )
    if 1 in args.sections:
        demo_runs(args.runs)
    if 2 in args.sections:
        phases()


if __name__ == "__main__":
    main()
