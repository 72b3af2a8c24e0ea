"""The performance suite: jaxflow against what researchers use instead.

Every method is scored by its relative parameter error at t = T against a tight float64
reference (Dopri8, rtol 1e-12), its gradient (vector-field) evaluations and its wall
time (compilation excluded: each solve runs once to compile, then is timed). All ratios
come from one run on one machine.

Problems:
  separable  (i)   n=200, d=20, width 50, balanced init 1e-6, mean exponential loss
  mnist      (ii)  MNIST 0 vs 1, n=2000, width 50, gaussian init 1e-6, exponential loss
  bf         (iii) Boursier-Flammarion three points, width 200, lambda 0.1, square loss

Sections:
  solvers    jaxflow with Tsit5, Dopri5, Dopri8 at rtol 1e-4 ... 1e-10 and Kvaerno5
             (implicit, Newton-GMRES) down to 1e-8 (work-precision table and
             benchmarks/work_precision_<problem>.png)
  overhead   jaxflow against a bare diffrax.diffeqsolve of the same vector field
  gd         plain GD in JAX (lax loops) at the steps given; its error is first order
             in the step, so the step (and cost) that matches the flow's error at rtol
             1e-8 is extrapolated from the measured ones, and said so
  peers      scipy solve_ivp (DOP853, RK45) on the same jitted gradient; PyTorch GD and
             torchdiffeq dopri5 in float64 when torch is installed (`pip install
             ".[bench]"`), else a line saying they were skipped
  ensemble   seeds per second against batch size (problems i and ii), and the first
             solve's compile time
  flops      achieved FLOP/s of the vector field, float64 and float32 with TF32 off,
             against the device's peak (H100, H200, A100; "unknown" elsewhere)

    python benchmarks/run.py                              # problems i and iii, all sections
    python benchmarks/run.py --problems mnist --size small   # problem ii at n = 500
    python benchmarks/run.py --problems separable --sections solvers gd --T 100
    python benchmarks/run.py --size tiny                  # smoke test (CI)
    python benchmarks/run.py --problems mnist --sections ensemble flops --batches 1024
                                                          # the GPU rows (not measured yet)
"""

import argparse
import os
import platform
import time
from pathlib import Path

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optimistix as optx

import jaxflow as jf


HERE = Path(__file__).resolve().parent


def _newton_krylov(rtol, atol):
    """Newton's method with matrix-free GMRES (a Hessian-vector product per iteration):
    diffrax's default root finder builds the dense Hessian (1,050² on problem i) and
    factorises it every step, and no solve finished in 5 min. (Not `diffrax.VeryChord`
    with GMRES: in diffrax 0.7.2 it applies `lax.stop_gradient` to the linearised
    operator, which fails.)"""
    gmres = lx.GMRES(rtol=1e-2 * rtol, atol=1e-2 * atol, restart=20, max_steps=200)
    return optx.Newton(rtol=rtol, atol=atol, linear_solver=gmres)


SOLVERS = {
    "Tsit5": lambda rtol, atol: dfx.Tsit5(),
    "Dopri5": lambda rtol, atol: dfx.Dopri5(),
    "Dopri8": lambda rtol, atol: dfx.Dopri8(),
    "Kvaerno5": lambda rtol, atol: dfx.Kvaerno5(root_finder=_newton_krylov(rtol, atol)),
}
# Tightest rtol a solver is run at. Kvaerno5 at 1e-10 on problem (i) had not finished
# after 10 min (18 times Tsit5's wall time at 1e-8, for 27 times its error).
TIGHTEST = {"Kvaerno5": 1e-8}


# The default mode's tolerances that peers are matched against.
PEER_RTOLS = (1e-3, 1e-4, 1e-6, 1e-8, 1e-10)


