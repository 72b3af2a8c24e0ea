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

    positive = np.asarray(net.v) > 0
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), layout="constrained")
    ax = axes[0, 0]
    groups = (
        (positive, "plus", "cos(mean w_j, x+) over v_j>0", "C0"),
        (~positive, "minus", "cos(mean w_j, x-) over v_j<0", "C3"),
    )
    for sign, name, label, colour in groups:
        cos = m[f"cos_{name}"][:, sign]
        ax.plot(ts, m[f"align_{name}"], color=colour, label=label)
        ax.fill_between(ts, cos.min(1), cos.max(1), color=colour, alpha=0.2)
    ax.set(
        xscale="log", ylim=(-1.05, 1.05), xlabel="t", title="alignment (band: min-max)"
    )
    ax.legend()
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
    ens.add_argument("--seed", type=int, default=0, help="master seed (0)")
    ens.add_argument("--t1", type=float, default=1e3, help="final time (1e3)")
    ens.add_argument("--rtol", type=float, default=1e-8, help="tolerance (1e-8)")
    ens.add_argument("--times", type=int, default=100, help="saved times, log-spaced")
    ens.add_argument("--segments", type=int, default=8, help="segments (8)")
    ens.add_argument("--batch-size", type=int, default=256, help="seeds per chunk")
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
    ens.add_argument("--out", required=True, help="the run directory")
    ens.add_argument("--quiet", action="store_true", help="no progress bar")
    ens.set_defaults(run=_ensemble)

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
