"""Issue 39: flows followed to their end, where they are stiff.

1. A stiff quadratic, L = 1/2 sum_i lam_i theta_i^2 with lam from 1e-3 to 1e3, to
   t = 1000: Tsit5, Kvaerno5 and `solver="auto"`, their steps, walls and errors against
   the closed form theta_i(t) = e^{-lam_i t}.
2. MLPGradientFlow.jl's README example: input randn(2, 10_000), a teacher of 4 sigmoid
   neurons with random weights, a student of 5, no biases, squared loss. jaxflow
   (`solver="auto"` to t1, then `jf.polish`) against Adam (optax, lr 1e-2, 1e-3, 1e-4)
   run for the same wall time: the final loss and gradient norm of each.

    python benchmarks/stiff.py
    python benchmarks/stiff.py --quick       # smaller t1 and Adam budget (CI smoke)

The deep-net study's stiff case runs in `kinks.py --only-deep --deep-solver auto`.
"""

import argparse
import platform
import time

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from run import table, timed

import jaxflow as jf


class Quadratic(eqx.Module):
    theta: jax.Array


class Sigmoids(eqx.Module):
    """x -> sum_j a_j sigmoid(w_j . x), no biases (MLPGradientFlow's README net)."""

    W: jax.Array
    a: jax.Array

    def __call__(self, x):
        return jax.nn.sigmoid(x @ self.W.T) @ self.a


def section_quadratic(T: float):
    lam = jnp.geomspace(1e-3, 1e3, 8)
    flow = jf.GradientFlow(lambda m, lam: 0.5 * jnp.sum(lam * m.theta**2), lam)
    net = Quadratic(jnp.ones(8))
    exact = np.exp(-np.asarray(lam) * T)
    print(
        f"\n## 1. A stiff quadratic (eigenvalues 1e-3 ... 1e3) to t = {T:g}, rtol 1e-8\n"
    )
    rows = []
    for name, solver in (("Tsit5", dfx.Tsit5()), ("Kvaerno5", dfx.Kvaerno5()),
                         ("auto", "auto")):  # fmt: skip
        sol, wall = timed(lambda: jf.solve(flow, net, t1=T, rtol=1e-8, solver=solver,
                                           ts=[T], max_steps=10**6))  # fmt: skip
        error = float(np.max(np.abs(np.asarray(sol.final.theta) - exact)))
        switch = float(sol.stats.get("stiff_from", np.nan))
        rows.append([name, sol.status_name, int(sol.stats["num_steps"]),
                     f"{switch:.3g}", f"{error:.1e}", f"{wall:.2f}"])  # fmt: skip
    print(table(["solver", "status", "steps", "implicit from t", "max error against "
                 "e^{-lam t}", "wall s (warm)"], rows))  # fmt: skip


def mlpgf_problem():
    k = jax.random.split(jax.random.key(0), 5)
    X = jax.random.normal(k[0], (10_000, 2))
    teacher = Sigmoids(jax.random.normal(k[1], (4, 2)), jax.random.normal(k[2], (4,)))
    flow = jf.GradientFlow(jf.losses.square, jf.Dataset(X, teacher(X)))
    student = Sigmoids(jax.random.normal(k[3], (5, 2)), jax.random.normal(k[4], (5,)))
    return flow, student


def section_mlpgf(t1: float, quick: bool):
    flow, student = mlpgf_problem()
    print(f"\n## 2. MLPGradientFlow.jl's README example: student 5 sigmoids, teacher 4, "
          f"n = 10,000, squared loss; jaxflow solver='auto' to t1 = {t1:g} (rtol 1e-8) "
          "then jf.polish, against Adam at the same wall time (warm walls)\n")  # fmt: skip

    def ours():
        sol = jf.solve(flow, student, t1=t1, rtol=1e-8, solver="auto", ts=[t1])
        return sol, jf.polish(flow, sol.final)

    start = time.perf_counter()
    ours()
    compile_s = time.perf_counter() - start
    (sol, polished), wall = timed(ours)
    final = polished.model if polished.converged else sol.final
    ours_loss = float(flow(final))
    ours_grad = float(jf.metrics.grad_norm(final, flow))
    rows = [["jaxflow (auto + polish)", f"{wall:.2f}", int(sol.stats["num_steps"]),
             f"{float(sol.stats['stiff_from']):.3g}", f"{ours_loss:.3e}",
             f"{ours_grad:.3e}", "", ""]]  # fmt: skip
    budget = max(wall, 1.0)
    for lr in (1e-2, 1e-3, 1e-4):
        adam = optax.adam(lr)
        probe = 200 if quick else 2000

        def run(steps):
            return jf.optimize(flow, student, adam, steps=steps, ts=[steps],
                               metrics={}, save_models=False)  # fmt: skip

        _, per = timed(lambda: run(probe))
        steps = max(int(budget / per * probe), 1)
        out, spent = timed(lambda: run(steps))
        loss = float(flow(out.final))
        grad = float(jf.metrics.grad_norm(out.final, flow))
        rows.append([f"Adam lr {lr:g}", f"{spent:.2f}", steps, "", f"{loss:.3e}",
                     f"{grad:.3e}", f"{loss / max(ours_loss, 1e-300):.1e}",
                     f"{grad / ours_grad:.1e}"])  # fmt: skip
    print(table(["method", "wall s", "steps", "implicit from t", "final loss",
                 "gradient norm", "loss / jaxflow's", "gradient / jaxflow's"],
                rows))  # fmt: skip
    print(f"\njaxflow: compile and first run {compile_s:.1f} s; polish "
          f"{'converged' if polished.converged else 'did not converge'} in "
          f"{polished.steps} Newton steps, moving {polished.distance:.2e}; gradient norm "
          f"at the flow's end {float(sol.metrics['grad_norm'][-1]):.3e}.")  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    device = jax.devices()[0]
    print(f"# jaxflow stiff benchmark: {platform.machine()}, {device.platform}, jax "
          f"{jax.__version__}, jaxflow {jf.__version__}")  # fmt: skip
    section_quadratic(100.0 if args.quick else 1000.0)
    section_mlpgf(1e6 if args.quick else 1e10, args.quick)


if __name__ == "__main__":
    main()
