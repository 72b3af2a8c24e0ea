"""The `jaxflow` command line."""

import argparse
import sys
import time
from pathlib import Path


_EXAMPLES = """examples:
  jaxflow demo                       # the default run, writes jaxflow-demo/demo.png
  jaxflow demo --width 50 --t1 1e4 --out runs/demo
  jaxflow ensemble --seeds 64 --out runs/sep64          # 64 seeds, separable data
  jaxflow ensemble --data mnist --n 2000 --width 50 --seeds 256 --scale 1e-3 \\
      --init gaussian --t1 1e3 --steady-state 1e-6 --out runs/mnist01
  jaxflow ensemble --data boursier-flammarion --bias --fan width --width 200 \\
      --scale 0.1 --loss square --t1 5000 --rtol 1e-9 --seeds 8 --out runs/bf
  jaxflow show runs/sep64            # what a run directory holds
  jaxflow align --data toy --toy two-points --c 0.001 --seeds 16 --out runs/toy
  jaxflow align --data separable --n 256 --mu 0.3 --seeds 64 --out runs/align
  jaxflow align --data mnist --gd-lr 2e-3 --out runs/mnist01
  jaxflow spurious --scale 1e-3 --width 200 --seeds 8 --out runs/bf   # saddle
  jaxflow spurious --data knots --width 100 --scale 1e-3 --out runs/knots
  jaxflow neuron --seeds 32 --out runs/neuron      # Lee-Sim-Ye: depth 1-4, scale 1e-4..1
  jaxflow neuron --depths 1 3 --scales 1e-2 1 --seeds 4 --ns --lrs --out runs/quick
"""


def _ensemble(args) -> int:
    import jax
    import jax.numpy as jnp

    import jaxflow as jf
    from jaxflow._rundir import show

    dkey, key = jax.random.split(jax.random.key(args.seed))
    if args.data == "separable":
        data = jf.datasets.separable(dkey, args.n, args.d, args.mu)
    elif args.data == "mnist":
        data = jf.datasets.mnist(n=args.n, root=args.root)
    else:
        data = jf.datasets.boursier_flammarion()
    loss = {
        "exponential": jf.losses.exponential,
        "logistic": jf.losses.logistic,
        "square": jf.losses.square,
    }[args.loss]
    flow = jf.GradientFlow(loss, data)
    d, width, scale = data.d, args.width, args.scale
    kwargs = dict(init=args.init, bias=args.bias)
    if args.fan is not None:
        kwargs["fan"] = args.fan

    def init(k):
        return jf.models.TwoLayerReLU(d, width, scale=scale, key=k, **kwargs)

    events = {}
    if args.steady_state is not None:
        events["stationary"] = jf.events.SteadyState(args.steady_state)
    if args.loss_below is not None:
        events["loss_below"] = jf.events.LossBelow(args.loss_below)
    ts = jnp.geomspace(args.t1 * 1e-5, args.t1, args.times)
    ens = jf.solve_ensemble(
        flow,
        init,
        jax.random.split(key, args.seeds),
        t1=args.t1,
        ts=ts,
        rtol=args.rtol,
        events=events,
        batch_size=args.batch_size,
        segments=args.segments,
        checkpoint_dir=args.out,
        progress=not args.quiet,
        kinks=args.kinks,
    )
    print(show(args.out))
    return 0 if bool(ens.succeeded.all()) else 1


