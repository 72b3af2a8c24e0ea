"""Single ReLU neurons at width m: the population flow of a two-layer ReLU net against
one teacher neuron, over the width and the initialisation scale (the multi-neuron
extension of Lee, Sim and Ye's study, arXiv 2209.13394).

    python benchmarks/neuron_width.py                  # m 1 2 8 32 x scale 1e-4..1, 8 seeds
    python benchmarks/neuron_width.py --quick          # m 1 8 x scale 1e-3 1, 4 seeds
    python benchmarks/neuron_width.py --widths 2 128 --scales 1e-2 --seeds 16 --t1 1e5
    python benchmarks/neuron_width.py --signs positive # every output weight v_j > 0

Teacher y = relu(<v*, x>), ||v*|| = 1 (one fixed random direction), x ~ N(0, I_10);
student f(x) = sum_j v_j relu(<w_j, x>), `jf.models.TwoLayerReLU(10, m, scale=s)`
without bias: balanced init with fan "in", w_j ~ N(0, s^2/d I), so ||w_j(0)|| ~ s,
and v_j = +-||w_j(0)|| with a random sign (the model's default; `--signs positive`
takes |v_j|). Neuron j's function is v_j relu(<w_j, x>), of effective scale
|v_j| ||w_j|| ~ s^2: at m = 1 and v > 0 it is the depth-2 single neuron of
`jaxflow neuron` at the same scale (there ||w_1|| = a = s exactly).

Exact gradient flow of the population loss (`jf.losses.population`, closed-form
arc-cosine kernel, no sampling), `jf.solve_ensemble`, rtol 1e-10, to t = --t1 (default
1e4) with no terminal event, so every seed ends at the same time. Recorded: the first
time the loss is below 1e-6, and per neuron the first time its angle
theta_j = angle(w_j, v*) is below 1e-3 (both events located on the dense output).
The "best" neuron of a seed is, at t1, the v_j > 0 neuron with the largest v_j ||w_j||
(seeds without a v_j > 0 neuron cannot learn the teacher and are left out of the
best-neuron columns). The balance drift is max_j |v_j^2 - ||w_j||^2| / max_j (v_j^2 +
||w_j||^2) over the saved times: `jf.metrics.ConservedDrift` with c_j(0) = 0, which the
balanced init gives to rounding (its value at t = 0 is printed).

A consistency check: at m = 1 with v > 0 the flow of `TwoLayerReLU` against the reduced
magnitude-angle ODEs of a depth-2 neuron, `jf.experiments.magnitude_angle(2, ...)`.
The figure `neuron_width.png` beside this script (`--figures DIR` elsewhere) shows
the time to loss 1e-6 against the scale per width, and the best neuron's angle over
time at one scale (`--angle-scale`).
"""

import argparse
import os
import platform
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import jaxflow as jf


HERE = Path(__file__).resolve().parent
D = 10
LOSS_LEVEL, ANGLE_LEVEL = 1e-6, 1e-3


def _angles(W, v):
    """Angle of each row of `W` with `v`, from chord lengths (accurate near 0, pi)."""
    uw = W / jnp.linalg.norm(W, axis=1, keepdims=True)
    uv = v / jnp.linalg.norm(v)
    chord = jnp.linalg.norm(uw - uv, axis=1), jnp.linalg.norm(uw + uv, axis=1)
    return 2 * jnp.arctan2(*chord)


def theta(model, flow):
    """Per neuron, theta_j = angle(w_j, v*)."""
    return _angles(model.W, flow.data.teacher.end_to_end())


def effective(model, flow):
    """Per neuron, v_j ||w_j|| (signed: its sign is v_j's)."""
    del flow
    return model.v * jnp.linalg.norm(model.W, axis=1)


def balance_drift(model, flow):
    """max_j |v_j^2 - ||w_j||^2| / max_j (v_j^2 + ||w_j||^2): the conserved quantities'
    drift from their balanced start c_j(0) = 0."""
    del flow
    inc, out = jnp.sum(model.W**2, axis=1), model.v**2
    return jnp.max(jnp.abs(out - inc)) / jnp.max(inc + out)


METRICS = {"loss": jf.metrics.loss, "theta": theta, "effective": effective,
           "drift": balance_drift}  # fmt: skip


