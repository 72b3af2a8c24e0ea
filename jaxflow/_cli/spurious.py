"""`jaxflow spurious`: where the flow ends, Boursier and Flammarion (2024)."""

import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxflow as jf

from .options import (
    add_command,
    add_options,
    ensemble_arguments,
    nonnegative_float,
    nonnegative_int,
    positive_float,
    run_options,
)


def add_parser(commands) -> None:
    parser = add_command(
        commands,
        "spurious",
        run,
        help="where the flow ends (Boursier and Flammarion 2024): per seed, the "
        "stationary point polished, classified (global minimum, local minimum, "
        "saddle) with its evidence and escape direction",
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--data",
        choices=("three-points", "knots"),
        default="three-points",
        help="the paper's three points or the knots data (--n points)",
    )
    add_options(data, n=40)
    model = parser.add_argument_group("model")
    add_options(model, width=200, scale=1e-3, init="balanced")
    solver = parser.add_argument_group("solver")
    add_options(solver, seeds=8, t1=1e4, rtol=1e-9, times=100, steady_state=1e-7)
    solver.add_argument(
        "--steady-state-atol",
        type=nonnegative_float,
        default=1e-8,
        metavar="ATOL",
        help="... or ATOL, whichever is larger (from a small init, RTOL times the "
        "initial gradient is below what the solver resolves)",
    )
    solver.add_argument(
        "--escape-time",
        type=positive_float,
        default=100.0,
        help="how long the escape test re-solves",
    )
    run_options(parser)
    parser.add_argument(
        "--show", type=nonnegative_int, default=4, help="seeds to print"
    )


def run(args) -> int:
    dkey, key = jax.random.split(jax.random.key(args.seed))
    which = {"three-points": "three_points", "knots": "knots"}[args.data]
    data = jf.datasets.boursier_flammarion(which, key=dkey, n=args.n)
    flow = jf.GradientFlow(jf.losses.square, data)

    def init(k):
        # Boursier and Flammarion's N(0, scale^2/width) init: balanced (|v_j| the norm
        # of (w_j, b_j)), or gaussian, every weight drawn alone (their 'unbalanced').
        return jf.models.TwoLayerReLU(
            1, args.width, scale=args.scale, init=args.init, bias=True, fan="width",
            key=k,
        )  # fmt: skip

    stationary = jf.events.SteadyState(args.steady_state, atol=args.steady_state_atol)
    start = time.perf_counter()
    ens = jf.solve_ensemble(
        flow,
        init,
        jax.random.split(key, args.seeds),
        t1=args.t1,
        ts=jnp.geomspace(1e-2, args.t1, args.times),
        rtol=args.rtol,
        events={"stationary": stationary},
        metrics={"loss": jf.metrics.loss, "grad_norm": jf.metrics.grad_norm},
        kinks="auto",
        **ensemble_arguments(args),
    )
    flow_s = time.perf_counter() - start
    # One hidden ReLU layer with bias interpolates n distinct 1-D points once it has
    # n neurons: the global minimum is then 0.
    min_loss = 0.0 if args.width >= data.n else None
    start = time.perf_counter()
    verdicts = jf.experiments.classify_ensemble(
        flow, ens, min_loss=min_loss, escape_time=args.escape_time
    )
    summary = jf.experiments.spurious_summary(ens, verdicts, data, min_loss)
    summary["run"] = {
        "data": args.data,
        "n": data.n,
        "width": args.width,
        "scale": args.scale,
        "init": {
            "balanced": "balanced, (w_j, b_j) ~ N(0, scale^2/width I), "
            "a_j = +-|(w_j, b_j)|",
            "gaussian": "gaussian ('unbalanced'), w_j, b_j, a_j ~ N(0, scale^2/width) "
            "independently",
        }[args.init],
        "loss": "mean square",
        "t1": args.t1,
        "steady_state": args.steady_state,
        "steady_state_atol": args.steady_state_atol,
        "flow_s": flow_s,
        "classify_s": time.perf_counter() - start,
    }
    out = Path(args.out)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    figure = jf.experiments.plot_spurious(
        data,
        ens,
        verdicts,
        out / "spurious.png",
        title=f"{args.data}, width {args.width}, scale {args.scale:g}",
    )
    print(_report(args, summary, figure))
    return 0 if bool(ens.succeeded.all()) else 1


def _report(args, summary: dict, figure) -> str:
    run, ls, acc = summary["run"], summary["least_squares"], summary["accuracy"]
    counts = ", ".join(f"{k}: {v}" for k, v in sorted(summary["counts"].items()))
    lines = [
        f"jaxflow spurious: {args.data} (n={run['n']}), width {args.width}, "
        f"{args.init} init scale {args.scale:g}, mean square loss, {args.seeds} seed(s); flow "
        f"{run['flow_s']:.1f} s, classification {run['classify_s']:.1f} s",
        f"least squares beta={np.round(ls['beta'], 6).tolist()}  MSE={ls['mse']:.6f}",
        f"ended at     {counts}; spurious {summary['spurious']}/{summary['of']} "
        f"({summary['spurious']}/{summary['settled']} of the settled), at the "
        f"least-squares loss {summary['at_least_squares']}/{summary['of']}",
    ]
    for row in summary["seeds"][: args.show]:
        v = row["verdict"]
        text = row["status"] if v is None else f"{v['kind']}: {v['evidence']}"
        loss = v["loss"] if v else float("nan")
        lines.append(f"seed {row['seed']:<7} loss {loss:.6g}  {text}")
    lines.append(
        f"accuracy     rtol {acc['rtol']:g}, statuses {acc['statuses']}, steps "
        f"accepted (max) {acc['steps_accepted_max']}, rejected (max) "
        f"{acc['steps_rejected_max']}, largest polished gradient norm "
        f"{acc['max_grad_norm_polished']:.2g}"
    )
    lines.append(f"figure       {figure}")
    return "\n".join(lines)
