"""Core solve against gradient descent on one small-init ReLU problem.

Prints, for the exact flow at several tolerances (and PID settings) and for plain GD at
several step sizes: error at t = T against a tight reference, gradient evaluations,
accepted/rejected steps, conserved-quantity drift and wall time (compilation excluded,
best of `--repeat`).

    python benchmarks/core.py                # n=100, d=20, width 20, eps=1e-6, T=100
    python benchmarks/core.py --T 30 --quick
"""

import argparse
import platform
import time

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np

import jaxflow as jf


def timed(fn, repeat):
    jax.block_until_ready(fn())  # compile
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        out = jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - start)
    return out, best


def error(model, ref) -> float:
    a = jax.flatten_util.ravel_pytree(model)[0]
    b = jax.flatten_util.ravel_pytree(ref)[0]
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--d", type=int, default=20)
    parser.add_argument("--width", type=int, default=20)
    parser.add_argument("--scale", type=float, default=1e-6)
    parser.add_argument("--T", type=float, default=100.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="fewer GD step sizes")
    args = parser.parse_args()

    dkey, mkey = jax.random.split(jax.random.key(0))
    data = jf.datasets.separable(dkey, args.n, args.d, 0.3)
    net = jf.models.TwoLayerReLU(args.d, args.width, scale=args.scale, key=mkey)
    flow = jf.GradientFlow(jf.losses.exponential, data)
    T = args.T
    ts = jnp.array([T])
    ref = jf.solve(flow, net, t1=T, ts=ts, rtol=1e-13, max_steps=10**6)
    assert bool(ref.succeeded), ref.message

    print(
        f"# problem: separable n={args.n}, d={args.d}, mu={float(data.separation()):.3f}, "
        f"width {args.width}, balanced init scale {args.scale:g}, mean exponential "
        f"loss, T={T:g}; reference Tsit5 rtol 1e-13 "
        f"({int(ref.stats['num_accepted_steps'])} steps), loss(T)="
        f"{float(ref.metrics['loss'][-1]):.6e}"
    )
    print(
        f"# machine: {platform.processor() or platform.machine()}, "
        f"{jax.devices()[0].device_kind}, jax {jax.__version__}, "
        f"diffrax {dfx.__version__ if hasattr(dfx, '__version__') else '?'}"
    )
    header = (
        f"| {'method':<34} | {'rel. error at T':>15} | {'grad evals':>10} | "
        f"{'accepted':>8} | {'rejected':>8} | {'max drift':>9} | {'wall s':>7} |"
    )
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")

    def row(name, sol, seconds):
        drift = np.asarray(sol.metrics["conserved_drift"])
        print(
            f"| {name:<34} | {error(sol.final, ref.final):>15.2e} | "
            f"{int(sol.stats['num_vf_evals']):>10} | "
            f"{int(sol.stats['num_accepted_steps']):>8} | "
            f"{int(sol.stats['num_rejected_steps']):>8} | {np.max(drift):>9.1e} | "
            f"{seconds:>7.3f} |"
        )

    for rtol in (1e-6, 1e-8, 1e-10):
        for p, i in ((0.0, 1.0), (0.3, 0.3), (0.4, 0.3)):
            ctrl = dfx.PIDController(
                rtol=rtol,
                atol=rtol * float(jnp.max(jnp.abs(net.W))),
                pcoeff=p,
                icoeff=i,
            )
            sol, sec = timed(
                lambda: jf.solve(flow, net, t1=T, ts=ts, stepsize_controller=ctrl),
                args.repeat,
            )
            label = "default" if (p, i) == (0.3, 0.3) else f"P={p} I={i}"
            row(f"flow Tsit5 rtol={rtol:.0e} ({label})", sol, sec)
    lrs = (1e-2, 1e-3) if args.quick else (1e-2, 1e-3, 1e-4)
    for lr in lrs:
        steps = round(T / lr)
        sol, sec = timed(
            lambda: jf.gradient_descent(flow, net, lr=lr, steps=steps, ts=ts), 1
        )
        row(f"GD lr={lr:g} ({steps} steps)", sol, sec)


if __name__ == "__main__":
    main()