class NeuronAligned(jf.events.AbstractEvent):
    """Per neuron, the first time theta_j < `level`: value log(theta_j / level)."""

    level: float = eqx.field(default=1e-3, static=True)
    terminal: bool = eqx.field(default=False, static=True)

    def __call__(self, t, model, flow, reference):
        del t, reference
        tiny = jnp.finfo(model.W.dtype).tiny
        return jnp.log(jnp.maximum(theta(model, flow), tiny) / self.level)


def make_init(width, scale, signs):
    def init(key):
        net = jf.models.TwoLayerReLU(D, width, scale=scale, key=key)
        if signs == "positive":
            net = eqx.tree_at(lambda n: n.v, net, jnp.abs(net.v))
        return net

    return init


def cell(flow, width, scale, seeds, t1, rtol, signs, ts):
    keys = jax.random.split(jax.random.key(1000 * width + int(-np.log10(scale))), seeds)
    init = make_init(width, scale, signs)
    start = time.perf_counter()
    ens = jf.solve_ensemble(
        flow, init, keys, t1=t1, ts=ts, rtol=rtol, metrics=METRICS,
        events={"loss": jf.events.LossBelow(LOSS_LEVEL, terminal=False),
                "aligned": NeuronAligned(ANGLE_LEVEL)},
        batch_size=seeds, max_steps=1_000_000,
    )  # fmt: skip
    wall = time.perf_counter() - start
    drift0 = max(float(balance_drift(init(k), flow)) for k in keys)
    return ens, wall, drift0


def _median(x):
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    return float(np.median(x)) if x.size else np.nan


def summarise(ens, width, scale, wall, drift0):
    eff = np.asarray(ens.metrics["effective"])[:, -1]  # (seeds, m) at t1
    th = np.asarray(ens.metrics["theta"])[:, -1]
    aligned_t = np.asarray(ens.event_times["aligned"]).reshape(eff.shape)
    pos = eff > 0
    has = pos.any(axis=1)
    best = np.argmax(np.where(pos, eff, -np.inf), axis=1)
    rows = np.arange(eff.shape[0])
    neg = np.where(~pos, -eff, 0.0).max(axis=1, initial=0.0)
    loss_t = np.asarray(ens.event_times["loss"]).reshape(-1)
    return {
        "m": width, "scale": scale, "seeds": eff.shape[0],
        "reached": int(np.isfinite(loss_t).sum()), "loss_time": _median(loss_t),
        "loss_time_all": loss_t,
        "final_loss": np.asarray(ens.metrics["loss"])[:, -1],
        "with_pos": int(has.sum()),
        "best_eff": eff[rows, best][has], "best_theta": th[rows, best][has],
        "best_angle_time": aligned_t[rows, best][has],
        "first_angle_time": np.nanmin(
            np.where(pos, aligned_t, np.inf), axis=1, initial=np.inf
        )[has],
        "n_aligned": ((th < ANGLE_LEVEL) & pos).sum(axis=1),
        "pos_sum": np.where(pos, eff, 0.0).sum(axis=1),
        "neg_max": neg, "any_neg": (~pos).any(axis=1),
        "statuses": sorted({str(s) for s in ens.status_name}),
        "steps": (int(np.max(ens.stats["num_accepted_steps"])),
                  int(np.max(ens.stats["num_rejected_steps"]))),
        "drift": float(np.nanmax(np.asarray(ens.metrics["drift"]))), "drift0": drift0,
        "wall": wall,
        "best_theta_path": _best_paths(ens, best, has),
    }  # fmt: skip


def _best_paths(ens, best, has):
    """theta(t) of each seed's best neuron (seeds with a v_j > 0 neuron)."""
    th = np.asarray(ens.metrics["theta"])  # (seeds, times, m)
    return th[np.arange(th.shape[0]), :, best][has]


def _g(x, fmt=".4g"):
    return "-" if not np.isfinite(x) else format(x, fmt)


def _range(x, fmt=".3g"):
    x = np.asarray(x, float)
    if not x.size:
        return "-"
    return f"{_g(np.median(x), fmt)} [{_g(x.min(), fmt)}, {_g(x.max(), fmt)}]"