def _align(args) -> int:
    import json

    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import numpy as np

    import jaxflow as jf
    from jaxflow.experiments import _plots

    defaults = {
        # MNIST: 12,665 x 50 kinks, crossed nearly every step; locating each (min-norm)
        # is far slower than rejecting steps, and steps shrink like sqrt(rtol).
        "mnist": dict(
            width=50, init="gaussian", t1=30.0, n=None, rtol=1e-6, kinks="plain"
        ),
        "separable": dict(
            width=50, init="balanced", t1=50.0, n=200, rtol=1e-8, kinks="auto"
        ),
        "toy": dict(width=20, init="balanced", t1=50.0, n=20, rtol=1e-8, kinks="auto"),
    }[args.data]
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    dkey, key = jax.random.split(jax.random.key(args.seed))
    if args.data == "mnist":
        data = jf.datasets.mnist(digits=tuple(args.digits), n=args.n, root=args.root)
    elif args.data == "separable":  # separation exactly mu
        data = jf.datasets.separable(dkey, args.n, args.d, args.mu, exact=True)
    elif args.toy == "two-points":
        data = jf.datasets.two_points(args.c)
    elif args.toy == "orthogonal":
        data = jf.datasets.orthogonal()
    else:
        data = jf.datasets.circle_clusters(dkey, args.n // 2, args.n - args.n // 2)
    flow = jf.GradientFlow(
        {"exponential": jf.losses.exponential, "logistic": jf.losses.logistic}[
            args.loss
        ],
        data,
    )
    d, width, scale, init_kind = data.d, args.width, args.scale, args.init

    def init(k):
        return jf.models.TwoLayerReLU(d, width, scale=scale, init=init_kind, key=k)

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
        batch_size=args.batch_size,
        segments=args.segments,
        checkpoint_dir=args.out,
        progress=not args.quiet,
        kinks=args.kinks,
    )
    elapsed = time.perf_counter() - start
    initial = eqx.filter_vmap(init)(keys)
    theory = eqx.filter_vmap(lambda m: jf.experiments.alignment_theory(data, m))(
        initial
    )
    summary = jf.experiments.alignment_summary(ens, theory, data)
    summary["run"] = {
        "data": args.data,
        "n": data.n,
        "d": data.d,
        "width": width,
        "init": init_kind,
        "scale": scale,
        "loss": args.loss,
        "delta": args.delta,
        "wall_s": elapsed,
    }
    out = Path(args.out)
    gd = None  # seed 0's initialisation, by gradient descent
    if args.gd_lr is not None:
        steps = int(round(args.t1 / args.gd_lr))
        start = time.perf_counter()
        gd_sol = jf.gradient_descent(
            flow,
            init(keys[0]),
            lr=args.gd_lr,
            steps=steps,
            ts=ts,
            metrics=jf.experiments.alignment_metrics(init(keys[0]), flow),
            save_models=False,
        )
        gd_m = {k: np.asarray(v) for k, v in gd_sol.metrics.items()}
        flow_m = {k: np.asarray(v[0]) for k, v in ens.metrics.items()}
        summary["gd"] = {
            "lr": args.gd_lr,
            "steps": steps,
            "wall_s": time.perf_counter() - start,
            "max_abs_diff_align_plus": float(
                np.nanmax(np.abs(gd_m["align_plus"] - flow_m["align_plus"]))
            ),
            "max_rel_diff_loss": float(
                np.nanmax(np.abs(gd_m["loss"] / flow_m["loss"] - 1))
            ),
        }
        gd = (np.asarray(gd_sol.ts), gd_m, f"GD, step {args.gd_lr:g}")
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    m0 = {k: np.asarray(v[0]) for k, v in ens.metrics.items()}
    images = None
    if args.data == "mnist":
        W, v = np.asarray(ens.final.W[0]), np.asarray(ens.final.v[0])
        counts = np.asarray(data.y > 0).sum(), np.asarray(data.y < 0).sum()
        images = {
            "mean w_j, v_j>0": W[v > 0].mean(0),
            "x+ / n+": np.asarray(data.x_plus) / counts[0],
            "mean w_j, v_j<0": W[v < 0].mean(0),
            "x- / n-": np.asarray(data.x_minus) / counts[1],
        }
    figure = _plots.plot_alignment(
        np.asarray(ens.ts),
        m0,
        np.asarray(ens.final.v[0]),
        out / "alignment.png",
        gd=gd,
        images=images,
        title=f"{args.data}, n={data.n}, width {width}, seed 0",
    )
    times = _plots.plot_times(summary, out / "times.png")
    print(_align_report(summary, [figure, times]))
    return 0 if bool(ens.succeeded.all()) else 1


