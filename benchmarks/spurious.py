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

    python benchmarks/spurious.py --resolve 1e5    # unsettled seeds continued to 1e5
    python benchmarks/spurious.py --widths 20000 --scales 1e-3 0.1 1 --seeds 4 \
        --by-evidence
    python benchmarks/spurious.py --sections knots # the knots data at several horizons

`--resolve T` continues the seeds whose steady-state event did not fire by `--t1`, or
fired on the 1e-8 floor at a point `jaxflow.classify` calls not stationary (polished
gradient above 1e-8: at width 1000, lambda 0.1 all 20 of the 32 seeds not settled),
from their final state to t = T, with the steady state's floor lowered to
`--resolve-atol` (default 1e-10: the first solve's 1e-8 stops seeds that are still
moving) and the solver's rtol lowered by the same factor, and classifies them again;
the table then shows the fraction spurious before (among all seeds and among the
settled ones) and after the re-solve, and how many seeds are still unsettled at T.

`--by-evidence` skips `jaxflow.classify`, whose Newton polish factors the Hessian of
the living neurons densely (width 2e4, lambda 1e-3: 6332 living neurons, 1.9e4
parameters, a 2.9 GB matrix to factor by SVD at every Newton step): a seed is
then judged by the flow's end alone, spurious when its steady-state event fired
above loss 1e-9, global when it fired at or below, not stationary when it did not
(no saddle/local-minimum split).

`--sections knots` solves the knots data (width 100, scale 1e-3, 8 seeds, the seeds
and data of `jaxflow spurious --data knots`) without a terminal event to the largest
of `--horizons` (default 100, 1e3, 1e4), and gives per horizon the loss over seeds,
its decrease since the plateau (the loss at the first horizon), and the verdict of
`jaxflow.classify` on the model there; then the verdict at the last horizon with the
escape re-solved for each of `--escape-times` (default 1e3) instead of 100.
"""

import argparse
import collections
import dataclasses
import os
import platform
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import jaxflow as jf


HERE = Path(__file__).resolve().parent


def _solve(flow, init, keys, t1, rtol, atol, t0=0.0, progress=False):
    return jf.solve_ensemble(
        flow, init, keys, t0=t0, t1=t1, ts=jnp.array([t1]), rtol=rtol,
        events={"stationary": jf.events.SteadyState(1e-7, atol=atol)},
        metrics={"loss": jf.metrics.loss}, batch_size=len(keys), segments=8,
        kinks="auto", progress=progress,
    )  # fmt: skip


def _unsettled(ens, verdicts) -> np.ndarray:
    """The seeds that ran to t1 without their steady-state event, or whose event
    fired on the gradient floor but whose verdict is "not stationary"."""
    moving = [v is not None and v.kind == "not stationary" for v in verdicts]
    return np.flatnonzero((np.asarray(ens.status_name) == "successful") | moving)


def _seed(tree, s):
    return jax.tree.map(lambda x: x[s], tree)


def _verdicts(flow, ens, by_evidence):
    if not by_evidence:
        return jf.experiments.classify_ensemble(flow, ens, min_loss=0.0)
    return [
        _Evidence.of(flow, _seed(ens.final, s), str(ens.status_name[s]))
        for s in range(ens.num_seeds)
    ]


@dataclasses.dataclass(frozen=True)
class _Evidence:
    """A verdict from the flow's end alone (no polish, no Hessian): `--by-evidence`."""

    kind: str
    loss: float
    grad_norm: float

    @classmethod
    def of(cls, flow, model, status):
        model = jax.tree.map(lambda x: jnp.asarray(x) if eqx.is_array(x) else x, model)
        loss = float(flow(model))
        grad = float(jf.metrics.grad_norm(model, flow))
        if status != "event_occurred":
            kind = "not stationary" if status == "successful" else "failed"
        else:
            kind = "global minimum" if loss <= 1e-9 else "saddle"
        return cls(kind, loss, grad)

    def as_dict(self):
        return dataclasses.asdict(self)