def table_head(t1, rtol, signs):
    print(
        f"Per width m and init scale s: time to loss < {LOSS_LEVEL:g} (median over "
        f"the seeds that reached it; reached/seeds), and at t1 = {t1:g}: the loss, and "
        "the neurons. Init: ||w_j(0)|| ~ s per neuron (fan 'in'), |v_j(0)| = "
        "||w_j(0)||, so the effective scale |v_j| ||w_j|| of neuron j's function is "
        f"~ s^2; output signs {'all positive' if signs == 'positive' else 'random +-'}"
        f". 'best': the v_j > 0 neuron with the largest v_j ||w_j|| at t1, "
        f"its angle phi = pi - theta to the teacher, and the first time its theta < "
        f"{ANGLE_LEVEL:g} (medians over the seeds with a v_j > 0 neuron, 'pos "
        f"seeds'); 'first theta time': the first time any v_j > 0 neuron has theta < "
        f"{ANGLE_LEVEL:g}. 'aligned': v_j > 0 neurons with theta < {ANGLE_LEVEL:g}. "
        "Per-seed columns: median [min, max] over seeds. rtol "
        f"{rtol:g}; drift: the balance drift, max over saved times and seeds.\n"
    )
    head = (
        "| m | s | loss time (median) | reached | final loss | pos seeds | best v‖w‖ "
        "| best phi | best theta time | first theta time | aligned | sum over v_j>0 of v_j‖w_j‖ | max over "
        "v_j<0 of −v_j‖w_j‖ | statuses | steps acc/rej (max) | drift (max) | wall s |"
    )
    print(head)
    print("|---" * (head.count("|") - 1) + "|", flush=True)


def table_row(r):
    neg = r["neg_max"][r["any_neg"]]
    print(
        f"| {r['m']} | {r['scale']:g} | {_g(r['loss_time'])} | "
        f"{r['reached']}/{r['seeds']} | {_range(r['final_loss'], '.2e')} | "
        f"{r['with_pos']} | {_range(r['best_eff'], '.6f')} | "
        f"pi - {_g(_median(r['best_theta']), '.2e')} | "
        f"{_g(_median(r['best_angle_time']))} | "
        f"{_g(_median(r['first_angle_time']))} | "
        f"{_range(r['n_aligned'], 'g')} | {_range(r['pos_sum'], '.6f')} | "
        f"{_range(neg, '.2e')} | {', '.join(r['statuses'])} | "
        f"{r['steps'][0]}/{r['steps'][1]} | {r['drift']:.1e} | {r['wall']:.1f} |",
        flush=True,
    )


def fit_slope(x, y):
    """Least-squares slope of log y against log x over the finite y."""
    x, y = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    ok = np.isfinite(y)
    return float(np.polyfit(x[ok], y[ok], 1)[0]) if ok.sum() >= 2 else np.nan


def slopes(results, widths, scales, small=1e-2):
    print(
        "\nSlope of log(median time to loss < 1e-6) against log(scale), per m, over "
        f"all scales and over s <= {small:g} (single neuron, benchmarks/RESULTS.md: "
        "depth 2 -0.062, depth 1 +0.014):\n"
    )
    print(f"| m | slope | slope, s <= {small:g} | median loss times, scale " + " / ".join(
        f"{s:g}" for s in scales) + " |")  # fmt: skip
    print("|---|---|---|---|")
    out = {}
    for m in widths:
        times = np.array([r["loss_time"] for r in results if r["m"] == m])
        out[m] = fit_slope(scales, times)
        low = np.asarray(scales) <= small
        slope_small = fit_slope(np.asarray(scales)[low], times[low])
        print(
            f"| {m} | {out[m]:+.3f} | {slope_small:+.3f} | "
            f"{' / '.join(_g(t) for t in times)} |"
        )
    return out


def consistency(flow, scales, rtol=1e-12):
    """m = 1, v > 0: `TwoLayerReLU`'s flow against the depth-2 magnitude-angle ODEs."""
    ts = jnp.array([0.5, 2.0, 10.0, 30.0, 100.0])
    print(
        "\nConsistency: m = 1 with v > 0 forced, population flow of TwoLayerReLU "
        f"(rtol {rtol:g}) against jf.experiments.magnitude_angle(depth=2) (reduced ODEs, "
        f"Dopri8, rtol {rtol:g}) at t = {', '.join(f'{t:g}' for t in ts)}; relative "
        "differences, max over those times:\n"
    )
    print("| s | v‖w‖ at t | phi at t | rel diff v‖w‖ | rel diff phi |")
    print("|---|---|---|---|---|")
    worst = 0.0
    for s in scales:
        net = make_init(1, s, "positive")(jax.random.key(7))
        sol = jf.solve(
            flow, net, t1=float(ts[-1]), ts=ts, rtol=rtol,
            metrics={"effective": effective, "theta": theta},
        )  # fmt: skip
        r_full = np.asarray(sol.metrics["effective"])[:, 0]
        phi_full = np.pi - np.asarray(sol.metrics["theta"])[:, 0]
        r, phi = jf.experiments.magnitude_angle(
            2, float(effective(net, flow)[0]), float(np.pi - theta(net, flow)[0]), ts,
            rtol=rtol,
        )  # fmt: skip
        dr = float(np.max(np.abs(r_full - r) / np.abs(r)))
        dphi = float(np.max(np.abs(phi_full - phi) / np.abs(phi)))
        worst = max(worst, dr, dphi)
        print(
            f"| {s:g} | {' / '.join(f'{x:.6g}' for x in r_full)} | "
            f"{' / '.join(f'{x:.6g}' for x in phi_full)} | {dr:.1e} | {dphi:.1e} |"
        )
    print(f"\nlargest relative difference: {worst:.1e} ({sol.status_name})")
    return worst


