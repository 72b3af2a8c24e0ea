"""Kink handling whose cost follows the tolerance: the default mode (min-norm kinks,
crossings stepped over and corrected, would-slide pairs located) against plain solves.

Prints:

1. Problem (i) of `run.py` (separable n=200, d=20, width 50, balanced 1e-6,
   exponential, T=1000), rtol 1e-3 to 1e-10, both modes: error at T against a plain
   Dopri8 rtol-1e-13 reference (no pair slides on this data), gradient evaluations,
   located and stepped-over crossings, wall time; the ratios of errors and evaluations; and the
   work-precision plot `benchmarks/work_precision_kinks.png`.
2. Boursier-Flammarion data (width 200, scale 0.1, T=100), both modes, against a
   default-mode Dopri8 rtol-1e-13 reference (pairs slide: plain cannot serve).
3. Boursier-Flammarion, scales 0.1 and 1, 8 seeds, t1=5000, rtol 1e-6 and 1e-9:
   status, steps, crossings, final loss and gradient norm of the default mode.
4. Gradient descent against the min-norm flow at scale 0.1, t=100: GD's error must
   shrink like its step (an independent check of the sliding flow).
5. MNIST 0 vs 1, all 12,665 training images, width 50, gaussian init 1e-6, t <= 30,
   rtol 1e-6: default against plain wall time, each against its run at rtol 1e-7.

6. Deep networks (`--deep`): `jf.models.MLP` on the Boursier-Flammarion three points,
   square loss, rtol 1e-8, t1=1000, max_steps 50,000, per depth (2, 3, 4: hidden
   widths 30) and scale (1, 0.3), seeds: status, time reached, steps, final loss,
   polished min-norm gradient, `jf.classify`'s kind, and whether it ends at the
   least-squares line (loss 0.175043); plain at the same settings; then how many seeds
   end there per depth and scale. Before it (7), the two-layer specialization against
   the general mechanism on a `TwoLayerReLU` (wall, error). At scale 1 the nets are
   stiff near their minima: run that scale with `--deep-solver Kvaerno5`.

8. Teacher-student regression (`--only-regression`, issue 36): a ReLU teacher of 4
   neurons in d = 10, 500 Gaussian inputs, half-square loss, a biased student of
   width 100 at balanced init 1e-4, default mode to t = 1000 at rtol 1e-6 and 1e-8:
   evidence, wall (compilation apart), the parameters at t = 10 against GD at lr 1e-4
   and 1e-5, the final loss against GD at lr 1e-4, wall against GD at lr 1e-3; the
   plateaus of the loss (saddle to saddle) by the flow and by GD, plotted to
   `benchmarks/teacher_student_plateaus.png`; then the variants without bias, at init
   1e-2, with n = 5000 and with width 1000.

9. Three classes (`--only-classes`, issue 37): 60 points in 3 clusters, softmax
   cross-entropy, one- and two-hidden-layer networks, default mode against plain's
   cost per gradient and GD extrapolated to lr -> 0.
10. MNIST, ten classes (`--only-mnist10`, issue 37): MLPGradientFlow.jl's 784-100-10
   network on the first 10,000 training images, default mode, loss and accuracy
   against GD at lr 1e-2 and 1e-3.

    python benchmarks/kinks.py                 # 1-4 (~15 min on 2 CPU cores)
    python benchmarks/kinks.py --only-regression   # 8 (~60 min; GD at lr 1e-4 is 30)
    python benchmarks/kinks.py --only-bf       # 3 alone
    python benchmarks/kinks.py --only-plateaus     # 8's plateaus alone, t <= 100 (~5 min)
    python benchmarks/kinks.py --only-convergence  # 8's loss by rtol (~10 min)
    python benchmarks/kinks.py --only-variants --variants n-5000 width-1000  # 8's variants
    python benchmarks/kinks.py --only-variants --variants width-1000 --checkpoint DIR
        # the same, checkpointed in DIR/width-1000 and resumed when run again
    python benchmarks/kinks.py --only-deep --depths 3 --scales 0.3     # ~20 min
    python benchmarks/kinks.py --only-deep --depths 3 --scales 1 --deep-solver Kvaerno5 --no-plain
    python benchmarks/kinks.py --only-deep --depths 4 --scales 0.3 --deep-first-seed 4 --deep-seeds 1
    python benchmarks/kinks.py --mnist         # and 5 (needs the MNIST files)
    python benchmarks/kinks.py --only-mnist10 --T 100 --checkpoint DIR  # 10
        # MNIST, ten classes, 10,000 images (--mnist10-n), resumed when run again
    python benchmarks/kinks.py --quick         # 2 seeds, fewer tolerances
"""

import argparse
import platform
import sys
import time
import types
from pathlib import Path

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import jaxflow as jf


HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from run import problem  # noqa: E402


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