def cell(width, scale, seeds, t1, rtol, init_kind="balanced", resolve=None,
         resolve_atol=1e-10, by_evidence=False):  # fmt: skip
    """The cell's summary, and after the re-solve of its unsettled seeds to t =
    `resolve` (None without), with the number re-solved, still unsettled, and the
    times spent."""
    data = jf.datasets.boursier_flammarion()
    flow = jf.GradientFlow(jf.losses.square, data)

    def init(k):
        return jf.models.TwoLayerReLU(
            1, width, scale=scale, init=init_kind, bias=True, fan="width", key=k
        )

    keys = jax.random.split(jax.random.key(width * 7919 + int(-np.log10(scale))), seeds)
    times = {}
    start = time.perf_counter()
    ens = _solve(flow, init, keys, t1, rtol, 1e-8)
    times["flow"] = time.perf_counter() - start
    start = time.perf_counter()
    verdicts = _verdicts(flow, ens, by_evidence)
    times["classify"] = time.perf_counter() - start
    summary = jf.experiments.spurious_summary(ens, verdicts, data, 0.0)
    after, again = None, _unsettled(ens, verdicts)
    still = 0
    if resolve is not None and again.size:
        moving = _seed(ens.final, again)

        def final(k):  # the key is the seed's place in `again`
            return _seed(moving, jax.random.key_data(k)[-1])

        start = time.perf_counter()
        more = _solve(
            flow, final, jax.vmap(jax.random.key)(jnp.arange(again.size)),
            # The solver leaves a gradient of about rtol times the parameters near a
            # stationary point: a floor lowered from 1e-8 needs rtol lowered alike.
            resolve, rtol * resolve_atol / 1e-8, resolve_atol, t0=t1, progress=True,
        )  # fmt: skip
        times["resolve"] = time.perf_counter() - start
        start = time.perf_counter()
        verdicts, new = list(verdicts), _verdicts(flow, more, by_evidence)
        for i, v in zip(again, new):
            verdicts[i] = v
        times["reclassify"] = time.perf_counter() - start
        after = jf.experiments.spurious_summary(ens, verdicts, data, 0.0)
        still = _unsettled(more, new).size
    return summary, after, again.size, still, times


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--sections", nargs="*", choices=("phase", "knots"), default=["phase"]
    )
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
    parser.add_argument(
        "--resolve", type=float, default=None, metavar="T",
        help="continue the seeds not settled by --t1 to t = T and classify again",
    )  # fmt: skip
    parser.add_argument("--resolve-atol", type=float, default=1e-10)
    parser.add_argument(
        "--by-evidence", action="store_true",
        help="judge each seed by the flow's end, without jaxflow.classify",
    )  # fmt: skip
    parser.add_argument(
        "--horizons", type=float, nargs="*", default=[1e2, 1e3, 1e4],
        help="the knots section's horizons",
    )  # fmt: skip
    parser.add_argument(
        "--escape-times", type=float, nargs="*", default=[1e3],
        help="the knots section's escape re-solve times at the last horizon",
    )  # fmt: skip
    args = parser.parse_args()
    device = jax.devices()[0]
    print(
        f"# jaxflow spurious phase diagram: {platform.machine()}, {device.platform}, "
        f"{os.cpu_count()} cores, jax {jax.__version__}, jaxflow {jf.__version__}\n"
    )
    if "phase" in args.sections:
        phase(args)
    if "knots" in args.sections:
        knots(args.horizons, args.escape_times, args.rtol)


