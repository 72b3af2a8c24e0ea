"""`jaxflow demo`: the README's main job, one exact flow with its evidence and a plot."""

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxflow as jf

from ..experiments import plot_demo
from .options import add_command, add_options


def add_parser(commands) -> None:
    parser = add_command(
        commands,
        "demo",
        run,
        help="small-init two-layer ReLU net on separable data: exact flow, alignment, "
        "accuracy evidence and a plot",
    )
    add_options(parser.add_argument_group("data"), n=60, d=10, mu=0.3)
    add_options(parser.add_argument_group("model"), width=20, scale=1e-6)
    add_options(parser.add_argument_group("solver"), t1=1e3, rtol=1e-10)
    add_options(parser.add_argument_group("output"), seed=0, out="jaxflow-demo")


def run(args) -> int:
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
    path = plot_demo(np.asarray(sol.ts), m, net, out / "demo.png")
    print(f"plot          {path}")
    return 0 if bool(sol.succeeded) else 1