def work_precision(flow, net, T, rtols, ref, max_steps=10**6):
    """Both modes at each rtol: prints the table, returns mode -> [(error, wall, evals,
    rtol)]."""
    print(
        "| mode | rtol | error at T | grad evals | accepted | rejected | located | "
        "stepped over | status | wall s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    points = {"default": [], "plain": []}
    ts = jnp.array([T])
    for rtol in rtols:
        for mode, kinks in (("default", "auto"), ("plain", "plain")):
            rt = jnp.asarray(rtol)  # one compilation for every rtol
            sol, wall = run(lambda: jf.solve(flow, net, t1=T, ts=ts, rtol=rt,
                                             kinks=kinks, metrics={},
                                             max_steps=max_steps))  # fmt: skip
            s, err = stats(sol), error(sol.final, ref)
            points[mode].append((err, wall, s["num_vf_evals"], rtol))
            print(
                f"| {mode} | {rtol:.0e} | {err:.1e} | {s['num_vf_evals']} | "
                f"{s['num_accepted_steps']} | {s['num_rejected_steps']} | "
                f"{s.get('num_kink_events', '-')} | {s.get('num_small_crossings', '-')} "
                f"| {sol.status_name} | {wall:.2f} |",
                flush=True,
            )
    return points


def below(points) -> str:
    """Where the default mode's error-against-wall curve lies against plain's: at each
    default run, plain's error interpolated (log-log) at the same wall time."""
    plain = sorted((sec, err) for err, sec, *_ in points["plain"])
    out = []
    for err, sec, _, rtol in points["default"]:
        if sec < plain[0][0] or sec > plain[-1][0]:
            out.append(f"rtol {rtol:.0e}: outside plain's wall-time range")
            continue
        for (s0, e0), (s1, e1) in zip(plain, plain[1:]):
            if s0 <= sec <= s1:
                w = 0.0 if s1 == s0 else np.log(sec / s0) / np.log(s1 / s0)
                theirs = np.exp((1 - w) * np.log(e0) + w * np.log(e1))
                out.append(f"rtol {rtol:.0e}: {err:.1e} vs plain {theirs:.1e} "
                           f"({'at or below' if err <= theirs else 'ABOVE'})")  # fmt: skip
                break
    return "\n".join(out)


def plot(curves, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 4),
                             layout="constrained")  # fmt: skip
    for ax, (title, points) in zip(np.atleast_1d(axes), curves.items()):
        for mode, pts in points.items():
            err, sec, _, rtol = zip(*pts)
            ax.loglog(sec, err, "o-", label=f"{mode}")
            for e, t, r in zip(err, sec, rtol):
                ax.annotate(f"{r:.0e}", (t, e), fontsize=6, alpha=0.6)
        ax.set(xlabel="wall time (s)", ylabel="relative error at T", title=title)
        ax.legend()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def reference(flow, net, T, **options):
    """Dopri8 at rtol 1e-13 to `T`."""
    return jf.solve(flow, net, t1=T, ts=jnp.array([T]), rtol=1e-13,
                    solver=dfx.Dopri8(), metrics={}, max_steps=10**7, **options)  # fmt: skip


def separable(rtols):
    flow, net, text = problem("separable", "full")
    T = 1000.0
    ref, check = reference(flow, net, T, kinks="plain"), reference(flow, net, T)
    print(f"\n## 1. Problem (i): {text}, T={T:g}")
    print(
        f"Reference: plain Dopri8 rtol 1e-13 ({stats(ref)['num_accepted_steps']} "
        f"steps, {ref.status_name}); the default mode's Dopri8 rtol 1e-13 differs from "
        f"it by {error(check.final, ref.final):.1e}.\n"
    )
    points = work_precision(flow, net, T, rtols, ref.final)
    by = {(mode, p[3]): p for mode, pts in points.items() for p in pts}
    print()
    for rtol in (1e-4, 1e-6):
        if ("default", rtol) in by:
            (de, _, dn, _), (pe, _, pn, _) = by["default", rtol], by["plain", rtol]
            print(f"rtol {rtol:.0e}: default/plain gradient evaluations {dn / pn:.2f} "
                  f"(target <= 1.5), error {de:.1e} vs plain {pe:.1e} "
                  f"(target: no larger)")  # fmt: skip
    if ("default", 1e-10) in by:
        print(f"rtol 1e-10: default error {by['default', 1e-10][0]:.1e} "
              f"(target <= 1e-9)")  # fmt: skip
    print("\nDefault against plain at equal wall time:\n" + below(points))
    return points


def bf_work_precision(rtols, T=100.0):
    flow, net, text = problem("bf", "full")
    ref = reference(flow, net, T)
    print(f"\n## 2. Boursier-Flammarion work-precision: {text}, T={T:g}")
    print(
        f"Reference: default mode, Dopri8 rtol 1e-13 ({stats(ref)['num_accepted_steps']}"
        f" steps, {stats(ref)['num_slides']} pairs entered sliding, "
        f"{ref.status_name}); plain runs get 10^5 steps.\n"
    )
    points = work_precision(flow, net, T, rtols, ref.final, max_steps=10**5)
    print("\nDefault against plain at equal wall time:\n" + below(points))
    return points


