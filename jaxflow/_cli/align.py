"""`jaxflow align`: early neuron alignment, Min, Mallada and Vidal (ICLR 2024)."""

import json
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import jaxflow as jf

from .options import (
    add_command,
    add_options,
    digit,
    ensemble_arguments,
    positive_float,
    run_options,
)


# Per data set, the values of the options left unset. MNIST: 12,665 x 50 kinks, crossed
# nearly every step; the default (min-norm) treatment steps over most of them
# (benchmarks/kinks.py: as fast as plain at rtol 1e-6, and exact).
_DEFAULTS = {
    "mnist": dict(n=None, width=50, init="gaussian", t1=30.0, rtol=1e-6, kinks="auto"),
    "separable": dict(
        n=200, width=50, init="balanced", t1=50.0, rtol=1e-8, kinks="auto"
    ),
    "toy": dict(n=20, width=20, init="balanced", t1=50.0, rtol=1e-8, kinks="auto"),
}
_LOSSES = {"exponential": jf.losses.exponential, "logistic": jf.losses.logistic}


def _notes() -> str:
    lines = ["options left unset take the data set's value (n=None: all of MNIST):"]
    for name, values in _DEFAULTS.items():
        pairs = ", ".join(f"{k}={v}" for k, v in values.items())
        lines.append(f"  {name + ':':<11}{pairs}")
    return "\n".join(lines)


def add_parser(commands) -> None:
    parser = add_command(
        commands,
        "align",
        run,
        help="early neuron alignment (Min, Mallada, Vidal 2024): located alignment "
        "times per neuron and seed, t1 against the theory's bound, the paper's figures",
        notes=_notes(),
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--data", choices=tuple(_DEFAULTS), default="separable", help="data set"
    )
    data.add_argument(
        "--digits", type=digit, nargs=2, default=(0, 1), help="the two MNIST digits"
    )
    data.add_argument(
        "--toy",
        choices=("two-points", "orthogonal", "circle"),
        default="two-points",
        help="2-D toy data",
    )
    data.add_argument("--c", type=positive_float, default=0.1, help="two-points angle")
    add_options(data, n=None, d=20, mu=0.3, root=None)
    model = parser.add_argument_group("model")
    model.add_argument(
        "--loss", choices=tuple(_LOSSES), default="exponential", help="loss"
    )
    add_options(model, width=None, scale=1e-6, init=None)
    solver = parser.add_argument_group("solver")
    add_options(solver, seeds=1, t1=None, rtol=None, times=201, kinks=None)
    solver.add_argument(
        "--delta", type=positive_float, default=1e-3, help="aligned: cos >= 1 - delta"
    )
    solver.add_argument(
        "--gd-lr",
        type=positive_float,
        help="also run gradient descent at this step from seed 0's init, overlaid",
    )
    run_options(parser)