def problem(name, size):
    """(flow, model, description) for a problem at `size` ("full", "small", "tiny")."""
    dkey, mkey = jax.random.split(jax.random.key(0))
    if name == "separable":
        n, d, width = {"full": (200, 20, 50), "small": (100, 20, 20)}.get(
            size, (20, 5, 5)
        )
        data = jf.datasets.separable(dkey, n, d, 0.3)
        net = jf.models.TwoLayerReLU(d, width, scale=1e-6, key=mkey)
        return (
            jf.GradientFlow(jf.losses.exponential, data),
            net,
            f"separable n={n}, d={d}, width {width}, balanced 1e-6, exponential",
        )
    if name == "mnist":
        n = {"full": 2000, "small": 500}.get(size, 50)
        data = jf.datasets.mnist(n=n)
        net = jf.models.TwoLayerReLU(784, 50, scale=1e-6, init="gaussian", key=mkey)
        return (
            jf.GradientFlow(jf.losses.exponential, data),
            net,
            f"MNIST 0 vs 1, n={n}, width 50, gaussian 1e-6, exponential",
        )
    width = {"full": 200, "small": 50}.get(size, 10)
    data = jf.datasets.boursier_flammarion()
    net = jf.models.TwoLayerReLU(1, width, scale=0.1, bias=True, fan="width", key=mkey)
    return (
        jf.GradientFlow(jf.losses.square, data),
        net,
        f"Boursier-Flammarion, width {width}, lambda 0.1, square (min-norm kinks)",
    )


def flat(model) -> np.ndarray:
    return np.asarray(
        jax.flatten_util.ravel_pytree(eqx.filter(model, eqx.is_inexact_array))[0]
    )


def timed(fn, warm=None):
    """Result and wall seconds of `fn()`, after `warm()` (default: `fn()`) compiled it."""
    jax.block_until_ready((warm or fn)())
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - start


def timed_solve(flow, net, T, **options):
    """`jf.solve` to `T`, saving only there, and its wall seconds. A solve's horizon is
    not part of its compiled program: a solve to T × 1e-9 compiles it, so that a long
    solve is not run twice (minutes on MNIST)."""

    # A tolerance as an array is an input of the compiled program, not a constant: one
    # compilation serves every rtol.
    if "rtol" in options:
        options["rtol"] = jnp.asarray(options["rtol"], float)

    def run(t1):
        return jf.solve(flow, net, t1=t1, ts=jnp.array([t1]), metrics={},
                        max_steps=10**6, **options)  # fmt: skip

    return timed(lambda: run(T), warm=lambda: run(T * 1e-9))


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


HEADER = ["solver", "rtol", "rel. error at T", "grad evals", "accepted", "rejected",
          "status", "wall s"]  # fmt: skip


def solvers_section(flow, net, T, ref, rtols, solvers):
    """Prints the work-precision table; returns solver -> [(error, seconds, evals,
    rtol)]."""
    rows, points, skipped = [], {}, []
    scale = float(np.max(np.abs(flat(net))))
    for name, make in SOLVERS.items():
        if name not in solvers:
            continue
        for rtol in rtols:
            if rtol < TIGHTEST.get(name, 0.0):
                skipped.append(f"{name} at rtol {rtol:.0e}")
                continue
            solver = make(rtol, rtol * scale)  # jaxflow's default atol
            sol, sec = timed_solve(flow, net, T, rtol=rtol, solver=solver)
            err = rel(flat(sol.final), ref)
            evals = int(sol.stats["num_vf_evals"])  # -1: not counted (implicit)
            points.setdefault(name, []).append((err, sec, evals, rtol))
            rows.append([
                name, f"{rtol:.0e}", f"{err:.2e}", evals if evals >= 0 else "n/a",
                int(sol.stats["num_accepted_steps"]),
                int(sol.stats["num_rejected_steps"]), str(sol.status_name),
                f"{sec:.3f}",
            ])  # fmt: skip
            if len(rows) == 1:
                print(table(HEADER, []), flush=True)
            print(table(HEADER, rows[-1:]).splitlines()[-1], flush=True)
    if skipped:
        print(f"\nNot run (slower than 10 min on problem i): {', '.join(skipped)}.")
    return points


def interleaved(fns, reps):
    """The fastest of `reps` runs of each function, run in turn (so that a slow spell
    of a shared machine hits all of them), after one run each to compile; and what
    that first run returned."""
    outputs = {name: jax.block_until_ready(fn()) for name, fn in fns.items()}
    times = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}, outputs