def phase(args):
    widths, scales, seeds = args.widths, args.scales, args.seeds
    if args.quick:
        widths, scales, seeds = [10, 50], [1e-3, 1.0], 8
    judge = (
        "from the flow's end alone (--by-evidence: no polish or Hessian; 'saddle' "
        "counts every seed settled above loss 1e-9, saddle or local minimum, the "
        "gradient column is the flow's end's)"
        if args.by_evidence
        else "by jaxflow.classify (min_loss 0)"
    )
    print(
        f"Three points, mean square loss, {args.init} init, {seeds} seeds a cell, "
        f"rtol {args.rtol:g}, steady state max(1e-7 g0, 1e-8) or t = {args.t1:g}; "
        f"verdicts {judge}.\n"
    )
    resolved = ""
    if args.resolve is not None:
        print(
            f"Re-solve: the seeds whose steady state did not fire by t = {args.t1:g}, "
            f"or whose verdict is not stationary, continue to t = {args.resolve:g}, "
            "steady state max(1e-7 g(t1), "
            f"{args.resolve_atol:g}), rtol {args.rtol * args.resolve_atol / 1e-8:g}; "
            "'after' counts their new verdicts, as do the columns from 'at least "
            "squares' on; 'unsettled' how many are still either.\n"
        )
        resolved = (
            " re-solved | spurious after | spurious / settled after | unsettled after "
            "| re-solve s |"
        )
    columns = (
        "| width | lambda | spurious | spurious / settled |" + resolved
        + " at least squares | saddle | local min | global min | not stationary | "
        "failed | final loss (median) | largest polished grad | steps acc/rej (max) "
        "| flow s | classify s |"
    )  # fmt: skip
    print(columns)
    print("|---" * (columns.count("|") - 1) + "|")
    grid = np.full((len(widths), len(scales)), np.nan)
    start = time.perf_counter()
    for a, width in enumerate(widths):
        for b, scale in enumerate(scales):
            s, after, again, still, times = cell(
                width, scale, seeds, args.t1, args.rtol, args.init, args.resolve,
                args.resolve_atol, args.by_evidence,
            )  # fmt: skip
            # Each cell compiles its own shapes; one process holding all of them runs
            # past the kernel's limit on memory maps (vm.max_map_count) and XLA aborts.
            jax.clear_caches()
            last = s if after is None else after
            c, acc = last["counts"], s["accuracy"]
            losses = [r["verdict"]["loss"] for r in last["seeds"] if r["verdict"]]
            grid[a, b] = last["spurious"] / last["of"]
            row = f"| {width} | {scale:g} | {_fraction(s)} |"
            if args.resolve is not None:
                row += (
                    f" {again} | {_fraction(after)} | {still} | "
                    f"{times.get('resolve', 0) + times.get('reclassify', 0):.1f} |"
                    if after is not None
                    else f" 0 | {_fraction(s)} | 0 | 0 |"
                )
            grads = [v["verdict"]["grad_norm"] for v in last["seeds"] if v["verdict"]]
            print(
                f"{row} {last['at_least_squares']}/{last['of']} | "
                f"{c.get('saddle', 0)} | {c.get('local minimum', 0)} | "
                f"{c.get('global minimum', 0)} | {c.get('not stationary', 0)} | "
                f"{c.get('failed', 0)} | {np.median(losses):.6f} | "
                f"{max(grads, default=np.nan):.1e} | "
                f"{acc['steps_accepted_max']}/{acc['steps_rejected_max']} | "
                f"{times['flow']:.1f} | {times['classify']:.1f} |",
                flush=True,
            )
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    _figure(widths, scales, grid)


def _fraction(s) -> str:
    """Spurious among all seeds | among the settled ones."""
    return f"{s['spurious']}/{s['of']} | {s['spurious']}/{s['settled']}"