def _spurious(args) -> int:
    import json

    import jax
    import jax.numpy as jnp
    import numpy as np

    import jaxflow as jf

    dkey, key = jax.random.split(jax.random.key(args.seed))
    which = {"three-points": "three_points", "knots": "knots"}[args.data]
    data = jf.datasets.boursier_flammarion(which, key=dkey, n=args.n)
    flow = jf.GradientFlow(jf.losses.square, data)
    width, scale = args.width, args.scale

    def init(k):
        return jf.models.TwoLayerReLU(
            1, width, scale=scale, bias=True, fan="width", key=k
        )

    start = time.perf_counter()
    ens = jf.solve_ensemble(
        flow,
        init,
        jax.random.split(key, args.seeds),
        t1=args.t1,
        ts=jnp.geomspace(1e-2, args.t1, args.times),
        rtol=args.rtol,
        events={
            "stationary": jf.events.SteadyState(
                args.steady_state, atol=args.steady_state_atol
            )
        },
        metrics={"loss": jf.metrics.loss, "grad_norm": jf.metrics.grad_norm},
        batch_size=args.batch_size,
        segments=args.segments,
        checkpoint_dir=args.out,
        progress=not args.quiet,
        kinks="auto",
    )
    flow_s = time.perf_counter() - start
    # One hidden ReLU layer with bias interpolates n distinct 1-D points once it has
    # n neurons: the global minimum is then 0.
    min_loss = 0.0 if width >= data.n else None
    start = time.perf_counter()
    verdicts = jf.experiments.classify_ensemble(
        flow, ens, min_loss=min_loss, escape_time=args.escape_time
    )
    summary = jf.experiments.spurious_summary(ens, verdicts, data, min_loss)
    summary["run"] = {
        "data": args.data, "n": data.n, "width": width, "scale": scale,
        "init": "balanced, (w_j, b_j) ~ N(0, scale^2/width I), a_j = +-|(w_j, b_j)|",
        "loss": "mean square", "t1": args.t1, "steady_state": args.steady_state,
        "steady_state_atol": args.steady_state_atol,
        "flow_s": flow_s, "classify_s": time.perf_counter() - start,
    }  # fmt: skip
    out = Path(args.out)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    figure = jf.experiments.plot_spurious(
        data, ens, verdicts, out / "spurious.png",
        title=f"{args.data}, width {width}, scale {scale:g}",
    )  # fmt: skip
    ls = summary["least_squares"]
    lines = [
        f"jaxflow spurious: {args.data} (n={data.n}), width {width}, balanced init "
        f"scale {scale:g}, mean square loss, {args.seeds} seed(s); flow "
        f"{flow_s:.1f} s, classification {summary['run']['classify_s']:.1f} s",
        f"least squares beta={np.round(ls['beta'], 6).tolist()}  MSE={ls['mse']:.6f}",
        "ended at     "
        + ", ".join(f"{k}: {v}" for k, v in sorted(summary["counts"].items()))
        + f"; spurious {summary['spurious']}/{summary['of']}, at the least-squares "
        f"loss {summary['at_least_squares']}/{summary['of']}",
    ]
    for row in summary["seeds"][: args.show]:
        v = row["verdict"]
        text = row["status"] if v is None else f"{v['kind']}: {v['evidence']}"
        lines.append(
            f"seed {row['seed']:<7} loss {v['loss'] if v else float('nan'):.6g}  {text}"
        )
    acc = summary["accuracy"]
    lines.append(
        f"accuracy     rtol {acc['rtol']:g}, statuses {acc['statuses']}, steps "
        f"accepted (max) {acc['steps_accepted_max']}, rejected (max) "
        f"{acc['steps_rejected_max']}, largest polished gradient norm "
        f"{acc['max_grad_norm_polished']:.2g}"
    )
    lines.append(f"figure       {figure}")
    print("\n".join(lines))
    return 0 if bool(ens.succeeded.all()) else 1