def overhead_section(flow, net, T, rtols, reps=15):
    """jaxflow.solve against a bare diffrax.diffeqsolve of the same vector field: plain
    kinks, Tsit5, the same controller, only the end saved, the data an argument of both
    (not a constant folded into the bare program), and the same first step: diffeqsolve
    wraps its term (`WrapTerm`), so its step-size heuristic is skipped and it starts at
    0.01, where jaxflow's heuristic picks another step and the step sequences differ."""
    params, static = eqx.partition(net, eqx.is_inexact_array)
    scale = max(float(jnp.max(jnp.abs(x))) for x in jax.tree.leaves(params))
    dt0 = 0.01
    rows = []
    for rtol in rtols:

        @eqx.filter_jit
        def bare(params, flow, rtol=rtol):
            return dfx.diffeqsolve(
                dfx.ODETerm(lambda t, y, a: flow.vector_field(t, y, static)),
                dfx.Tsit5(), 0.0, T, dt0, params,
                saveat=dfx.SaveAt(t1=True),
                stepsize_controller=dfx.PIDController(
                    rtol=rtol, atol=rtol * scale, pcoeff=0.3, icoeff=0.3
                ),
                max_steps=10**6,
            )  # fmt: skip

        def ours(rtol=rtol):
            return jf.solve(flow, net, t1=T, ts=jnp.array([T]), rtol=rtol, dt0=dt0,
                            metrics={}, kinks="plain", max_steps=10**6)  # fmt: skip

        best, sols = interleaved(
            {"bare": lambda: bare(params, flow), "ours": ours},
            reps if rtol > 1e-8 else max(3, reps // 3),
        )
        rows.append([
            f"{rtol:.0e}", int(sols["bare"].stats["num_steps"]),
            int(sols["ours"].stats["num_steps"]), f"{best['bare']:.4f}",
            f"{best['ours']:.4f}", f"{best['ours'] / best['bare'] - 1:+.1%}",
        ])  # fmt: skip
    return table(
        ["rtol", "bare steps", "jaxflow steps", "bare diffrax s", "jaxflow s",
         "overhead"],
        rows,
    ) + f"\n\n(fastest of {reps} interleaved runs each; {max(3, reps // 3)} below rtol 1e-8)"  # fmt: skip


def rel(a, b) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def gd_section(flow, net, T, ref, lrs, target):
    """GD at the given steps; `target` = (error, grad evals, seconds) of the flow."""
    rows, fits = [], []
    for lr in lrs:
        steps = int(round(T / lr))
        sol, sec = timed(
            lambda: jf.gradient_descent(
                flow, net, lr=lr, steps=steps, ts=jnp.array([steps * lr]), metrics={}
            )
        )
        err = rel(flat(sol.final), ref)
        fits.append((lr, err, sec / steps))
        rows.append([f"{lr:g}", steps, f"{err:.2e}", f"{sec:.3f}", "measured"])
    # GD's error is first order in its step: lr_needed = lr * target_err / err.
    lr0, err0, per_step = fits[-1]
    lr_needed = lr0 * target[0] / err0
    steps_needed = T / lr_needed
    rows.append([
        f"{lr_needed:.2g}", f"{steps_needed:.3g}", f"{target[0]:.2e}",
        f"{steps_needed * per_step:.3g}", "extrapolated (error ∝ step)",
    ])  # fmt: skip
    ratio_evals = steps_needed / target[1]
    ratio_time = steps_needed * per_step / target[2]
    text = table(["GD step", "steps", "rel. error at T", "wall s", ""], rows)
    text += (
        f"\n\nTo match the flow's error {target[0]:.2e} (Tsit5, rtol 1e-8: "
        f"{target[1]} gradient evaluations, {target[2]:.3f} s) GD needs "
        f"{ratio_evals:.3g}× more gradient evaluations and {ratio_time:.3g}× the wall "
        f"time (extrapolated from step {lr0:g})."
    )
    return text


def scipy_section(flow, net, T, ref, rtols):
    from scipy.integrate import solve_ivp

    params, static = eqx.partition(net, eqx.is_inexact_array)
    x0, unravel = jax.flatten_util.ravel_pytree(params)
    scale = float(jnp.max(jnp.abs(x0)))
    field = jax.jit(
        lambda x: jax.flatten_util.ravel_pytree(
            flow.vector_field(0.0, unravel(x), static)
        )[0]
    )
    field(x0).block_until_ready()
    rows = []
    for method in ("DOP853", "RK45"):
        for rtol in rtols:
            start = time.perf_counter()
            sol = solve_ivp(
                lambda t, x: np.asarray(field(jnp.asarray(x))), (0.0, T),
                np.asarray(x0), method=method, rtol=rtol, atol=rtol * scale,
                t_eval=[T],  # else it keeps every step's state (GBs on MNIST)
            )  # fmt: skip
            sec = time.perf_counter() - start
            rows.append([
                f"scipy {method}", f"{rtol:.0e}", f"{rel(sol.y[:, -1], ref):.2e}",
                sol.nfev, sol.status, f"{sec:.3f}",
            ])  # fmt: skip
    return rows


def torch_section(flow, net, T, ref, rtols, lrs):
    try:
        import torch
    except ImportError:
        return None
    torch.set_default_dtype(torch.float64)
    X = torch.tensor(np.asarray(flow.data.X))
    y = torch.tensor(np.asarray(flow.data.y))
    W0 = torch.tensor(np.asarray(net.W))
    v0 = torch.tensor(np.asarray(net.v))
    b0 = None if net.b is None else torch.tensor(np.asarray(net.b))
    exponential = isinstance(flow.loss, jf.losses.Exponential)

    def loss(W, v, b):
        z = X @ W.T + (0 if b is None else b)
        pred = torch.relu(z) @ v
        if exponential:
            return torch.exp(-y * pred).mean()
        return ((pred - y) ** 2).mean()

    def unpack(flat_params):
        h, d = W0.shape
        W = flat_params[: h * d].reshape(h, d)
        v = flat_params[h * d : h * d + h]
        b = None if b0 is None else flat_params[h * d + h :]
        return W, v, b

    def grad(flat_params):
        p = flat_params.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(loss(*unpack(p)), p)
        return g

    # The same flat layout as jaxflow's (the fields in order: W, v, b).
    parts = [W0.reshape(-1), v0] + ([] if b0 is None else [b0])
    p0 = torch.cat(parts)
    rows = []
    for lr in lrs:
        steps = int(round(T / lr))
        p = p0.clone()
        start = time.perf_counter()
        for _ in range(steps):
            p = p - lr * grad(p)
        sec = time.perf_counter() - start
        rows.append([f"torch GD lr={lr:g}", "-", f"{rel(p.numpy(), ref):.2e}",
                     steps, "-", f"{sec:.3f}"])  # fmt: skip
    try:
        from torchdiffeq import odeint
    except ImportError:
        return rows
    for rtol in rtols:
        count = [0]

        def f(t, p):
            count[0] += 1
            return -grad(p)

        start = time.perf_counter()
        out = odeint(f, p0, torch.tensor([0.0, T]), method="dopri5", rtol=rtol,
                     atol=rtol * float(p0.abs().max()))  # fmt: skip
        sec = time.perf_counter() - start
        rows.append([
            "torchdiffeq dopri5", f"{rtol:.0e}", f"{rel(out[-1].numpy(), ref):.2e}",
            count[0], "-", f"{sec:.3f}",
        ])  # fmt: skip
    return rows


# Dense peak FLOP/s of the device kinds named here (vendor data sheets, SXM boards):
# (float64, with tensor cores where they do float64; float32 without TF32).
PEAKS = {"H200": (67e12, 67e12), "H100": (67e12, 67e12), "A100": (19.5e12, 19.5e12)}


def cast(tree, dtype):
    """`tree` with its floating-point arrays in `dtype`."""
    return jax.tree.map(
        lambda x: x.astype(dtype) if eqx.is_inexact_array(x) else x, tree
    )


def flops_section(flow, net, reps=20):
    """Achieved FLOP/s of the vector field (one gradient, `flow.vector_field`) in
    float64 and in float32 with TF32 off (`jax.default_matmul_precision("highest")`),
    against the device's peak where `PEAKS` knows it. FLOPs from XLA's cost analysis of
    the compiled field."""
    kind = jax.devices()[0].device_kind
    peak = next((p for name, p in PEAKS.items() if name in kind), None)
    rows = []
    for i, dtype in enumerate((jnp.float64, jnp.float32)):
        params, static = eqx.partition(cast(net, dtype), eqx.is_inexact_array)
        field = cast(flow, dtype)
        with jax.default_matmul_precision("highest"):
            compiled = (
                jax.jit(lambda p, f=field: f.vector_field(0.0, p, static))
                .lower(params)
                .compile()
            )
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        flops = float(cost.get("flops", float("nan")))
        jax.block_until_ready(compiled(params))
        best = min(timed(lambda: compiled(params))[1] for _ in range(reps))
        rate = flops / best
        rows.append([
            jnp.dtype(dtype).name, f"{flops:.3g}", f"{best * 1e3:.3f}",
            f"{rate / 1e9:.3g}",
            f"{rate / peak[i]:.2%} of {peak[i] / 1e12:g} TFLOP/s" if peak else
            "peak unknown for this device",
        ])  # fmt: skip
    header = ["dtype", "FLOPs per field", "ms per field (best)", "GFLOP/s",
              "of peak"]  # fmt: skip
    return f"Device: {kind}.\n\n" + table(header, rows)


def first_solve(flow, net, t1, **options):
    """Seconds for a first `jf.solve` in the process (compile and run; default metrics,
    saved at `t1`), and for the same solve once compiled."""
    run = lambda: jf.solve(flow, net, t1=t1, ts=jnp.array([t1]), **options).final  # noqa: E731
    start = time.perf_counter()
    jax.block_until_ready(run())
    first = time.perf_counter() - start
    _, again = timed(run)
    return first, again


def ensemble_section(flow, net_fn, sizes, t1):
    """Seeds per second against the batch size (one vmapped chunk each), kinks="plain"
    as in the throughput study: with min-norm kinks every seed's crossings (about
    4,700 in t <= 1 here, one cut step each) stop the whole batch."""
    net = net_fn(jax.random.key(0))
    first = {kinks: first_solve(flow, net, t1, kinks=kinks)
             for kinks in ("plain", "min-norm")}  # fmt: skip
    header = ["seeds", "seeds/s", "wall s", "compile s", "steps (max)", "statuses"]
    print(table(header, []), flush=True)
    for size in sizes:
        keys = jax.random.split(jax.random.key(1), size)
        run = lambda: jf.solve_ensemble(  # noqa: E731
            flow, net_fn, keys, t1=t1, ts=jnp.array([t1]), batch_size=size,
            segments=1, metrics={"loss": jf.metrics.loss}, kinks="plain",
            processes=1,
        )  # fmt: skip
        start = time.perf_counter()
        jax.block_until_ready(run().final)
        compiled = time.perf_counter() - start
        start = time.perf_counter()
        ens = run()
        jax.block_until_ready(ens.final)
        sec = time.perf_counter() - start
        steps = np.asarray(ens.stats["num_steps"])
        row = [size, f"{size / sec:.1f}", f"{sec:.2f}", f"{compiled - sec:.1f}",
               int(steps.max()), ", ".join(sorted(set(map(str, ens.status_name))))]  # fmt: skip
        print(table(header, [row]).splitlines()[-1], flush=True)
    return "\n" + "\n".join(
        f"First solve (one seed, jaxflow.solve, kinks={kinks!r}, default metrics), "
        f"compile and run: {a:.1f} s; the same solve once compiled: {b:.2f} s."
        for kinks, (a, b) in first.items()
    )


def equal_error_ratio(error, seconds, points) -> str:
    """`seconds` over the wall time of the fastest jaxflow run (`points`: (error,
    seconds, ...)) at least as accurate as `error`; "-" where none is."""
    times = [sec for err, sec, *_ in points if err <= error]
    return f"{seconds / min(times):.3g}" if times else "-"


def plot(points, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4), layout="constrained")
    for name, pts in points.items():
        err, sec, *_ = zip(*pts)
        ax.loglog(sec, err, "o-", label=name)
    ax.set(xlabel="wall time (s)", ylabel="relative error at T", title=title)
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # MNIST (ii) only when asked: its min-norm solves locate every significant one of
    # about 10,000 crossings at n = 500 (3 min a solve on a 2-core CPU); at the full
    # n = 2000 a step costs about 100 ms there, and a Tsit5 solve had not reached
    # t = 1 after 15 min.
    parser.add_argument("--problems", nargs="+", default=["separable", "bf"],
                        choices=["separable", "mnist", "bf"])  # fmt: skip
    parser.add_argument("--sections", nargs="+",
                        default=["solvers", "overhead", "gd", "peers", "ensemble",
                                 "flops"],
                        choices=["solvers", "overhead", "gd", "peers", "ensemble",
                                 "flops"])  # fmt: skip
    parser.add_argument("--solvers", nargs="+", default=list(SOLVERS),
                        choices=list(SOLVERS))  # fmt: skip
    parser.add_argument("--figures", type=Path, default=HERE,
                        help="where the work-precision plots go (benchmarks/)")  # fmt: skip
    parser.add_argument("--size", default="full", choices=["full", "small", "tiny"])
    parser.add_argument("--T", type=float, default=None, help="horizon (1e3)")
    parser.add_argument("--rtols", type=float, nargs="+",
                        default=[1e-4, 1e-6, 1e-8, 1e-10])  # fmt: skip
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-2, 1e-3])
    parser.add_argument("--batches", type=int, nargs="+",
                        default=[1, 16, 64, 256, 1024])  # fmt: skip
    args = parser.parse_args()
    tiny = args.size == "tiny"
    T = args.T if args.T is not None else (10.0 if tiny else 1e3)
    rtols = [1e-4, 1e-8] if tiny else args.rtols
    lrs = [1e-1, 1e-2] if tiny else args.lrs
    batches = [1, 4] if tiny else args.batches
    device = jax.devices()[0]
    print(
        f"# jaxflow performance suite: {platform.machine()}, {device.platform} "
        f"({device.device_kind}), {os.cpu_count()} cores, jax {jax.__version__}, "
        f"jaxflow {jf.__version__}, float64; T = {T:g}, size {args.size}"
    )
    if device.platform == "cpu":
        print("# no GPU on this machine: GPU rows are not measured here.")
    for name in args.problems:
        try:
            flow, net, text = problem(name, args.size)
        except FileNotFoundError as e:
            print(f"\n## {name}: skipped ({str(e).split('. ')[0]})")
            continue
        # The reference: on data where no pair slides (separable, MNIST) the plain
        # flow is the min-norm flow, and plain Dopri8 at rtol 1e-13 (crossings
        # resolved by rejected steps) does not use the code it checks; on the
        # Boursier-Flammarion data pairs slide, and it is the min-norm solve.
        kinks = "min-norm" if name == "bf" else "plain"
        ref_sol = jf.solve(
            flow, net, t1=T, ts=jnp.array([T]), rtol=1e-13, solver=dfx.Dopri8(),
            metrics={}, max_steps=10**7, kinks=kinks,
        )  # fmt: skip
        ref = flat(ref_sol.final)
        print(f"\n## {name}: {text}, T = {T:g}")
        print(
            f"Reference: Dopri8 rtol 1e-13, kinks={kinks!r}, "
            f"{int(ref_sol.stats['num_accepted_steps'])} steps, status "
            f"{ref_sol.status_name}."
        )
        points = {}
        if "solvers" in args.sections:
            print("\n### Solvers (jaxflow.solve; work-precision)\n")
            points = solvers_section(flow, net, T, ref, rtols, args.solvers)
            plot(points, args.figures / f"work_precision_{name}.png",
                 f"{name}, T={T:g}")  # fmt: skip
        if "overhead" in args.sections and name != "bf":
            print("\n### jaxflow against a bare diffrax.diffeqsolve (Tsit5)\n")
            print(overhead_section(flow, net, T, rtols[:3]), flush=True)
        # What GD and the peers must match: Tsit5 at rtol 1e-8 (from the solvers
        # section when it ran it).
        done = [p for p in points.get("Tsit5", []) if p[3] == 1e-8]
        if done:
            target = (done[0][0], done[0][2], done[0][1])
        elif {"gd", "peers"} & set(args.sections):
            target_sol, target_s = timed_solve(flow, net, T, rtol=1e-8)
            target = (
                rel(flat(target_sol.final), ref),
                int(target_sol.stats["num_vf_evals"]),
                target_s,
            )
        if "gd" in args.sections:
            print("\n### Gradient descent in JAX\n")
            print(gd_section(flow, net, T, ref, lrs, target), flush=True)
        if "peers" in args.sections and name != "bf":
            print("\n### Peers at matched error (same vector field, float64)\n")
            # The default mode (min-norm kinks, Tsit5) across tolerances: each peer
            # run is compared with the fastest of these at least as accurate.
            ours = [p for p in points.get("Tsit5", []) if p[3] in PEER_RTOLS]
            for rtol in PEER_RTOLS:
                if not any(p[3] == rtol for p in ours):
                    sol, sec = timed_solve(flow, net, T, rtol=rtol)
                    ours.append((rel(flat(sol.final), ref), sec,
                                 int(sol.stats["num_vf_evals"]), rtol))  # fmt: skip
            rows = [
                ["jaxflow Tsit5 (default)", f"{rtol:.0e}", f"{err:.2e}", evals, "-",
                 f"{sec:.3f}"]
                for err, sec, evals, rtol in sorted(ours, key=lambda p: -p[3])
            ]  # fmt: skip
            for lr in lrs[:1]:
                steps = int(round(T / lr))
                sol, sec = timed(lambda: jf.gradient_descent(
                    flow, net, lr=lr, steps=steps, ts=jnp.array([T]), metrics={}))  # fmt: skip
                rows.append([f"JAX GD (lax.scan) lr={lr:g}", "-",
                             f"{rel(flat(sol.final), ref):.2e}", steps, "-",
                             f"{sec:.3f}"])  # fmt: skip
            rows += scipy_section(flow, net, T, ref, [1e-8] if not tiny else rtols)
            torch_rows = torch_section(flow, net, T, ref, [1e-8], lrs[:1])
            if torch_rows is None:
                print("(torch not installed: PyTorch GD and torchdiffeq skipped)\n")
            else:
                rows += torch_rows
            for row in rows:
                mine = row[0].startswith("jaxflow")
                row.append("-" if mine else equal_error_ratio(float(row[2]),
                                                              float(row[5]), ours))  # fmt: skip
            print(table(["method", "rtol", "rel. error at T", "grad evals", "status",
                         "wall s", "its time / fastest default run as accurate"],
                        rows), flush=True)  # fmt: skip
            print("\nTargets: GD (JAX, PyTorch) >= 30x, torchdiffeq dopri5 "
                  "rtol 1e-8 >= 3x, scipy DOP853 rtol 1e-8 >= 10x.")  # fmt: skip
        if "ensemble" in args.sections and name in ("separable", "mnist"):
            print("\n### Ensembles: seeds per second (t1 = 0.1, rtol 1e-8, plain)\n")
            d, width = net.W.shape[1], net.W.shape[0]
            init = {"init": "gaussian"} if name == "mnist" else {}
            print(ensemble_section(
                flow,
                lambda k: jf.models.TwoLayerReLU(d, width, scale=1e-6, key=k, **init),
                batches, 0.1,
            ), flush=True)  # fmt: skip
        if "flops" in args.sections:
            print("\n### Vector field FLOP/s\n")
            print(flops_section(flow, net), flush=True)


if __name__ == "__main__":
    main()