def _data(args, key) -> jf.Dataset:
    if args.data == "mnist":
        return jf.datasets.mnist(
            digits=tuple(args.digits),
            n=args.n,
            root=args.root,
            progress=not args.quiet,
        )
    if args.data == "separable":  # separation exactly mu
        return jf.datasets.separable(key, args.n, args.d, args.mu, exact=True)
    if args.toy == "two-points":
        return jf.datasets.two_points(args.c)
    if args.toy == "orthogonal":
        return jf.datasets.orthogonal()
    return jf.datasets.circle_clusters(key, args.n // 2, args.n - args.n // 2)


def run(args) -> int:
    for name, value in _DEFAULTS[args.data].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    dkey, key = jax.random.split(jax.random.key(args.seed))
    data = _data(args, dkey)
    flow = jf.GradientFlow(_LOSSES[args.loss], data)

    def init(k):
        return jf.models.TwoLayerReLU(
            data.d, args.width, scale=args.scale, init=args.init, key=k
        )

    keys = jax.random.split(key, args.seeds)
    ts = jnp.linspace(0.0, args.t1, args.times)
    start = time.perf_counter()
    ens = jf.solve_ensemble(
        flow,
        init,
        keys,
        t1=args.t1,
        ts=ts,
        rtol=args.rtol,
        events=jf.experiments.alignment_events(args.delta),
        metrics=jf.experiments.alignment_metrics(init(keys[0]), flow),
        kinks=args.kinks,
        **ensemble_arguments(args),
    )
    elapsed = time.perf_counter() - start
    theory = eqx.filter_vmap(lambda m: jf.experiments.alignment_theory(data, m))(
        eqx.filter_vmap(init)(keys)
    )
    summary = jf.experiments.alignment_summary(
        ens, theory, data, reduction=flow.loss.reduction
    )
    summary["run"] = {
        "data": args.data,
        "n": data.n,
        "d": data.d,
        "width": args.width,
        "init": args.init,
        "scale": args.scale,
        "loss": args.loss,
        "delta": args.delta,
        "wall_s": elapsed,
    }
    gd = None  # seed 0's initialisation, by gradient descent
    if args.gd_lr is not None:
        summary["gd"], gd = _gradient_descent(args, flow, init(keys[0]), ts, ens)
    out = Path(args.out)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    figure = jf.experiments.plot_alignment(
        np.asarray(ens.ts),
        {k: np.asarray(v[0]) for k, v in ens.metrics.items()},
        np.asarray(ens.final.v[0]),
        out / "alignment.png",
        gd=gd,
        images=_mnist_images(ens, data) if args.data == "mnist" else None,
        title=f"{args.data}, n={data.n}, width {args.width}, seed 0",
    )
    times = jf.experiments.plot_times(summary, out / "times.png")
    print(_report(summary, [figure, times]))
    return 0 if bool(ens.succeeded.all()) else 1


def _gradient_descent(args, flow, model, ts, ens) -> tuple[dict, tuple]:
    """Gradient descent at step `--gd-lr` from `model` against the flow's seed 0: the
    summary's `gd` entry, and `(ts, metrics, label)` for the figure."""
    steps = int(round(args.t1 / args.gd_lr))
    start = time.perf_counter()
    sol = jf.gradient_descent(
        flow,
        model,
        lr=args.gd_lr,
        steps=steps,
        ts=ts,
        metrics=jf.experiments.alignment_metrics(model, flow),
        save_models=False,
    )
    gd = {k: np.asarray(v) for k, v in sol.metrics.items()}
    exact = {k: np.asarray(v[0]) for k, v in ens.metrics.items()}
    summary = {
        "lr": args.gd_lr,
        "steps": steps,
        "wall_s": time.perf_counter() - start,
        "max_abs_diff_align_plus": float(
            np.nanmax(np.abs(gd["align_plus"] - exact["align_plus"]))
        ),
        "max_rel_diff_loss": float(np.nanmax(np.abs(gd["loss"] / exact["loss"] - 1))),
    }
    return summary, (np.asarray(sol.ts), gd, f"GD, step {args.gd_lr:g}")


def _mnist_images(ens, data) -> dict:
    """Seed 0's mean neurons per sign of $v_j$ beside the class means, as 28x28."""
    W, v = np.asarray(ens.final.W[0]), np.asarray(ens.final.v[0])
    counts = np.asarray(data.y > 0).sum(), np.asarray(data.y < 0).sum()
    return {
        "mean w_j, v_j>0": W[v > 0].mean(0),
        "x+ / n+": np.asarray(data.x_plus) / counts[0],
        "mean w_j, v_j<0": W[v < 0].mean(0),
        "x- / n-": np.asarray(data.x_minus) / counts[1],
    }


def _median(x) -> float:
    x = np.asarray(x, dtype=float)
    return float(np.nanmedian(x)) if np.isfinite(x).any() else float("nan")


def _report(summary: dict, figures) -> str:
    th, run, acc = summary["theory"], summary["run"], summary["accuracy"]
    bound = _median(th["t1_bound"])
    lines = [
        f"jaxflow align: {run['data']}, n={run['n']}, d={run['d']}, width "
        f"{run['width']}, {run['init']} init scale {run['scale']:g}, mean "
        f"{run['loss']} loss, {len(summary['seeds'])} seed(s), {run['wall_s']:.1f} s",
        f"theory        mu={_median(th['mu']):.4g}  X_min={_median(th['X_min']):.4g}  "
        f"X_max={_median(th['X_max']):.4g}  zeta={_median(th['zeta']):.3g}  "
        f"xi={_median(th['xi']):.3g}  t1 bound="
        + (
            f"{bound:.4g}"
            if np.isfinite(bound)
            else "none (Theorem 1 needs mu > 0 and cones around x+-)"
        ),
    ]
    lines.append(
        f"times         mean-loss time t; in brackets the theorem's sum-loss time "
        f"t/n (n={run['n']}), the unit of the bound"
    )
    for name, label in (
        ("t1", "t1 (all in cones)"),
        ("tau_max", f"max_j tau_j (cos >= 1-{run['delta']:g})"),
        ("t2", "t2 (loss halved)"),
        ("norm_growth", "norm growth (x2)"),
        ("t1_over_bound", "t1 / bound (sum-loss)"),
    ):
        q = summary["times"][name]
        in_sum = summary["times_sum_loss"].get(name)
        if q["reached"]:
            lines.append(
                f"{label:<28} median {q['median']:.5g}"
                + (f" [{in_sum['median']:.4g}]" if in_sum else "")
                + f"  min {q['min']:.5g}, max {q['max']:.5g}  reached "
                f"{q['reached']}/{q['of']}"
            )
        else:
            lines.append(f"{label:<28} not reached (0/{q['of']})")
    final = summary["seeds"][0]["final"]
    lines.append(
        "seed 0 final  "
        + "  ".join(f"{k}={v:.4g}" for k, v in final.items() if v is not None)
    )
    if "gd" in summary:
        g = summary["gd"]
        lines.append(
            f"GD            lr {g['lr']:g}, {g['steps']} steps, {g['wall_s']:.1f} s; "
            f"max |align+ GD - flow| {g['max_abs_diff_align_plus']:.2g}, max "
            f"relative loss difference {g['max_rel_diff_loss']:.2g}"
        )
    lines.append(
        f"accuracy      rtol {acc['rtol']:g}, statuses {acc['statuses']}, max "
        f"conserved drift {acc['max_conserved_drift']:.2g}, steps accepted (max) "
        f"{acc['steps_accepted_max']}, rejected (max) {acc['steps_rejected_max']}"
    )
    lines.append("figures       " + ", ".join(str(f) for f in figures))
    return "\n".join(lines)