def boursier_flammarion(seeds, T=5000.0):
    flow = jf.GradientFlow(jf.losses.square, jf.datasets.boursier_flammarion())
    ts = jnp.array([T])
    metrics = {"loss": jf.metrics.loss, "grad_norm": jf.metrics.grad_norm}
    print(f"\n## 3. Boursier-Flammarion three points, width 200, t1={T:g}, default "
          "mode, max_steps 50,000")  # fmt: skip
    print(
        "\n| rtol | scale | seed | status | accepted | rejected | located | "
        "stepped over | slides | final loss | grad norm | wall s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for rtol in (1e-6, 1e-9):
        for scale in (0.1, 1.0):
            losses = []
            for seed in range(seeds):
                net = jf.models.TwoLayerReLU(
                    1, 200, scale=scale, bias=True, fan="width",
                    key=jax.random.key(seed),
                )  # fmt: skip
                sol, wall = run(lambda: jf.solve(flow, net, t1=T, ts=ts, rtol=rtol,
                                                 metrics=metrics, max_steps=50_000))  # fmt: skip
                s = stats(sol)
                losses.append(float(sol.metrics["loss"][-1]))
                print(
                    f"| {rtol:.0e} | {scale:g} | {seed} | {sol.status_name} | "
                    f"{s['num_accepted_steps']} | {s['num_rejected_steps']} | "
                    f"{s['num_kink_events']} | {s['num_small_crossings']} | "
                    f"{s['num_slides']} | {losses[-1]:.6f} | "
                    f"{float(sol.metrics['grad_norm'][-1]):.1e} | {wall:.1f} |",
                    flush=True,
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
        f"\n## 4. GD vs the min-norm flow, Boursier-Flammarion, width 200, scale 0.1, "
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


def mnist(T=30.0, width=50, tight=1e-7, modes=("default", "plain"), rtols=None):
    """Default and plain on all 12,665 images of 0 vs 1. Each row's error is against the
    default mode at rtol `tight` (the exact flow; plain at that rtol takes over 11
    minutes); by default the default mode runs at `tight` and 1e-6, plain at 1e-6."""
    try:
        data = jf.datasets.mnist()
    except FileNotFoundError as e:
        print(f"\n## 5. MNIST: skipped ({str(e).split('. ')[0]})")
        return
    flow = jf.GradientFlow(jf.losses.exponential, data)
    net = jf.models.TwoLayerReLU(784, width, scale=1e-6, init="gaussian",
                                 key=jax.random.key(0))  # fmt: skip
    print(f"\n## 5. MNIST 0 vs 1, n={data.X.shape[0]}, width {width}, gaussian 1e-6, "
          f"exponential, t <= {T:g} (wall time without compilation)\n")  # fmt: skip
    print(f"| mode | rtol | error vs the default mode at rtol {tight:.0e} | grad evals "
          "| accepted | rejected | located | stepped over | status | wall s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    walls, finals = {}, {}
    for mode in modes:
        kinks = "auto" if mode == "default" else "plain"
        if rtols is not None:
            mode_rtols = rtols
        else:
            mode_rtols = (tight, 1e-6) if mode == "default" else (1e-6,)

        def solve(t1, rtol):
            return jf.solve(flow, net, t1=t1, ts=jnp.array([t1]),
                            rtol=jnp.asarray(rtol), kinks=kinks, metrics={},
                            max_steps=10**5)  # fmt: skip

        jax.block_until_ready(solve(T * 1e-9, 1e-6))  # compiles (t1, rtol: inputs)
        for rtol in mode_rtols:
            start = time.perf_counter()
            sol = jax.block_until_ready(solve(T, rtol))
            walls[mode, rtol] = time.perf_counter() - start
            finals[mode, rtol] = sol.final
            s = stats(sol)
            reference = finals.get(("default", tight))
            err = (
                error(sol.final, reference)
                if reference is not None and (mode, rtol) != ("default", tight)
                else float("nan")
            )
            print(
                f"| {mode} | {rtol:.0e} | {err:.1e} | {s['num_vf_evals']} | "
                f"{s['num_accepted_steps']} | {s['num_rejected_steps']} | "
                f"{s.get('num_kink_events', '-')} | {s.get('num_small_crossings', '-')} "
                f"| {sol.status_name} | {walls[mode, rtol]:.1f} |",
                flush=True,
            )
    if all((m, 1e-6) in walls for m in ("default", "plain")):
        print(f"\nDefault/plain wall time at rtol 1e-6: "
              f"{walls['default', 1e-6] / walls['plain', 1e-6]:.2f} (target <= 2).")  # fmt: skip


def deep(depths, scales, seeds, T=1000.0, solver="Tsit5", plain=True, first=0):
    flow = jf.GradientFlow(jf.losses.square, jf.datasets.boursier_flammarion())
    print(f"\n## 6. Deep MLPs on the three points, t1={T:g}, rtol 1e-8, {solver}, "
          "max_steps 50,000")  # fmt: skip
    print("| depth | scale | seed | mode | status | t reached | accepted | rejected "
          "| slides | loss | polished grad | kind | LS line | wall s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    modes = ("auto", "plain") if plain else ("auto",)
    ends = {}  # (depth, scale) -> [(status, on the least-squares line, kind)]
    for depth in depths:
        for scale in scales:
            for seed in range(first, first + seeds):
                net = jf.models.MLP(
                    1, (30,) * (depth - 1), scale=scale, key=jax.random.key(seed)
                )
                for mode in modes:
                    start = time.perf_counter()
                    sol = jf.solve(
                        flow, net, t1=T, rtol=1e-8, max_steps=50_000, kinks=mode,
                        ts=[T], solver=solver if solver == "auto" else getattr(dfx, solver)(),
                    )  # fmt: skip
                    wall = time.perf_counter() - start
                    loss = float(sol.metrics["loss"][-1])
                    kind, g = "", float("nan")
                    if mode == "auto" and str(sol.status) == "successful":
                        verdict = jf.classify(flow, sol.final, min_loss=0.0)
                        kind, g = verdict.kind, verdict.polished.grad_norm_after
                    line = abs(loss - 0.175043) < 1e-4
                    if mode == "auto":
                        ends.setdefault((depth, scale), []).append(
                            (str(sol.status), line, kind)
                        )
                    print(f"| {depth} | {scale:g} | {seed} | {mode} | {sol.status} | "
                          f"{float(sol.t_final):.4g} | "
                          f"{int(sol.stats['num_accepted_steps'])} | "
                          f"{int(sol.stats['num_rejected_steps'])} | "
                          f"{int(sol.stats.get('num_slides', -1))} | {loss:.6g} | "
                          f"{g:.2e} | {kind} | {line} | {wall:.1f} |",
                          flush=True)  # fmt: skip
    print("\nWhere the seeds end (auto): least-squares line = loss 0.175043 (+-1e-4)")
    print("| depth | scale | seeds | successful | on the LS line | kinds |")
    print("|---|---|---|---|---|---|")
    for (depth, scale), runs in ends.items():
        kinds = sorted({k for _, _, k in runs if k})
        print(f"| {depth} | {scale:g} | {len(runs)} | "
              f"{sum(s == 'successful' for s, _, _ in runs)} | "
              f"{sum(line for _, line, _ in runs)}/{len(runs)} | "
              f"{', '.join(f'{k}: {sum(x == k for _, _, x in runs)}' for k in kinds)} |")  # fmt: skip


def specialization(T=8.0):
    """The two-layer rule (`kinks="min-norm"`) against the general mechanism
    (`kinks="general"`) on a `TwoLayerReLU` that slides."""
    flow = jf.GradientFlow(jf.losses.square, jf.datasets.boursier_flammarion())
    net = jf.models.TwoLayerReLU(
        1, 20, scale=0.1, bias=True, fan="width", key=jax.random.key(4)
    )
    ref = jf.solve(flow, net, t1=T, rtol=1e-12, kinks="min-norm", ts=[T]).final
    print(f"\n## 7. Two-layer specialization against the general mechanism "
          f"(Boursier-Flammarion, width 20, scale 0.1, T={T:g})")  # fmt: skip
    print("| rtol | mode | error | slides | vf evals | wall s |")
    print("|---|---|---|---|---|---|")
    walls = {}
    for rtol in (1e-6, 1e-10):
        for mode in ("min-norm", "general"):
            sol, wall = run(
                lambda: jf.solve(flow, net, t1=T, rtol=rtol, kinks=mode, ts=[T])
            )
            walls[rtol, mode] = wall
            print(f"| {rtol:g} | {mode} | {error(sol.final, ref):.2e} | "
                  f"{int(sol.stats['num_slides'])} | "
                  f"{int(sol.stats['num_vf_evals'])} | {wall:.3f} |")  # fmt: skip
    for rtol in (1e-6, 1e-10):
        ratio = walls[rtol, "general"] / walls[rtol, "min-norm"]
        print(f"rtol {rtol:g}: general / two-layer wall = {ratio:.1f}")


def teacher_student(n=500, width=100, scale=1e-4, bias=True):
    """Issue 36's problem: a ReLU teacher of 4 neurons in d = 10, n Gaussian inputs,
    half-square loss, a two-layer student of `width` neurons at balanced init
    `scale`."""
    teacher = jf.models.TwoLayerReLU(10, 4, scale=1.0, key=jax.random.key(100))
    data = jf.datasets.GaussianTeacher(teacher).sample(jax.random.key(101), n)
    net = jf.models.TwoLayerReLU(10, width, scale=scale, bias=bias,
                                 key=jax.random.key(0))  # fmt: skip
    return jf.GradientFlow(jf.losses.half_square, data), net


def plateaus(t, loss, flat=0.1, span=1.5):
    """The loss's plateaus: maximal runs of times where |d ln L / d ln t| < `flat`,
    over at least a factor `span` in t, as (start, end, loss at start)."""
    slope = np.abs(np.gradient(np.log(loss), np.log(t)))
    out, i = [], 0
    while i < len(t):
        j = i
        while j + 1 < len(t) and slope[j + 1] < flat and slope[i] < flat:
            j += 1
        if slope[i] < flat and t[j] >= span * t[i]:
            out.append((t[i], t[j], loss[i]))
        i = j + 1
    return out


def timed_solve(flow, net, T, ts, **options):
    """A solve to `T`, its wall time without compilation (a solve to 1e-6 T first,
    same shapes and options), and that compilation's time."""
    start = time.perf_counter()
    jax.block_until_ready(jf.solve(flow, net, t1=1e-6 * T, ts=1e-6 * ts, **options))
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    sol = jax.block_until_ready(jf.solve(flow, net, t1=T, ts=ts, **options))
    return sol, time.perf_counter() - start, compile_s


def timed_gd(flow, net, lr, T, ts):
    """GD to `T` at `lr` (a `lax.scan`), and its wall time, compilation included (a
    second or two, next to minutes)."""
    start = time.perf_counter()
    gd = jf.gradient_descent(flow, net, lr=lr, steps=int(round(T / lr)), ts=ts)
    jax.block_until_ready(gd.final)
    return gd, time.perf_counter() - start


VARIANTS = {"no-bias": ("no bias", {"bias": False}),
            "init-1e-2": ("init 1e-2", {"scale": 1e-2}),
            "n-5000": ("n = 5000", {"n": 5000}),
            "width-1000": ("width 1000", {"width": 1000})}  # fmt: skip


def regression(
    T=1000.0,
    gd_tight=True,
    variants=tuple(VARIANTS),
    gd_tight_loss=None,
    main=True,
    checkpoint=None,
):
    """Issue 36: the teacher-student problem in the default mode to T, against GD.
    Without `gd_tight`, GD at lr 1e-4 runs to t = 10 only, and its loss at T is
    `gd_tight_loss` (from an earlier run: GD does not depend on the flow's code).
    Without `main`, the variants alone (`teacher_student_variants`, `checkpoint`)."""
    flow, net = teacher_student()
    ts = np.unique(np.concatenate([np.geomspace(1e-2, T, 501), [10.0, T]]))
    ts = jnp.asarray(ts)
    i10 = int(np.argmin(np.abs(np.asarray(ts) - 10.0)))
    print(f"\n## 8. Teacher-student regression (issue 36): teacher 4 ReLU neurons, d = 10, "
          f"n = 500 Gaussian inputs, half-square loss; student width 100, bias, "
          f"balanced init 1e-4; default mode to t = {T:g}")  # fmt: skip
    print("\n| run | status | accepted | rejected | gradient evals | crossings | "
          "slides | exits | max sliding | conserved drift | loss at T | compile s | "
          "wall s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")

    def row(name, sol, wall, compile_s=float("nan")):
        s = stats(sol)
        m = sol.metrics
        print(f"| {name} | {sol.status_name} | {s['num_accepted_steps']} | "
              f"{s['num_rejected_steps']} | {s['num_vf_evals']} | "
              f"{s['num_crossings'] + s['num_small_crossings']} | {s['num_slides']} | "
              f"{s['num_exits']} | {int(np.max(m['num_sliding']))} | "
              f"{float(np.max(m['conserved_drift'])):.1e} | "
              f"{float(m['loss'][-1]):.6e} | {compile_s:.1f} | {wall:.1f} |",
              flush=True)  # fmt: skip

    if not main:
        return teacher_student_variants(row, variants, T, checkpoint)
    flows = {}
    for rtol in (1e-6, 1e-8):
        sol, wall, compile_s = timed_solve(flow, net, T, ts, rtol=rtol)
        flows[rtol] = (sol, wall)
        row(f"flow, rtol {rtol:.0e}", sol, wall, compile_s)
    gd = {}
    for lr, horizon in ((1e-3, T), (1e-5, 10.0), (1e-4, T if gd_tight else 10.0)):
        gts = ts[ts <= horizon]
        gd[lr], wall = timed_gd(flow, net, lr, horizon, gts)
        loss = float(gd[lr].metrics["loss"][-1])
        print(f"| GD, lr {lr:.0e}, to t = {horizon:g} | {gd[lr].status_name} | "
              f"{int(round(horizon / lr))} steps | | | | | | | | {loss:.6e} | | "
              f"{wall:.1f} |", flush=True)  # fmt: skip
        if lr == 1e-3:
            gd_wall = wall
    print("\nTargets, each rtol:\n")
    print("| rtol | successful | ‖θ(10) − GD 1e-5‖ / ‖θ(10) − GD 1e-4‖ | "
          "loss at T vs GD 1e-4 (relative) | wall / GD lr 1e-3 wall |")  # fmt: skip
    print("|---|---|---|---|---|")
    for rtol, (sol, wall) in flows.items():
        theta = jax.tree.map(lambda x: x[i10], sol.ys)
        far = {lr: error(jax.tree.map(lambda x: x[i10], gd[lr].ys), theta)
               for lr in gd if lr != 1e-3}  # fmt: skip
        ratio = far[1e-4] / far[1e-5] if 1e-4 in far else float("nan")
        flow_loss = float(sol.metrics["loss"][-1])
        gd_loss = float(gd[1e-4].metrics["loss"][-1]) if gd_tight else gd_tight_loss
        print(f"| {rtol:.0e} | {sol.status_name == 'successful'} | "
              f"{far[1e-5]:.2e} vs {far.get(1e-4, float('nan')):.2e}: {ratio:.1f}x | "
              f"{abs(flow_loss - gd_loss) / gd_loss:.1e} | {wall / gd_wall:.2f} |")  # fmt: skip
    if not gd_tight:
        print(
            f"\n(GD at lr 1e-4 to t = {T:g}: loss {gd_tight_loss} from an earlier run.)"
        )
    else:
        saddle_to_saddle(ts, flows[1e-8][0], gd[1e-4])
    if variants:
        teacher_student_variants(row, variants, T)


def teacher_student_variants(row, variants, T, checkpoint=None):
    """Section 8's variants (`VARIANTS`), default mode at rtol 1e-6, to `T`. With
    `checkpoint` (a folder), each runs as a one-seed `jaxflow.solve_ensemble` with a
    run directory `checkpoint/NAME`, checkpointed at 31 log-spaced times: run again,
    it resumes where it stopped (the same trajectory, bit for bit); its wall is the
    sum over the calls that ran it, kept in `checkpoint/NAME.walls`."""
    print("\nVariants, default mode, rtol 1e-6, to t = 1000 (wall includes "
          "compilation):\n")  # fmt: skip
    print("| variant | status | accepted | rejected | gradient evals | crossings | "
          "slides | exits | max sliding | conserved drift | loss at T | compile s | "
          "wall s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    ts = jnp.geomspace(1e-2, T, 51)
    for key in variants:
        name, options = VARIANTS[key]
        vflow, vnet = teacher_student(**options)
        start = time.perf_counter()
        if checkpoint is None:
            sol = jf.solve(vflow, vnet, t1=T, ts=ts, rtol=1e-6, max_steps=10**6)
            jax.block_until_ready(sol.final)
            row(name, sol, time.perf_counter() - start)
            continue
        one, calls = checkpointed(
            vflow, vnet, Path(checkpoint) / key, t1=T, ts=ts,
            segments=jnp.geomspace(1e-3 * T, T, 31), rtol=1e-6, max_steps=10**6,
        )  # fmt: skip
        row(f"{name} ({len(calls)} calls)", one, sum(calls))


def checkpointed(flow, net, folder, **options):
    """One solve of `flow` from `net`, as a one-seed `jaxflow.solve_ensemble` with the
    run directory `folder` (`options`: its arguments): run again, it resumes where it
    stopped. Returns the seed's result (status, stats, metrics) and the walls of the
    calls that ran it, kept in `folder` + `.walls` (a finished run is only read)."""
    folder = Path(folder)
    start = time.perf_counter()
    done = (folder / "ensemble.nc").exists()
    ens = jf.solve_ensemble(flow, lambda _: net, jax.random.split(jax.random.key(0), 1),
                            checkpoint_dir=folder, progress=True, **options)  # fmt: skip
    walls = folder.parent / f"{folder.name}.walls"
    if not done:
        with open(walls, "a") as f:
            f.write(f"{time.perf_counter() - start:.1f}\n")
    one = types.SimpleNamespace(
        status_name=str(ens.status_name[0]),
        stats={k: v[0] for k, v in ens.stats.items()},
        metrics={k: v[0] for k, v in ens.metrics.items()},
    )
    return one, [float(w) for w in walls.read_text().split()]


def plateau_study(T=100.0):
    """The saddle-to-saddle part of section 8 alone: the flow (rtol 1e-8) and GD at
    lr 1e-4 to `T` (the plateaus end before t = 50; then the loss decays like a power
    of t)."""
    flow, net = teacher_student()
    ts = jnp.geomspace(1e-2, T, 401)
    print(
        f"\n## 8b. Teacher-student (section 8's problem), saddle to saddle, t <= {T:g}"
    )
    sol = jf.solve(flow, net, t1=T, ts=ts, rtol=1e-8)
    gd, wall = timed_gd(flow, net, 1e-4, T, ts)
    print(f"\nFlow: {sol.status_name}, {stats(sol)['num_accepted_steps']} steps; GD: "
          f"{int(round(T / 1e-4))} steps, {wall:.0f} s.")  # fmt: skip
    saddle_to_saddle(ts, sol, gd)


def rtol_convergence(rtols=(1e-6, 1e-7, 1e-8, 1e-9), T=1000.0):
    """Section 8's flow at several tolerances: its loss at a few times, to see what it
    converges to."""
    flow, net = teacher_student()
    ts = jnp.array([1.0, 10.0, 30.0, 100.0, 300.0, T])
    print("\n## 8c. Teacher-student (section 8's problem): the loss by rtol\n")
    print(
        "| rtol | status | "
        + " | ".join(f"t = {float(t):g}" for t in ts)
        + " | wall s |"
    )
    print("|---|---|" + "---|" * (len(ts) + 1))
    for rtol in rtols:
        start = time.perf_counter()
        sol = jf.solve(flow, net, t1=T, ts=ts, rtol=rtol)
        loss = jax.block_until_ready(sol.metrics["loss"])
        print(f"| {rtol:.0e} | {sol.status_name} | "
              + " | ".join(f"{float(x):.9e}" for x in loss)
              + f" | {time.perf_counter() - start:.0f} |", flush=True)  # fmt: skip


def saddle_to_saddle(ts, sol, gd):
    """The loss against log t, flow and GD at lr 1e-4, with the plateaus marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.asarray(ts)
    curves = {"flow (rtol 1e-8)": (t, np.asarray(sol.metrics["loss"])),
              "GD, lr 1e-4": (np.asarray(gd.ts), np.asarray(gd.metrics["loss"]))}  # fmt: skip
    found = {name: plateaus(*curve) for name, curve in curves.items()}
    print("\nPlateaus (|d ln L / d ln t| < 0.1 over at least a factor 1.5 in t; t = "
          "0.01 is the first time saved):\n")  # fmt: skip
    print("| plateau | loss | flow start | flow end | GD lr 1e-4 start | GD end |")
    print("|---|---|---|---|---|---|")
    a, b = found.values()
    for k in range(max(len(a), len(b))):
        cells = [f"{a[k][2]:.4g}" if k < len(a) else "-"]
        for p in (a, b):
            cells += [f"{p[k][0]:.3g}", f"{p[k][1]:.3g}"] if k < len(p) else ["-", "-"]
        print(f"| {k + 1} | " + " | ".join(cells) + " |")
    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    for (name, (x, y)), style in zip(curves.items(), ("-", "--")):
        ax.loglog(x, y, style, label=name)
    for start, end, _ in a:
        ax.axvspan(start, end, color="0.85", zorder=0)
    ax.set(xlabel="t", ylabel="loss", title="Teacher-student: saddle to saddle "
           "(plateaus shaded)")  # fmt: skip
    ax.legend()
    fig.savefig(HERE / "teacher_student_plateaus.png", dpi=100)
    plt.close(fig)


def three_classes(n=60, d=5, seed=0):
    """Issue 37's problem: `n` points in 3 Gaussian clusters in R^d (centres N(0, 4),
    spread 0.5), integer labels, softmax cross-entropy."""
    ckey, xkey = jax.random.split(jax.random.key(seed))
    labels = jnp.arange(n) // (n // 3)
    X = 2.0 * jax.random.normal(ckey, (3, d))[labels]
    data = jf.Dataset(X + 0.5 * jax.random.normal(xkey, (n, d)), labels)
    return jf.GradientFlow(jf.losses.cross_entropy, data)


def classes(T=20.0, rtol=1e-10):
    """Issue 37: the general (equivalent-control) path on the 3-class problem, ReLU and
    leaky ReLU, against plain's cost per gradient and GD extrapolated to lr -> 0."""
    flow = three_classes()
    key = jax.random.key(0)
    mkey = jax.random.split(key, 3)[2]
    nets = {
        "eqx.nn.MLP(5, 3, 16, 2), ReLU": eqx.nn.MLP(
            5, 3, 16, 2, activation=jax.nn.relu, key=mkey
        ),
        "eqx.nn.MLP(5, 3, 16, 2), leaky ReLU": eqx.nn.MLP(
            5, 3, 16, 2, activation=jax.nn.leaky_relu, key=mkey
        ),
        "jf.models.MLP(5, (16, 16), out=3, out_bias=True), ReLU": jf.models.MLP(
            5, (16, 16), scale=1.0, out=3, out_bias=True, init="gaussian", key=mkey
        ),
        "jf.models.MLP(5, 16, out=3, out_bias=True), ReLU (two-layer rule)":
            jf.models.MLP(5, 16, scale=1.0, out=3, out_bias=True, init="gaussian",
                          key=mkey),
    }  # fmt: skip
    deep_flow = jf.GradientFlow(jf.losses.square, jf.datasets.boursier_flammarion())
    deep_net = jf.models.MLP(1, (30, 30), scale=1.0, key=jax.random.key(0))
    problems = [(name, flow, net, T, rtol) for name, net in nets.items()]
    problems.append(("deep section's 3-layer MLP(1, (30, 30)), seed 0, rtol 1e-8, t = 100",
                     deep_flow, deep_net, 100.0, 1e-8))  # fmt: skip
    print(f"\n## 9. Three classes (issue 37): 60 points in 3 clusters in R^5, softmax "
          f"cross-entropy, default mode (equivalent control), rtol {rtol:g}, to "
          f"t = {T:g}\n")  # fmt: skip
    print("| network | status | accepted | rejected | slides | gradient evals | kink "
          "evals | first call s | warm s | µs / eval | plain µs / eval | ratio | "
          "error vs GD (lr -> 0) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, flow, net, T, rtol in problems:
        walls = []
        for _ in range(2):  # the first call compiles
            start = time.perf_counter()
            sol = jf.solve(flow, net, t1=T, rtol=rtol, ts=[T])
            jax.block_until_ready(sol.final)
            walls.append(time.perf_counter() - start)
        # Plain's cost per gradient (it stalls: max_steps at a chattering kink), warm:
        # the same call twice (max_steps is part of the compiled program).
        for _ in range(2):
            start = time.perf_counter()
            plain = jf.solve(flow, net, t1=T, rtol=rtol, ts=[T], kinks="plain",
                             max_steps=20_000)  # fmt: skip
            jax.block_until_ready(plain.final)
        plain_us = (
            1e6 * (time.perf_counter() - start) / int(plain.stats["num_vf_evals"])
        )
        # GD at lr h and h / 2, Richardson-extrapolated (first order) to lr -> 0.
        gd = [eqx.filter(jf.gradient_descent(flow, net, lr=lr, steps=int(round(T / lr)),
                                             ts=[T]).final, eqx.is_inexact_array)
              for lr in (2e-4, 1e-4)]  # fmt: skip
        limit = jax.tree.map(lambda a, b: 2 * b - a, *gd)
        s = stats(sol)
        us = 1e6 * walls[1] / s["num_vf_evals"]
        print(f"| {name} | {sol.status_name} | {s['num_accepted_steps']} | "
              f"{s['num_rejected_steps']} | {s['num_slides']} | {s['num_vf_evals']} | "
              f"{s.get('num_kink_evals', '-')} | {walls[0]:.1f} | {walls[1]:.2f} | {us:.1f} | "
              f"{plain_us:.1f} | {us / plain_us:.2f} | "
              f"{error(eqx.filter(sol.final, eqx.is_inexact_array), limit):.1e} |",
              flush=True)  # fmt: skip


def mnist_ten(n=10_000, T=100.0, rtol=1e-6, width=100, gd_T=None, checkpoint=None):
    """Issue 37's anchor, MLPGradientFlow.jl's MNIST network: 784-`width`-10, ReLU,
    biases, an output bias, softmax cross-entropy, pixels / 255 (not centred),
    gaussian init N(0, 1/fan-in), on the first `n` training images, default mode (the
    two-layer rule, vector outputs) at `rtol` to `T`; the loss and training accuracy at
    a few times against GD at lr 1e-2 and 1e-3 (GD to `gd_T`, default `T`). With
    `checkpoint` (a folder), the flow runs as a one-seed `jaxflow.solve_ensemble`
    with a run directory there, resumed when run again (`teacher_student_variants`)."""
    try:
        data = jf.datasets.mnist(digits=None, n=n, center=False)
    except FileNotFoundError as e:
        print(f"\n## 10. MNIST, ten classes: skipped ({str(e).split('. ')[0]})")
        return
    flow = jf.GradientFlow(jf.losses.cross_entropy, data)
    net = jf.models.MLP(784, (width,), out=10, out_bias=True, init="gaussian",
                        scale=1.0, key=jax.random.key(0))  # fmt: skip
    gd_T = T if gd_T is None else gd_T
    ts = np.array(
        [t for t in (0, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500) if t < T] + [T]
    )
    metrics = {"loss": jf.metrics.loss, "accuracy": jf.metrics.accuracy,
               "conserved_drift": jf.metrics.ConservedDrift(net)}  # fmt: skip
    print(f"\n## 10. MNIST, ten classes (issue 37): 784-{width}-10 ReLU with biases, "
          f"softmax cross-entropy, the first {data.X.shape[0]} training images, "
          f"pixels / 255, default mode, rtol {rtol:g}, to t = {T:g}\n")  # fmt: skip
    start = time.perf_counter()
    if checkpoint is None:
        sol = jf.solve(flow, net, t1=T, ts=ts, rtol=rtol, max_steps=10**6,
                       metrics=metrics, save_models=False)  # fmt: skip
        jax.block_until_ready(sol.metrics)
        wall, calls = time.perf_counter() - start, 1
    else:
        folder = Path(checkpoint) / f"mnist10-n{n}-T{T:g}-rtol{rtol:g}"
        sol, each = checkpointed(flow, net, folder, t1=T, ts=ts, segments=ts[1:],
                                 rtol=rtol, max_steps=10**6, metrics=metrics)  # fmt: skip
        wall, calls = sum(each), len(each)
    # Plain at the same settings, for its cost (it chatters where pairs slide).
    start = time.perf_counter()
    plain = jf.solve(flow, net, t1=T, ts=ts, rtol=rtol, max_steps=10**6,
                     metrics=metrics, save_models=False, kinks="plain")  # fmt: skip
    jax.block_until_ready(plain.metrics)
    plain_wall = time.perf_counter() - start
    print("| mode | status | accepted | rejected | gradient evals | located | stepped "
          "over | slides | exits | max conserved drift | wall s (calls) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for mode, one, w, c in (
        ("default", sol, wall, calls),
        ("plain", plain, plain_wall, 1),
    ):
        s = stats(one)
        print(f"| {mode} | {one.status_name} | {s['num_accepted_steps']} | "
              f"{s['num_rejected_steps']} | {s['num_vf_evals']} | "
              f"{s.get('num_crossings', '-')} | {s.get('num_small_crossings', '-')} | "
              f"{s.get('num_slides', '-')} | {s.get('num_exits', '-')} | "
              f"{float(np.max(one.metrics['conserved_drift'])):.1e} | {w:.0f} ({c}) |",
              flush=True)  # fmt: skip
    gd = {}
    for lr in (1e-2, 1e-3):
        steps = int(round(gd_T / lr))
        start = time.perf_counter()
        g = jf.gradient_descent(flow, net, lr=lr, steps=steps, ts=ts[ts <= gd_T],
                                metrics=metrics, save_models=False)  # fmt: skip
        jax.block_until_ready(g.metrics)
        gd[lr] = g, time.perf_counter() - start
    print(f"\nLoss (training accuracy) at t; GD's walls: lr 1e-2 {gd[1e-2][1]:.0f} s, "
          f"lr 1e-3 {gd[1e-3][1]:.0f} s (to t = {gd_T:g}).\n")  # fmt: skip
    print("| t | flow | plain | GD lr 1e-2 | GD lr 1e-3 | flow - plain | "
          "flow - GD 1e-2 | flow - GD 1e-3 |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    loss, acc = np.asarray(sol.metrics["loss"]), np.asarray(sol.metrics["accuracy"])
    plain_loss = np.asarray(plain.metrics["loss"])
    plain_acc = np.asarray(plain.metrics["accuracy"])
    for i, t in enumerate(ts):
        cells = [f"{loss[i]:.6f} ({acc[i]:.3f})",
                 f"{plain_loss[i]:.6f} ({plain_acc[i]:.3f})"]  # fmt: skip
        diffs = [f"{loss[i] - plain_loss[i]:.1e}"]
        for lr in (1e-2, 1e-3):
            g = gd[lr][0]
            j = np.flatnonzero(np.isclose(np.asarray(g.ts), t))
            if len(j):
                gl = float(g.metrics["loss"][j[0]])
                ga = float(g.metrics["accuracy"][j[0]])
                cells.append(f"{gl:.6f} ({ga:.3f})")
                diffs.append(f"{loss[i] - gl:.1e}")
            else:
                cells.append("-")
                diffs.append("-")
        print(f"| {t:g} | " + " | ".join(cells + diffs) + " |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--mnist", action="store_true")
    parser.add_argument("--only-mnist", action="store_true")
    parser.add_argument("--mnist-modes", nargs="+", default=["default", "plain"],
                        choices=["default", "plain"])  # fmt: skip
    parser.add_argument("--mnist-rtols", type=float, nargs="+", default=None)
    parser.add_argument("--deep", action="store_true")
    parser.add_argument("--only-deep", action="store_true")
    parser.add_argument("--deep-seeds", type=int, default=8)
    parser.add_argument("--deep-first-seed", type=int, default=0)
    parser.add_argument("--depths", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.3])
    parser.add_argument(
        "--deep-solver",
        default="Tsit5",
        help='a diffrax solver by name, or auto (solver="auto")',
    )
    parser.add_argument("--no-plain", action="store_true")
    parser.add_argument("--only-regression", action="store_true")
    parser.add_argument("--only-convergence", action="store_true",
                        help="section 8's loss by rtol, 1e-6 to 1e-9")  # fmt: skip
    parser.add_argument("--only-plateaus", action="store_true",
                        help="section 8's saddle-to-saddle table and plot alone")  # fmt: skip
    parser.add_argument("--only-bf", action="store_true",
                        help="section 3 alone (8 seeds; 2 with --quick)")  # fmt: skip
    parser.add_argument("--no-gd-tight", action="store_true",
                        help="skip GD at lr 1e-4 to t = 1000 (30 min)")  # fmt: skip
    parser.add_argument("--no-variants", action="store_true")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS),
                        default=list(VARIANTS))  # fmt: skip
    parser.add_argument("--only-variants", action="store_true",
                        help="section 8's variants alone (--variants)")  # fmt: skip
    parser.add_argument("--checkpoint", metavar="DIR",
                        help="--only-variants: checkpointed in DIR/NAME, resumed "
                        "when run again")  # fmt: skip
    parser.add_argument("--T", type=float, default=1000.0,
                        help="--only-variants, --only-mnist10: the end time")  # fmt: skip
    parser.add_argument("--gd-tight-loss", type=float, default=float("nan"),
                        help="with --no-gd-tight: GD lr 1e-4's loss at t = 1000 "
                        "from an earlier run")  # fmt: skip
    parser.add_argument("--only-classes", action="store_true",
                        help="issue 37's 3-class problem, general path")  # fmt: skip
    parser.add_argument("--only-mnist10", action="store_true",
                        help="issue 37's MNIST, ten classes (784-100-10)")  # fmt: skip
    parser.add_argument("--mnist10-n", type=int, default=10_000)
    parser.add_argument("--mnist10-gd-T", type=float, default=None,
                        help="GD to this time (default: --T)")  # fmt: skip
    parser.add_argument("--rtol", type=float, default=1e-6,
                        help="--only-mnist10: the flow's rtol")  # fmt: skip
    args = parser.parse_args()
    print(
        f"# jaxflow kinks benchmark: {platform.processor() or platform.machine()}, "
        f"{jax.devices()[0].platform}, jax {jax.__version__}, jaxflow {jf.__version__}"
    )
    if args.only_bf:
        boursier_flammarion(2 if args.quick else 8)
        return
    if args.only_mnist10:
        mnist_ten(n=args.mnist10_n, T=args.T, rtol=args.rtol, gd_T=args.mnist10_gd_T,
                  checkpoint=args.checkpoint)  # fmt: skip
        return
    if args.only_classes:
        classes()
        return
    if args.only_convergence:
        rtol_convergence()
        return
    if args.only_plateaus:
        plateau_study()
        return
    if args.only_variants:
        regression(T=args.T, variants=args.variants, main=False,
                   checkpoint=args.checkpoint)  # fmt: skip
        return
    if args.only_regression:
        regression(gd_tight=not args.no_gd_tight, gd_tight_loss=args.gd_tight_loss,
                   variants=() if args.no_variants else args.variants)  # fmt: skip
        return
    if args.deep or args.only_deep:
        specialization()
        deep(args.depths, args.scales, args.deep_seeds, solver=args.deep_solver,
             plain=not args.no_plain, first=args.deep_first_seed)  # fmt: skip
    if not args.only_mnist and not args.only_deep:
        rtols = (
            (1e-3, 1e-4, 1e-6, 1e-8, 1e-10)
            if args.quick
            else tuple(10.0**-k for k in range(3, 11))
        )
        curves = {"problem (i), T=1000": separable(rtols),
                  "Boursier-Flammarion, T=100": bf_work_precision(rtols)}  # fmt: skip
        plot(curves, HERE / "work_precision_kinks.png")
        boursier_flammarion(2 if args.quick else 8)
        gradient_descent()
    if args.mnist or args.only_mnist:
        mnist(modes=args.mnist_modes, rtols=args.mnist_rtols)


if __name__ == "__main__":
    main()