def _neuron(args) -> int:
    import csv
    import json

    import jax
    import numpy as np

    import jaxflow as jf

    start = time.perf_counter()
    summary, results = jf.experiments.neuron_study(
        args.depths, args.scales, args.seeds, d=args.d, loss_level=args.loss_level,
        angle_level=args.angle_level, rtol=args.rtol, ns=args.ns, draws=args.draws,
        lrs=args.lrs, key=jax.random.key(args.seed),
    )  # fmt: skip
    summary["run"] = {
        "depths": args.depths, "scales": args.scales, "seeds": args.seeds,
        "d": args.d, "teacher": "single neuron, unit norm, random direction per seed",
        "init": "balanced: ||w_1|| = a_l = scale, random direction",
        "loss": "population 1/2 E (f - y)^2, x ~ N(0, I_d), exact (arc-cosine kernel)",
        "seconds": time.perf_counter() - start,
    }  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    with open(out / "times.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["depth", "scale", "seed", "loss_time", "angle_time", "status", "steps"]
        )
        for depth, per_scale in results.items():
            for scale, ens in zip(args.scales, per_scale):
                times = np.asarray(ens.event_times["reached"])
                for s in range(ens.num_seeds):
                    writer.writerow([
                        depth, scale, s, times[s, 0], times[s, 1],
                        ens.status_name[s], int(ens.stats["num_steps"][s]),
                    ])  # fmt: skip
    figure = jf.experiments.plot_neuron(summary, out / "neuron.png")
    print(
        f"jaxflow neuron: depths {args.depths}, scales {args.scales}, {args.seeds} "
        f"seeds each, d={args.d}, rtol {args.rtol:g}; {summary['run']['seconds']:.1f} s"
    )
    print(jf.experiments.neuron_report(summary))
    print(f"\nwrote {out / 'summary.json'}, {out / 'times.csv'}, {figure}")
    ok = all(
        set(r["statuses"]) <= {"event_occurred", "successful"}
        for block in summary["depths"].values()
        for r in block["rows"]
    )
    return 0 if ok else 1