def knots(horizons, escape_times, rtol, width=100, scale=1e-3, seeds=8):
    """The knots data at several horizons: the loss over seeds, its decrease since
    the first horizon, and `jaxflow.classify` on the model there (escape re-solved
    for t = 100); then the last model's escape re-solved for each of `escape_times`."""
    # The data and seeds of `jaxflow spurious --data knots --seed 0`.
    dkey, key = jax.random.split(jax.random.key(0))
    data = jf.datasets.boursier_flammarion("knots", key=dkey, n=40)
    flow = jf.GradientFlow(jf.losses.square, data)

    def init(k):
        return jf.models.TwoLayerReLU(
            1, width, scale=scale, init="balanced", bias=True, fan="width", key=k
        )

    horizons = np.sort(np.asarray(horizons, dtype=float))
    start = time.perf_counter()
    ens = jf.solve_ensemble(
        flow, init, jax.random.split(key, seeds), t1=horizons[-1],
        ts=jnp.asarray(horizons), rtol=rtol, save_models=True, kinks="auto",
        metrics={"loss": jf.metrics.loss, "grad_norm": jf.metrics.grad_norm},
    )  # fmt: skip
    flow_s = time.perf_counter() - start
    mse = jf.experiments.least_squares(data)[1]
    print(
        f"\nKnots data (n={data.n}), width {width}, balanced init scale {scale:g}, "
        f"{seeds} seeds (those of jaxflow spurious --data knots), rtol {rtol:g}, no "
        f"terminal event; least-squares MSE {mse:.6f}; flow to t = {horizons[-1]:g}: "
        f"{flow_s:.1f} s, statuses {sorted(set(map(str, ens.status_name)))}. Per "
        f"horizon t: loss over seeds, its decrease since t = {horizons[0]:g} (the "
        f"plateau), the flow's gradient norm, and jaxflow.classify on the model at t "
        f"(min_loss 0, escape re-solved for t = 100; 'moving': gradient > 1e-6, not "
        f"classified).\n"
    )
    print(
        "| t | loss median | loss min | loss max | decrease since plateau (median, "
        "max) | grad norm (median) | verdicts | escape decrease (median, min) | "
        "classify s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    loss = np.asarray(ens.metrics["loss"])
    grad = np.asarray(ens.metrics["grad_norm"])
    for h, t in enumerate(horizons):
        start = time.perf_counter()
        # Polishing a point still on its way fails slowly (64 Newton steps): a seed
        # whose flow moves faster than 1e-6 there is "moving" without a classify.
        verdicts = [
            jf.classify(flow, _seed(_seed(ens.ys, s), h), min_loss=0.0)
            for s in range(seeds)
            if grad[s, h] <= 1e-6
        ]
        kinds = collections.Counter(v.kind for v in verdicts)
        kinds.update({"moving": seeds - len(verdicts)} if len(verdicts) < seeds else {})
        escapes = [v.escape.loss_decrease for v in verdicts if v.escape is not None]
        drop = loss[:, 0] - loss[:, h]
        print(
            f"| {t:g} | {np.median(loss[:, h]):.7g} | {loss[:, h].min():.7g} | "
            f"{loss[:, h].max():.7g} | {np.median(drop):.3g}, {drop.max():.3g} | "
            f"{np.median(grad[:, h]):.2g} | "
            f"{', '.join(f'{k}: {n}' for k, n in sorted(kinds.items()))} | "
            f"{_spread(escapes)} | {time.perf_counter() - start:.1f} |",
            flush=True,
        )
    print(
        f"\nThe model at t = {horizons[-1]:g}, its escape (a new neuron of size 1e-3 "
        f"in the best empty cone, or along the negative curvature) re-solved for "
        f"longer than t = 100:\n"
    )
    print("| escape time | verdicts | escape decrease (median, min) | classify s |")
    print("|---|---|---|---|")
    for t in escape_times:
        start = time.perf_counter()
        verdicts = [
            jf.classify(flow, _seed(ens.final, s), min_loss=0.0, escape_time=float(t))
            for s in range(seeds)
        ]
        kinds = collections.Counter(v.kind for v in verdicts)
        escapes = [v.escape.loss_decrease for v in verdicts if v.escape is not None]
        print(
            f"| {t:g} | {', '.join(f'{k}: {n}' for k, n in sorted(kinds.items()))} | "
            f"{_spread(escapes)} | {time.perf_counter() - start:.1f} |",
            flush=True,
        )


def _spread(values) -> str:
    return f"{np.median(values):.3g}, {np.min(values):.3g}" if values else "-"


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
