"""Where the flow ends on Boursier and Flammarion's three points: the fraction of seeds
at a spurious stationary point against the initialisation scale and the width.

    python benchmarks/spurious.py                  # lambda 1e-4..1 x width 10..1000, 32 seeds
    python benchmarks/spurious.py --quick          # fewer cells and seeds
    python benchmarks/spurious.py --widths 10 100 --scales 1e-3 1

Data x = (-0.75, -0.5, 0.125), y = (1.1, 0.1, 0.8); one hidden ReLU layer with bias,
balanced init (w_j, b_j) ~ N(0, lambda^2/m I), a_j = +-|(w_j, b_j)|, mean square loss.
Each seed is solved (min-norm at kinks) until its gradient norm is 1e-7 of the initial
one or 1e-8, whichever is larger, or t = 1e4, then polished and classified by `jaxflow.classify` with the global
minimum 0 (the net interpolates three points once m >= 3). A seed is spurious when it
ends stationary above loss 0. The table gives, per cell, the counts of each verdict,
how many ended at the least-squares loss 0.175043, the run time, and the accuracy
evidence; `spurious_phase.png` draws the fraction spurious.
"""

import argparse
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxflow as jf


HERE = Path(__file__).resolve().parent


def cell(width, scale, seeds, t1, rtol, init_kind="balanced"):
    data = jf.datasets.boursier_flammarion()
    flow = jf.GradientFlow(jf.losses.square, data)

    def init(k):
        return jf.models.TwoLayerReLU(
            1, width, scale=scale, init=init_kind, bias=True, fan="width", key=k
        )

    keys = jax.random.split(jax.random.key(width * 7919 + int(-np.log10(scale))), seeds)
    start = time.perf_counter()
    ens = jf.solve_ensemble(
        flow, init, keys, t1=t1, ts=jnp.array([t1]), rtol=rtol,
        events={"stationary": jf.events.SteadyState(1e-7, atol=1e-8)},
        metrics={"loss": jf.metrics.loss}, batch_size=seeds, segments=8,
        kinks="auto",
    )  # fmt: skip
    flow_s = time.perf_counter() - start
    start = time.perf_counter()
    verdicts = jf.experiments.classify_ensemble(flow, ens, min_loss=0.0)
    classify_s = time.perf_counter() - start
    summary = jf.experiments.spurious_summary(ens, verdicts, data, 0.0)
    return summary, flow_s, classify_s, ens


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--widths", type=int, nargs="*", default=[10, 30, 100, 300, 1000]
    )
    parser.add_argument(
        "--scales", type=float, nargs="*", default=[1e-4, 1e-3, 1e-2, 1e-1, 1.0]
    )
    parser.add_argument("--seeds", type=int, default=32)
    parser.add_argument("--t1", type=float, default=1e4)
    parser.add_argument("--rtol", type=float, default=1e-9)
    parser.add_argument(
        "--init",
        choices=("balanced", "gaussian"),
        default="balanced",
        help="gaussian: every weight N(0, scale^2/width) alone, the 'unbalanced' "
        "initialisation of Boursier and Flammarion's code",
    )
    args = parser.parse_args()
    widths, scales, seeds = args.widths, args.scales, args.seeds
    if args.quick:
        widths, scales, seeds = [10, 50], [1e-3, 1.0], 8
    device = jax.devices()[0]
    print(
        f"# jaxflow spurious phase diagram: {platform.machine()}, {device.platform}, "
        f"{os.cpu_count()} cores, jax {jax.__version__}, jaxflow {jf.__version__}\n"
    )
    print(
        f"Three points, mean square loss, balanced init, {seeds} seeds a cell, rtol "
        f"{args.rtol:g}, steady state max(1e-7 g0, 1e-8) or t = {args.t1:g}; verdicts by "
        f"jaxflow.classify (min_loss 0).\n"
    )
    print(
        "| width | lambda | spurious | spurious / settled | at least squares | saddle | local min | global "
        "min | not stationary | failed | final loss (median) | largest polished "
        "grad | steps acc/rej (max) | flow s | classify s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    grid = np.full((len(widths), len(scales)), np.nan)
    start = time.perf_counter()
    for a, width in enumerate(widths):
        for b, scale in enumerate(scales):
            s, flow_s, classify_s, ens = cell(
                width, scale, seeds, args.t1, args.rtol, args.init
            )
            # Each cell compiles its own shapes; one process holding all of them runs
            # past the kernel's limit on memory maps (vm.max_map_count) and XLA aborts.
            jax.clear_caches()
            c, acc = s["counts"], s["accuracy"]
            losses = [r["verdict"]["loss"] for r in s["seeds"] if r["verdict"]]
            grid[a, b] = s["spurious"] / s["of"]
            print(
                f"| {width} | {scale:g} | {s['spurious']}/{s['of']} | "
                f"{s['spurious']}/{s['settled']} | {s['at_least_squares']}/{s['of']} | {c.get('saddle', 0)} | "
                f"{c.get('local minimum', 0)} | {c.get('global minimum', 0)} | "
                f"{c.get('not stationary', 0)} | {c.get('failed', 0)} | "
                f"{np.median(losses):.6f} | {acc['max_grad_norm_polished']:.1e} | "
                f"{acc['steps_accepted_max']}/{acc['steps_rejected_max']} | "
                f"{flow_s:.1f} | {classify_s:.1f} |",
                flush=True,
            )
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    _figure(widths, scales, grid)


def _figure(widths, scales, grid):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4), layout="constrained")
    image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", origin="lower")
    ax.set(
        xticks=range(len(scales)), xticklabels=[f"{s:g}" for s in scales],
        yticks=range(len(widths)), yticklabels=widths,
        xlabel="init scale lambda", ylabel="width m",
        title="fraction of seeds ending at a spurious stationary point",
    )  # fmt: skip
    for a in range(len(widths)):
        for b in range(len(scales)):
            ax.text(b, a, f"{grid[a, b]:.2f}", ha="center", va="center", color="w")
    fig.colorbar(image)
    fig.savefig(HERE / "spurious_phase.png", dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
