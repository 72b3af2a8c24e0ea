"""The GPU path in one command: seeds per second against the batch size, vmapped and
mapped, plain and in the default kink mode, on problem (i) and on MNIST 0 vs 1; the
vector field's achieved FLOP/s against the device's float64 peak; the compile times.

    python benchmarks/gpu.py            # the study's sizes, on a GPU
    python benchmarks/gpu.py --cpu      # small sizes on the CPU: a smoke run

The sweep keeps to a time budget (`--budget`, 420 s by default, 30 s with `--cpu`):
before each configuration it estimates that configuration's cost (compilation as the
last of its kind, the run from the last batch size's, linear in the seeds mapped and
at most linear vmapped) and skips it, saying so, where the budget would be passed.
Each row: the first call (compile and run) and a second, timed, call; seeds/s from the
second; compile s their difference. MNIST is read from `JAXFLOW_DATA` (or the project's
shared data beside the checkout), and skipped, saying so, where absent.
"""

import argparse
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from ensemble import separable_problem
from run import flops_section, table, timed

import jaxflow as jf


# name -> (flow, init(key), description), at the study's sizes or `--cpu`'s.
def separable(small: bool):
    n, d, width = (40, 10, 10) if small else (200, 20, 50)
    flow, init = separable_problem(n, d, width)
    return (
        flow,
        init,
        f"problem (i): separable n={n}, d={d}, width {width}, balanced 1e-6",
    )


def mnist(small: bool):
    n, width = (100, 10) if small else (2000, 50)
    data = jf.datasets.mnist(digits=(0, 1), n=n)

    def init(key):
        return jf.models.TwoLayerReLU(784, width, scale=1e-6, init="gaussian", key=key)

    return (
        jf.GradientFlow(jf.losses.exponential, data),
        init,
        f"MNIST 0 vs 1: n={n}, width {width}, gaussian 1e-6",
    )


class Budget:
    """Seconds left for the sweep, and each kind of configuration's last costs."""

    def __init__(self, seconds: float):
        self.end = time.perf_counter() + seconds
        self.last = {}  # (problem, kinks, way) -> (batch, compile s, warm s)

    def past(self, kind, batch: int) -> float | None:
        """The estimated cost of a configuration if it would end past the budget
        (or the budget is spent), else None."""
        left = self.end - time.perf_counter()
        if kind not in self.last:
            return None if left > 0 else 0.0
        size, compile_s, warm = self.last[kind]
        cost = compile_s + 2 * warm * batch / size  # mapped: linear; vmapped: at most
        return None if cost <= left else cost


def throughput(problems: dict, batches, t1: float, rtol: float, budget: Budget):
    """Seeds/s against the batch size, a row per configuration, printed as it comes:
    the smallest batch of every configuration first, so that each kind has a row
    before the budget runs out."""
    for batch in batches:
        keys = jax.random.split(jax.random.key(1), batch)
        for name, (flow, init, _) in problems.items():
            for kinks in ("plain", "auto"):
                for way in ("vmapped", "mapped"):
                    kind = (name, kinks, way)
                    skip = budget.past(kind, batch)
                    if skip is not None:
                        row = [name, kinks, way, batch] + ["-"] * 4
                        row.append(f"not run: about {skip:.0f} s, past the budget"
                                   if skip else "not run: the budget is spent")  # fmt: skip
                        print(table(HEADER, [row]).splitlines()[-1], flush=True)
                        continue
                    run = lambda: jf.solve_ensemble(  # noqa: E731
                        flow, init, keys, t1=t1, ts=jnp.array([t1]), rtol=rtol,
                        batch_size=batch, segments=1, vectorize=way == "vmapped",
                        processes=1,
                        kinks=kinks, metrics={"loss": jf.metrics.loss},
                        save_models=False, progress=False,
                    )  # fmt: skip
                    first = timed(run, warm=lambda: None)[1]
                    ens, warm = timed(run, warm=lambda: None)
                    compile_s = max(first - warm, 0.0)
                    budget.last[kind] = (batch, compile_s, warm)
                    steps = np.asarray(ens.stats["num_steps"])
                    statuses = ", ".join(sorted(set(map(str, ens.status_name))))
                    row = [name, kinks, way, batch, f"{batch / warm:.3g}",
                           f"{warm:.2f}", f"{compile_s:.1f}",
                           f"{steps.mean():.0f} ({steps.max()})", statuses]  # fmt: skip
                    print(table(HEADER, [row]).splitlines()[-1], flush=True)


HEADER = ["problem", "kinks", "way", "batch", "seeds/s", "warm s", "compile s",
          "steps mean (max)", "statuses"]  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="small sizes on the CPU")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds for the sweep (default 420, --cpu 30)")  # fmt: skip
    args = parser.parse_args()
    if args.cpu:
        jax.config.update("jax_platforms", "cpu")
    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    if "JAXFLOW_DATA" not in os.environ and shared.is_dir():
        os.environ["JAXFLOW_DATA"] = str(shared)
    small = args.cpu
    batches = (1, 4) if small else (1, 8, 64, 512, 1024)
    t1 = 0.5 if small else 2.0
    rtol = 1e-8
    start = time.perf_counter()
    budget = Budget(args.budget or (30.0 if small else 420.0))
    device = jax.devices()[0]
    print(f"# jaxflow GPU path: {device.platform} ({device.device_kind}, "
          f"{len(jax.devices())} device(s)), {platform.machine()}, {os.cpu_count()} "
          f"cores, jax {jax.__version__}, jaxflow {jf.__version__}, "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")  # fmt: skip
    print(f"\nt1={t1:g}, rtol {rtol:g}, metrics: the loss at t1; kinks 'auto' is the "
          "default mode; mapped is one seed after the other (the CPU default), "
          f"vmapped the seeds as lanes (the GPU default); budget {budget.end - time.perf_counter():.0f} s.\n")  # fmt: skip
    problems = {"(i)": separable}
    try:
        jf.datasets.mnist(digits=(0, 1), n=10)
        problems["MNIST"] = mnist
    except FileNotFoundError as error:
        print(f"MNIST skipped: {error}\n")
    built = {name: make(small) for name, make in problems.items()}
    for name, (flow, init, text) in built.items():
        print(f"- {name}: {text}")
    print("\n## Seeds per second against the batch size\n")
    print(table(HEADER, []), flush=True)
    throughput(built, batches, t1, rtol, budget)
    print("\n## The vector field's FLOP/s (one gradient, batch of one)\n")
    for name, (flow, init, text) in built.items():
        print(f"### {text}\n")
        print(flops_section(flow, init(jax.random.key(0))), flush=True)
        print()
    print(f"Whole run: {time.perf_counter() - start:.0f} s.")


if __name__ == "__main__":
    main()