def _align_report(summary: dict, figures) -> str:
    th, run, acc = summary["theory"], summary["run"], summary["accuracy"]

    import numpy as np

    def median(x):
        x = np.asarray(x, dtype=float)
        return float(np.nanmedian(x)) if np.isfinite(x).any() else float("nan")

    lines = [
        f"jaxflow align: {run['data']}, n={run['n']}, d={run['d']}, width "
        f"{run['width']}, {run['init']} init scale {run['scale']:g}, mean "
        f"{run['loss']} loss, {len(summary['seeds'])} seed(s), {run['wall_s']:.1f} s",
        f"theory        mu={median(th['mu']):.4g}  X_min={median(th['X_min']):.4g}  "
        f"X_max={median(th['X_max']):.4g}  zeta={median(th['zeta']):.3g}  "
        f"xi={median(th['xi']):.3g}  t1 bound="
        + (
            f"{median(th['t1_bound']):.4g}"
            if np.isfinite(median(th["t1_bound"]))
            else "none (Theorem 1 needs mu > 0 and cones around x+-)"
        ),
    ]
    for name, label in (
        ("t1", "t1 (all in cones)"),
        ("tau_max", f"max_j tau_j (cos >= 1-{run['delta']:g})"),
        ("t2", "t2 (loss halved)"),
        ("norm_growth", "norm growth (x2)"),
        ("t1_over_bound", "t1 / bound"),
    ):
        q = summary["times"][name]
        if q["reached"]:
            lines.append(
                f"{label:<28} median {q['median']:.5g}  [min {q['min']:.5g}, max "
                f"{q['max']:.5g}]  reached {q['reached']}/{q['of']}"
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


def _show(args) -> int:
    from jaxflow._rundir import show

    print(show(args.run_dir))
    return 0


def _demo(args) -> int:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import jaxflow as jf

    start = time.perf_counter()
    dkey, mkey = jax.random.split(jax.random.key(args.seed))
    data = jf.datasets.separable(dkey, args.n, args.d, args.mu)
    net = jf.models.TwoLayerReLU(args.d, args.width, scale=args.scale, key=mkey)
    flow = jf.GradientFlow(jf.losses.exponential, data)
    ts = jnp.geomspace(1e-3, args.t1, 200)
    sol = jf.solve(flow, net, t1=args.t1, rtol=args.rtol, ts=ts, save_models=False)
    jax.block_until_ready(sol)
    elapsed = time.perf_counter() - start

    m = {k: np.asarray(v) for k, v in sol.metrics.items()}
    print(
        f"jaxflow demo: two-layer ReLU net, width {args.width}, balanced init scale "
        f"{args.scale:g}, mean exponential loss\n"
        f"data          separable, n={args.n}, d={args.d}, separation "
        f"mu={float(data.separation()):.3f}"
    )
    print(sol.summary())
    print(
        f"alignment     cos(mean w_j over v_j>0, x+) = {m['align_plus'][-1]:.6f}, "
        f"cos(mean w_j over v_j<0, x-) = {m['align_minus'][-1]:.6f}\n"
        f"cones         S+ {m['frac_plus'][-1]:.0%}, S- {m['frac_minus'][-1]:.0%}, "
        f"dead {m['frac_dead'][-1]:.0%} of neurons\n"
        f"stable rank   {m['stable_rank'][-1]:.4f}\n"
        f"wall time     {elapsed:.1f} s (compilation included)"
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = _plot_demo(np.asarray(sol.ts), m, net, out / "demo.png")
    print(f"plot          {path}")
    return 0 if bool(sol.succeeded) else 1


def _plot_demo(ts, m, net, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from jaxflow.experiments._plots import alignment_panel

    positive = np.asarray(net.v) > 0
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), layout="constrained")
    alignment_panel(axes[0, 0], ts, m, positive)
    axes[0, 0].set(xscale="log")
    ax = axes[0, 1]
    ax.loglog(ts, m["loss"], label="loss")
    ax.loglog(ts, m["grad_norm"], label="‖∇L‖")
    ax.set(xlabel="t", title="loss")
    ax.legend()
    ax = axes[1, 0]
    for name in ("frac_plus", "frac_minus", "frac_dead"):
        ax.plot(ts, m[name], label=name.removeprefix("frac_"))
    ax.plot(
        ts,
        m["stable_rank"] / net.width,
        "k--",
        label="stable rank ‖W‖²_F/‖W‖²_2 / width",
    )
    ax.set(xscale="log", xlabel="t", title="fraction of neurons in S+, S-, dead")
    ax.legend()
    ax = axes[1, 1]
    ax.loglog(ts, np.maximum(m["conserved_drift"], 1e-18))
    ax.set(xlabel="t", title="relative drift of v_j² - ‖w_j‖² (exactness check)")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _run_options(parser) -> None:
    """The options of every command that writes a run directory."""
    parser.add_argument("--seed", type=int, default=0, help="master seed (0)")
    parser.add_argument("--segments", type=int, default=8, help="segments (8)")
    parser.add_argument("--batch-size", type=int, default=256, help="seeds per chunk")
    parser.add_argument("--out", required=True, help="the run directory")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="jaxflow",
        description="Exact gradient-flow trajectories of neural networks in JAX.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="small-init two-layer ReLU net on separable data: exact flow, alignment, "
        "accuracy evidence and a plot",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--n", type=int, default=60, help="data points (default 60)")
    demo.add_argument("--d", type=int, default=10, help="input dimension (default 10)")
    demo.add_argument("--mu", type=float, default=0.3, help="separation (default 0.3)")
    demo.add_argument(
        "--width", type=int, default=20, help="hidden neurons (default 20)"
    )
    demo.add_argument("--scale", type=float, default=1e-6, help="init scale (1e-6)")
    demo.add_argument("--t1", type=float, default=1e3, help="final time (1e3)")
    demo.add_argument("--rtol", type=float, default=1e-10, help="tolerance (1e-10)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (0)")
    demo.add_argument("--out", default="jaxflow-demo", help="output folder")
    demo.set_defaults(run=_demo)

    ens = commands.add_parser(
        "ensemble",
        help="many seeds of a two-layer ReLU net: vmapped, segmented, checkpointed; "
        "writes a run directory (resumes it if it was interrupted)",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ens.add_argument(
        "--data",
        choices=("separable", "mnist", "boursier-flammarion"),
        default="separable",
        help="data set (default separable)",
    )
    ens.add_argument("--n", type=int, default=200, help="data points (default 200)")
    ens.add_argument("--d", type=int, default=20, help="dimension, separable (20)")
    ens.add_argument("--mu", type=float, default=0.3, help="separation (0.3)")
    ens.add_argument("--root", default=None, help="MNIST folder (or JAXFLOW_DATA)")
    ens.add_argument(
        "--loss",
        choices=("exponential", "logistic", "square"),
        default="exponential",
        help="loss (default exponential)",
    )
    ens.add_argument("--width", type=int, default=50, help="hidden neurons (50)")
    ens.add_argument("--scale", type=float, default=1e-6, help="init scale (1e-6)")
    ens.add_argument(
        "--init", choices=("balanced", "gaussian"), default="balanced", help="init"
    )
    ens.add_argument("--fan", choices=("in", "width", "none"), default=None)
    ens.add_argument("--bias", action="store_true", help="hidden-layer bias")
    ens.add_argument("--seeds", type=int, default=64, help="number of seeds (64)")
    ens.add_argument("--t1", type=float, default=1e3, help="final time (1e3)")
    ens.add_argument("--rtol", type=float, default=1e-8, help="tolerance (1e-8)")
    ens.add_argument("--times", type=int, default=100, help="saved times, log-spaced")
    ens.add_argument(
        "--steady-state",
        type=float,
        default=None,
        metavar="RTOL",
        help="stop a seed once its gradient norm is RTOL times the initial one",
    )
    ens.add_argument(
        "--loss-below", type=float, default=None, help="stop a seed at this loss"
    )
    ens.add_argument("--kinks", choices=("auto", "min-norm", "plain"), default="auto")
    _run_options(ens)
    ens.set_defaults(run=_ensemble)

    align = commands.add_parser(
        "align",
        help="early neuron alignment (Min, Mallada, Vidal 2024): located alignment "
        "times per neuron and seed, t1 against the theory's bound, the paper's figures",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    align.add_argument(
        "--data", choices=("mnist", "separable", "toy"), default="separable"
    )
    align.add_argument(
        "--digits", type=int, nargs=2, default=(0, 1), help="MNIST digits (0 1)"
    )
    align.add_argument("--root", default=None, help="MNIST folder (or JAXFLOW_DATA)")
    align.add_argument(
        "--toy",
        choices=("two-points", "orthogonal", "circle"),
        default="two-points",
        help="2-D toy (default two-points)",
    )
    align.add_argument("--c", type=float, default=0.1, help="two-points angle (0.1)")
    align.add_argument(
        "--n", type=int, default=None, help="data points (MNIST: all; separable 200)"
    )
    align.add_argument("--d", type=int, default=20, help="dimension, separable (20)")
    align.add_argument("--mu", type=float, default=0.3, help="separation (0.3)")
    align.add_argument(
        "--loss", choices=("exponential", "logistic"), default="exponential"
    )
    align.add_argument("--width", type=int, default=None, help="neurons (50; toy 20)")
    align.add_argument("--scale", type=float, default=1e-6, help="init scale (1e-6)")
    align.add_argument(
        "--init",
        choices=("balanced", "gaussian"),
        default=None,
        help="init (MNIST: gaussian, as the paper; else balanced)",
    )
    align.add_argument("--seeds", type=int, default=1, help="number of seeds (1)")
    align.add_argument(
        "--t1", type=float, default=None, help="final time (MNIST 30, else 50)"
    )
    align.add_argument(
        "--times", type=int, default=201, help="saved times, evenly spaced (201)"
    )
    align.add_argument(
        "--delta", type=float, default=1e-3, help="aligned: cos >= 1 - delta (1e-3)"
    )
    align.add_argument(
        "--rtol", type=float, default=None, help="tolerance (MNIST 1e-6, else 1e-8)"
    )
    align.add_argument(
        "--kinks",
        choices=("auto", "min-norm", "plain"),
        default=None,
        help="kink handling (MNIST plain, else auto)",
    )
    align.add_argument(
        "--gd-lr",
        type=float,
        default=None,
        help="also run gradient descent at this step from seed 0's init, overlaid",
    )
    _run_options(align)
    align.set_defaults(run=_align)

    spur = commands.add_parser(
        "spurious",
        help="where the flow ends (Boursier and Flammarion 2024): per seed, the "
        "stationary point polished, classified (global minimum, local minimum, "
        "saddle) with its evidence and escape direction",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    spur.add_argument(
        "--data", choices=("three-points", "knots"), default="three-points",
        help="the paper's three points (default) or the 40-point knots data",
    )  # fmt: skip
    spur.add_argument("--n", type=int, default=40, help="points, knots data (40)")
    spur.add_argument("--width", type=int, default=200, help="hidden neurons (200)")
    spur.add_argument("--scale", type=float, default=1e-3, help="init scale λ (1e-3)")
    spur.add_argument("--seeds", type=int, default=8, help="number of seeds (8)")
    spur.add_argument("--t1", type=float, default=1e4, help="final time (1e4)")
    spur.add_argument("--rtol", type=float, default=1e-9, help="tolerance (1e-9)")
    spur.add_argument(
        "--steady-state", type=float, default=1e-7, metavar="RTOL",
        help="a seed stops once its gradient norm is RTOL times the initial (1e-7)",
    )  # fmt: skip
    spur.add_argument(
        "--steady-state-atol", type=float, default=1e-8, metavar="ATOL",
        help="... or ATOL, whichever is larger (1e-8: from a small init, RTOL times "
        "the initial gradient is below what the solver resolves)",
    )  # fmt: skip
    spur.add_argument(
        "--escape-time", type=float, default=100.0,
        help="how long the escape test re-solves (100)",
    )  # fmt: skip
    spur.add_argument("--times", type=int, default=100, help="saved times, log-spaced")
    spur.add_argument("--show", type=int, default=4, help="seeds to print (4)")
    _run_options(spur)
    spur.set_defaults(run=_spurious)

    neuron = commands.add_parser(
        "neuron",
        help="Lee-Sim-Ye: chains of single ReLU neurons on the exact population loss; "
        "time to converge against depth and initial scale, finite samples, GD",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    neuron.add_argument("--depths", type=int, nargs="+", default=[1, 2, 3, 4],
                        help="chain depths (1 2 3 4)")  # fmt: skip
    neuron.add_argument("--scales", type=float, nargs="+",
                        default=[1e-4, 1e-3, 1e-2, 1e-1, 1.0],
                        help="initial scales ||w_1|| = a_l (1e-4 ... 1)")  # fmt: skip
    neuron.add_argument("--seeds", type=int, default=32, help="seeds per cell (32)")
    neuron.add_argument("--d", type=int, default=10, help="input dimension (10)")
    neuron.add_argument("--loss-level", type=float, default=1e-6, help="(1e-6)")
    neuron.add_argument("--angle-level", type=float, default=1e-3, help="(1e-3)")
    neuron.add_argument("--rtol", type=float, default=1e-10, help="tolerance (1e-10)")
    neuron.add_argument("--ns", type=int, nargs="*", default=[1000, 10000, 100000],
                        help="sample sizes against the population flow (none: skip)")  # fmt: skip
    neuron.add_argument("--draws", type=int, default=4, help="data sets per n (4)")
    neuron.add_argument("--lrs", type=float, nargs="*",
                        default=[0.1, 0.03, 0.01, 0.003],
                        help="GD steps against the flow (none: skip)")  # fmt: skip
    neuron.add_argument("--seed", type=int, default=0, help="master seed (0)")
    neuron.add_argument("--out", required=True, help="the output directory")
    neuron.set_defaults(run=_neuron)

    show = commands.add_parser(
        "show",
        help="print what a run directory holds: configuration, statuses, times, events",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    show.add_argument("run_dir", help="a directory written by `jaxflow ensemble`")
    show.set_defaults(run=_show)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