def figure(results, widths, scales, slope, angle_scale, ts, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    for m in widths:
        rows = [r for r in results if r["m"] == m]
        (line,) = a.loglog(
            [r["scale"] for r in rows], [r["loss_time"] for r in rows], "o-",
            label=f"m={m} (slope {slope[m]:+.2f})",
        )  # fmt: skip
        for r in rows:
            t = r["loss_time_all"]
            a.plot([r["scale"]] * len(t), t, ".", color=line.get_color(), alpha=0.3)
        row = next((r for r in rows if r["scale"] == angle_scale), None)
        if row is not None and len(row["best_theta_path"]):
            p = np.maximum(row["best_theta_path"], 1e-17)
            b.loglog(ts, np.median(p, axis=0), color=line.get_color(), label=f"m={m}")
            b.fill_between(ts, p.min(axis=0), p.max(axis=0), color=line.get_color(),
                           alpha=0.15)  # fmt: skip
    a.set(xlabel="init scale s (||w_j(0)|| ~ s)", ylabel=f"time to loss < {LOSS_LEVEL:g}",
          title="median over seeds (dots: each seed)")  # fmt: skip
    a.legend(fontsize=8)
    b.axhline(ANGLE_LEVEL, color="k", lw=0.5, ls="--")
    b.set(xlabel="t", ylabel="theta of the best v_j > 0 neuron",
          title=f"s = {angle_scale:g}: median, min-max over seeds")  # fmt: skip
    b.legend(fontsize=8)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--widths", type=int, nargs="*", default=[1, 2, 8, 32])
    parser.add_argument(
        "--scales", type=float, nargs="*", default=[1e-4, 1e-3, 1e-2, 1e-1, 1.0]
    )
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--t1", type=float, default=1e4)
    parser.add_argument("--rtol", type=float, default=1e-10)
    parser.add_argument("--signs", choices=("random", "positive"), default="random")
    parser.add_argument("--angle-scale", type=float, default=1e-2)
    parser.add_argument("--figures", type=Path, default=HERE)
    args = parser.parse_args()
    if args.quick:
        args.widths, args.scales, args.seeds = [1, 8], [1e-3, 1.0], 4
    device = jax.devices()[0]
    print(
        f"# jaxflow single neurons at width m: {platform.machine()}, {device.platform}, "
        f"{os.cpu_count()} cores, jax {jax.__version__}, jaxflow {jf.__version__}\n"
    )
    flow = jf.experiments.teacher_flow(jax.random.key(0), D)
    ts = jnp.geomspace(1e-3, args.t1, 200)
    start = time.perf_counter()
    table_head(args.t1, args.rtol, args.signs)
    results = []
    for m in args.widths:
        for s in args.scales:
            ens, wall, drift0 = cell(
                flow, m, s, args.seeds, args.t1, args.rtol, args.signs, ts
            )
            results.append(summarise(ens, m, s, wall, drift0))
            table_row(results[-1])
        jax.clear_caches()
    print(
        "\nbalance drift at t = 0 (rounding of the balanced init), max over cells: "
        f"{max(r['drift0'] for r in results):.1e}"
    )
    slope = slopes(results, args.widths, args.scales)
    consistency(flow, args.scales)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    args.figures.mkdir(parents=True, exist_ok=True)
    path = figure(
        results, args.widths, args.scales, slope, args.angle_scale, np.asarray(ts),
        args.figures / "neuron_width.png",
    )  # fmt: skip
    print(f"figure: {path}")


if __name__ == "__main__":
    main()
