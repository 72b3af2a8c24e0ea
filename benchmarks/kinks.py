"""Plain against minimum-norm (kink-aware) solves of ReLU gradient flows.

Prints three tables:

1. Separable data (n=100, d=20, width 20, eps=1e-6, exponential loss) to t=1e4: accepted
   and rejected steps, gradient evaluations, located crossings, wall time and error
   against a tight reference, for `kinks="plain"` and `kinks="min-norm"`.
2. Boursier-Flammarion data (three points, square loss, bias, balanced init, width 200)
   to t=5000 for scales 1e-3, 0.1, 1 and 8 seeds each: status, steps and final loss of
   the min-norm solve, and how far the plain solve gets in 20,000 steps.
3. Gradient descent against the min-norm flow at scale 0.1, t=100: error of the network
   outputs and of the loss for lr 1e-2, 1e-3, 1e-4, and the fitted order.

    python benchmarks/kinks.py            # everything (~10 min on 2 CPU cores)
    python benchmarks/kinks.py --quick    # 2 seeds, shorter separable run
"""

import argparse
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxflow as jf


def run(fn):
    """Result and wall time of `fn()`, compilation excluded (it is run twice)."""
    jax.block_until_ready(fn())
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - start


def error(model, ref) -> float:
    a = jax.flatten_util.ravel_pytree(model)[0]
    b = jax.flatten_util.ravel_pytree(ref)[0]
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


def stats(sol):
    return {k: int(v) for k, v in sol.stats.items()}


def separable(T, rtols):
    dkey, mkey = jax.random.split(jax.random.key(0))
    data = jf.datasets.separable(dkey, 100, 20, 0.3)
    net = jf.models.TwoLayerReLU(20, 20, scale=1e-6, key=mkey)
    flow = jf.GradientFlow(jf.losses.exponential, data)
    ts = jnp.array([T])
    refs = {
        kinks: jf.solve(
            flow, net, t1=T, ts=ts, rtol=1e-13, kinks=kinks, max_steps=10**6
        )
        for kinks in ("min-norm", "plain")
    }
    ref = refs["min-norm"].final
    print(
        f"\n## 1. Separable n=100, d=20, width 20, eps=1e-6, exponential loss, T={T:g}"
    )
    print(
        "Reference: min-norm at rtol 1e-13 "
        f"({stats(refs['min-norm'])['num_accepted_steps']} steps); plain at rtol 1e-13 "
        f"differs from it by {error(refs['plain'].final, ref):.1e} "
        f"({refs['plain'].status_name}). No pair slides on this data (mu > 0).\n"
    )
    print(
        "| mode | rtol | accepted | rejected | grad evals | crossings located | "
        "wall s | error at T |"
    )
    print("|---|---|---|---|---|---|---|---|")
    evals = {}
    for rtol in rtols:
        for kinks in ("plain", "min-norm"):
            sol, wall = run(
                lambda: jf.solve(
                    flow, net, t1=T, ts=ts, rtol=rtol, kinks=kinks, max_steps=10**6
                )
            )
            s = stats(sol)
            evals[kinks, rtol] = s["num_vf_evals"], error(sol.final, ref)
            print(
                f"| {kinks} | {rtol:.0e} | {s['num_accepted_steps']} | "
                f"{s['num_rejected_steps']} | {s['num_vf_evals']} | "
                f"{s.get('num_crossings', '-')} | {wall:.2f} | "
                f"{evals[kinks, rtol][1]:.1e} |"
            )
    for rtol in rtols:
        (pe, perr), (me, merr) = evals["plain", rtol], evals["min-norm", rtol]
        print(
            f"\nrtol {rtol:.0e}: min-norm uses {pe / me:.1f}x fewer gradient evaluations "
            f"than plain, error {merr:.1e} vs {perr:.1e}."
        )


def boursier_flammarion(seeds, T=5000.0):
    flow = jf.GradientFlow(jf.losses.square, jf.datasets.boursier_flammarion())
    ts = jnp.array([T])
    print(f"\n## 2. Boursier-Flammarion three points, width 200, t1={T:g}, rtol 1e-9")
    print(
        "\n| scale | seed | status | accepted | rejected | crossings | slides | "
        "final loss | grad norm | max drift | wall s | plain: t reached in 20k steps |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for scale in (1e-3, 0.1, 1.0):
        losses = []
        for seed in range(seeds):
            net = jf.models.TwoLayerReLU(
                1, 200, scale=scale, bias=True, fan="width", key=jax.random.key(seed)
            )
            sol, wall = run(lambda: jf.solve(flow, net, t1=T, ts=ts, rtol=1e-9))
            plain = jf.solve(
                flow, net, t1=T, ts=ts, rtol=1e-9, kinks="plain", max_steps=20_000
            )
            s = stats(sol)
            losses.append(float(sol.metrics["loss"][-1]))
            print(
                f"| {scale:g} | {seed} | {sol.status_name} | {s['num_accepted_steps']} | "
                f"{s['num_rejected_steps']} | {s['num_crossings']} | {s['num_slides']} | "
                f"{losses[-1]:.6f} | {float(sol.metrics['grad_norm'][-1]):.1e} | "
                f"{float(sol.metrics['conserved_drift'][-1]):.1e} | {wall:.1f} | "
                f"{float(plain.t_final):.3g} ({plain.status_name}) |"
            )
        print(
            f"\nscale {scale:g}: final losses {', '.join(f'{x:.6f}' for x in losses)}\n"
        )


def gradient_descent(T=100.0, seed=1):
    flow = jf.GradientFlow(jf.losses.square, jf.datasets.boursier_flammarion())
    net = jf.models.TwoLayerReLU(
        1, 200, scale=0.1, bias=True, fan="width", key=jax.random.key(seed)
    )
    X = flow.data.X
    sol = jf.solve(flow, net, t1=T, ts=jnp.array([T]), rtol=1e-12)
    target, loss = sol.final(X), float(sol.metrics["loss"][-1])
    print(
        f"\n## 3. GD vs the min-norm flow, Boursier-Flammarion, width 200, scale 0.1, "
        f"seed {seed}, T={T:g}"
    )
    print(
        f"Flow (rtol 1e-12): {stats(sol)['num_slides']} pairs entered sliding, "
        f"{stats(sol)['num_crossings']} crossings; loss at T {loss:.9f}.\n"
    )
    print("| lr | steps | max output error | loss error | wall s |")
    print("|---|---|---|---|---|")
    lrs, errors = (1e-2, 1e-3, 1e-4), []
    for lr in lrs:
        gd, wall = run(
            lambda: jf.gradient_descent(
                flow, net, lr=lr, steps=int(round(T / lr)), ts=jnp.array([T])
            )
        )
        errors.append(float(jnp.max(jnp.abs(gd.final(X) - target))))
        loss_error = abs(float(gd.metrics["loss"][-1]) - loss)
        print(
            f"| {lr:.0e} | {int(round(T / lr))} | {errors[-1]:.2e} | {loss_error:.2e} | "
            f"{wall:.1f} |"
        )
    order = np.polyfit(np.log(lrs), np.log(errors), 1)[0]
    print(f"\nFitted order of the output error in lr: {order:.2f} (GD is O(lr)).")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(
        f"# jaxflow kinks benchmark: {platform.processor() or platform.machine()}, "
        f"{jax.devices()[0].platform}, jax {jax.__version__}, jaxflow {jf.__version__}"
    )
    separable(1e3 if args.quick else 1e4, (1e-8, 1e-10))
    boursier_flammarion(2 if args.quick else 8)
    gradient_descent()


if __name__ == "__main__":
    main()
