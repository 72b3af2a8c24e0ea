r"""Lee, Sim and Ye: magnitude and angle dynamics of single ReLU neurons.

A `NeuronChain` student of depth $L$ learns a single-neuron teacher $y = \sigma(\langle
v, x\rangle)$ on Gaussian inputs, under the exact population loss. With balanced
positive weights the flow reduces to two ODEs for the end-to-end magnitude $\|u\|$ and
the angle $\varphi = \pi - \theta$ to the teacher (our derivation, in the setting of
Lee, Sim and Ye, arXiv 2209.13394):

$$\frac{d\|u\|}{dt} = L\|u\|^{2-2/L}\Big[\frac{\|v\|(\sin\varphi - \varphi\cos\varphi)}
{2\pi} - \frac{\|u\|}{2}\Big], \qquad
\frac{d\varphi}{dt} = \|u\|^{1-2/L}\,\frac{\|v\|\,\varphi\sin\varphi}{2\pi}.$$
"""

import math

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .. import events as jf_events, metrics as jf_metrics
from .._ensemble import solve_ensemble
from .._flow import GradientFlow
from .._gd import gradient_descent
from .._polish import flat
from .._solve import solve
from ..datasets import GaussianTeacher
from ..losses import half_square, population
from ..models import NeuronChain


def magnitude_angle_field(depth: int, teacher_norm: float = 1.0):
    r"""The right-hand side $(t, (\|u\|, \varphi)) \mapsto (\dot{\|u\|}, \dot\varphi)$
    of the reduced flow of a balanced depth-`depth` chain."""

    def field(t, y, args):
        del t, args
        r, phi = y
        drive = teacher_norm * (jnp.sin(phi) - phi * jnp.cos(phi)) / (2 * jnp.pi)
        dr = depth * r ** (2 - 2 / depth) * (drive - r / 2)
        dphi = r ** (1 - 2 / depth) * teacher_norm * phi * jnp.sin(phi) / (2 * jnp.pi)
        return jnp.stack([dr, dphi])

    return field


def magnitude_angle(
    depth: int,
    magnitude0: float,
    phi0: float,
    ts: Float[Array, " times"],
    *,
    teacher_norm: float = 1.0,
    rtol: float = 1e-12,
) -> tuple[np.ndarray, np.ndarray]:
    r"""$\|u\|$ and $\varphi$ at `ts` from the reduced ODEs (diffrax Dopri8, tolerance
    `rtol`), starting at $t = 0$."""
    ts = jnp.asarray(ts, float)
    sol = dfx.diffeqsolve(
        dfx.ODETerm(magnitude_angle_field(depth, teacher_norm)),
        dfx.Dopri8(),
        t0=0.0,
        t1=float(ts[-1]),
        dt0=None,
        y0=jnp.array([magnitude0, phi0], float),
        saveat=dfx.SaveAt(ts=ts),
        stepsize_controller=dfx.PIDController(rtol=rtol, atol=rtol * 1e-3),
        max_steps=1_000_000,
    )
    return np.asarray(sol.ys[:, 0]), np.asarray(sol.ys[:, 1])


class _Reached(jf_events.AbstractEvent):
    """Loss below `loss_level` and teacher angle below `angle_level`: two components,
    terminal once both happened."""

    loss_level: float = eqx.field(static=True)
    angle_level: float = eqx.field(static=True)
    terminal: bool = eqx.field(default=True, static=True)

    def __call__(self, t, model, flow, reference):
        del t, reference
        theta = jnp.pi - jf_metrics.teacher_angle(model, flow)
        tiny = jnp.finfo(theta.dtype).tiny
        return jnp.stack(
            [
                jnp.log(jnp.maximum(flow(model), tiny) / self.loss_level),
                jnp.log(jnp.maximum(theta, tiny) / self.angle_level),
            ]
        )


def teacher_flow(key, d: int) -> GradientFlow:
    """The population flow for a unit-norm single-neuron teacher in a random direction
    drawn from `key`."""
    return GradientFlow(population, GaussianTeacher(NeuronChain(d, 1, key=key)))


def convergence_times(
    depth: int,
    scale: float,
    keys,
    *,
    d: int = 10,
    t1: float | None = None,
    loss_level: float = 1e-6,
    angle_level: float = 1e-3,
    rtol: float = 1e-10,
    ts=None,
):
    r"""Solve the population flow of a balanced depth-`depth` chain, initial scale
    `scale` ($\|w_1\| = a_l = $ scale), against a random unit teacher per key, until
    the loss is below `loss_level` and the teacher angle $\theta$ below `angle_level`.

    Returns the `jaxflow.Ensemble`; its `event_times["reached"]` has shape `(seeds, 2)`:
    the loss time and the angle time. `t1` defaults to a horizon well past the
    escape from a small initialisation, $10^3 / \|u(0)\|^{1 - 2/L}$ for $L \ge 3$.
    """
    if t1 is None:
        escape = scale ** -(depth - 2) if depth >= 3 else 1.0
        t1 = 1e3 * escape
    ts = jnp.geomspace(1e-3, t1, 40) if ts is None else ts
    return solve_ensemble(
        lambda k: teacher_flow(k, d),
        lambda k: NeuronChain(d, depth, scale=scale, key=k),
        keys,
        t1=t1,
        ts=ts,
        rtol=rtol,
        events={"reached": _Reached(loss_level, angle_level)},
        metrics={
            "loss": jf_metrics.loss,
            "magnitude": jf_metrics.magnitude,
            "phi": jf_metrics.teacher_angle,
        },
        batch_size=len(keys),
        max_steps=1_000_000,
    )


def fit_slope(x, y) -> float:
    r"""The least-squares slope of $\log y$ against $\log x$ (`nan` where fewer than
    two $y$ are finite), e.g. median times against the initial scale."""
    x, y = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    ok = np.isfinite(y)
    if ok.sum() < 2:
        return math.nan
    return float(np.polyfit(x[ok], y[ok], 1)[0])


_QUARTILES = (0.25, 0.5, 0.75)


def neuron_summary(results: dict, scales, loss_level, angle_level) -> dict:
    """Per depth: the median (and quartiles) of the loss and angle times at each scale,
    the fitted slopes of log time against log scale, and the accuracy evidence."""
    out = {"loss_level": loss_level, "angle_level": angle_level, "depths": {}}
    for depth, per_scale in results.items():
        rows = []
        for scale, ens in zip(scales, per_scale):
            times = np.asarray(ens.event_times["reached"])
            row = {"scale": float(scale), "seeds": int(ens.num_seeds)}
            for k, name in enumerate(("loss", "angle")):
                t = times[:, k]
                done = np.isfinite(t)
                row[f"{name}_reached"] = int(done.sum())
                q = np.quantile(t[done], _QUARTILES) if done.any() else [np.nan] * 3
                for label, x in zip(("q25", "median", "q75"), q):
                    row[f"{name}_time_{label}"] = float(x)
            row["statuses"] = sorted({str(s) for s in ens.status_name})
            row["steps_accepted_max"] = int(np.max(ens.stats["num_accepted_steps"]))
            row["steps_rejected_max"] = int(np.max(ens.stats["num_rejected_steps"]))
            rows.append(row)
        out["depths"][str(depth)] = {
            "rows": rows,
            "slope_loss": fit_slope(scales, [r["loss_time_median"] for r in rows]),
            "slope_angle": fit_slope(scales, [r["angle_time_median"] for r in rows]),
        }
    return out


def _flat_params(model) -> np.ndarray:
    return np.asarray(flat(model)[0])


def _relative_gap(model, reference: np.ndarray) -> float:
    r"""$\|\theta - \theta_{\rm ref}\| / \|\theta_{\rm ref}\|$, parameters flat."""
    gap = np.linalg.norm(_flat_params(model) - reference) / np.linalg.norm(reference)
    return float(gap)


def _population_reference(depth, scale, d, t, rtol, key):
    """A teacher flow and a chain from `key`, the population flow's end at `t`, and its
    parameters flat."""
    tkey, mkey = jax.random.split(key)
    flow = teacher_flow(tkey, d)
    net = NeuronChain(d, depth, scale=scale, key=mkey)
    exact = solve(flow, net, t1=t, ts=jnp.array([t]), rtol=rtol, metrics={})
    return flow, net, exact, _flat_params(exact.final)


def _gap_summary(rows, x: str, y: str, exact, **run) -> dict:
    """`run`, the `rows`, the slope of log `y` against log `x` over the rows, and the
    status of the population flow they are compared with."""
    slope = fit_slope([r[x] for r in rows], [r[y] for r in rows])
    return run | {"rows": rows, "slope": slope, "status": str(exact.status_name)}


def finite_sample_gap(
    depth: int,
    scale: float,
    ns,
    *,
    draws: int = 8,
    d: int = 10,
    t: float = 20.0,
    rtol: float = 1e-10,
    key=None,
) -> dict:
    r"""How far the flow on $n$ Gaussian samples ends from the population flow at time
    `t`: per $n$, the mean over `draws` data sets of $\|\theta_n(t) - \theta(t)\| /
    \|\theta(t)\|$ (same teacher and initialisation; loss `jaxflow.losses.half_square`,
    whose expectation is the population loss), and the slope of its log against
    $\log n$ ($-1/2$ for a sampling error)."""
    key = jax.random.key(0) if key is None else key
    flow, net, exact, reference = _population_reference(depth, scale, d, t, rtol, key)
    dkey = jax.random.fold_in(key, 1)
    rows = []
    for n in ns:
        sols = [
            solve(
                GradientFlow(half_square, flow.data.sample(k, int(n))),
                net,
                t1=t,
                ts=jnp.array([t]),
                rtol=rtol,
                metrics={},
                kinks="plain",
            )
            for k in jax.random.split(jax.random.fold_in(dkey, n), draws)
        ]
        gaps = [_relative_gap(sol.final, reference) for sol in sols]
        rows.append(
            {
                "n": int(n),
                "gap_mean": float(np.mean(gaps)),
                "gap_std": float(np.std(gaps)),
                "statuses": sorted({str(sol.status_name) for sol in sols}),
            }
        )
    run = dict(depth=depth, scale=scale, d=d, t=t, draws=draws)
    return _gap_summary(rows, "n", "gap_mean", exact, **run)


def gd_gap(
    depth: int,
    scale: float,
    lrs,
    *,
    d: int = 10,
    t: float = 20.0,
    rtol: float = 1e-12,
    key=None,
) -> dict:
    r"""Gradient descent at step $\eta$ against the flow on the population loss, at time
    $t = k\eta$: per step, $\|\theta_{\rm GD} - \theta(t)\| / \|\theta(t)\|$, and the
    slope of its log against $\log\eta$ (1 for GD's first-order error)."""
    key = jax.random.key(0) if key is None else key
    flow, net, exact, reference = _population_reference(depth, scale, d, t, rtol, key)
    rows = []
    for lr in lrs:
        steps = int(round(t / lr))
        gd = gradient_descent(
            flow, net, lr=float(lr), steps=steps, ts=jnp.array([steps * lr]), metrics={}
        )
        error = _relative_gap(gd.final, reference)
        rows.append({"lr": float(lr), "steps": steps, "error": error})
    run = dict(depth=depth, scale=scale, d=d, t=t)
    return _gap_summary(rows, "lr", "error", exact, **run)


def _table(header, rows, title: str = "") -> str:
    """A markdown table, after `title` and a blank line when there is a title."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in rows]
    return "\n".join(([title, ""] if title else []) + lines)


def _times_row(depth, r: dict) -> list:
    """A row of the times table: median [quartiles] of both times, and the evidence."""

    def spread(name):
        return (
            f"{r[name + '_time_median']:.4g} [{r[name + '_time_q25']:.3g}, "
            f"{r[name + '_time_q75']:.3g}]"
        )

    return [
        depth,
        f"{r['scale']:g}",
        spread("loss"),
        spread("angle"),
        f"{min(r['loss_reached'], r['angle_reached'])}/{r['seeds']}",
        f"{r['steps_accepted_max']}/{r['steps_rejected_max']}",
        ", ".join(r["statuses"]),
    ]


def neuron_report(summary: dict) -> str:
    """The study's tables, in markdown: median times per depth and scale with the
    fitted slopes; the finite-sample gaps; GD's errors."""
    depths = summary["depths"]
    tables = [
        _table(
            [
                "depth",
                "scale",
                "loss time",
                "angle time",
                "reached",
                "steps acc/rej (max)",
                "statuses",
            ],
            [_times_row(depth, r) for depth, b in depths.items() for r in b["rows"]],
            f"Time to loss < {summary['loss_level']:g} and to angle < "
            f"{summary['angle_level']:g} (median over seeds [quartiles]; "
            "reached/seeds):",
        ),
        _table(
            [
                "depth",
                "slope of log loss time vs log scale",
                "slope of log angle time vs log scale",
            ],
            [
                [depth, f"{b['slope_loss']:+.3f}", f"{b['slope_angle']:+.3f}"]
                for depth, b in depths.items()
            ],
        ),
    ]
    if summary.get("finite_sample"):
        f = summary["finite_sample"]
        tables.append(
            _table(
                ["n", "relative parameter gap (mean ± std)", "statuses"],
                [
                    [
                        r["n"],
                        f"{r['gap_mean']:.3e} ± {r['gap_std']:.1e}",
                        ", ".join(r["statuses"]),
                    ]
                    for r in f["rows"]
                ],
                f"Finite samples against the population flow: depth {f['depth']}, "
                f"scale {f['scale']:g}, d {f['d']}, t = {f['t']:g}, {f['draws']} data "
                f"sets per n; fitted slope of log gap vs log n: {f['slope']:+.3f}",
            )
        )
    if summary.get("gd"):
        g = summary["gd"]
        tables.append(
            _table(
                ["step", "steps", "relative parameter error"],
                [[f"{r['lr']:g}", r["steps"], f"{r['error']:.3e}"] for r in g["rows"]],
                f"Gradient descent against the flow: depth {g['depth']}, scale "
                f"{g['scale']:g}, population loss, t = {g['t']:g}; fitted slope of log "
                f"error vs log step: {g['slope']:+.3f}",
            )
        )
    return "\n\n".join(tables)


def plot_neuron(summary: dict, path):
    """Median time against the initial scale per depth (loss and angle), the
    finite-sample gap against n, and GD's error against its step."""
    from ._plots import pyplot

    plt = pyplot()
    columns = 2 + bool(summary.get("finite_sample")) + bool(summary.get("gd"))
    fig, axes = plt.subplots(
        1, columns, figsize=(4.2 * columns, 3.6), layout="constrained"
    )
    axes = list(axes)
    for name, ax in zip(("loss", "angle"), axes[:2]):
        for depth, block in summary["depths"].items():
            rows = block["rows"]
            x = [r["scale"] for r in rows]
            label = f"L={depth} (slope {block['slope_' + name]:+.2f})"
            (line,) = ax.loglog(
                x, [r[f"{name}_time_median"] for r in rows], "o-", label=label
            )
            lo = [r[f"{name}_time_q25"] for r in rows]
            hi = [r[f"{name}_time_q75"] for r in rows]
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2)
        ax.set(
            xlabel="initial scale",
            ylabel=f"time to {name} < {summary[f'{name}_level']:g}",
            title=f"{name}: median, quartiles",
        )
        ax.legend(fontsize=7)
    rest = axes[2:]
    if summary.get("finite_sample"):
        f, ax = summary["finite_sample"], rest.pop(0)
        rows = f["rows"]
        ax.errorbar(
            [r["n"] for r in rows],
            [r["gap_mean"] for r in rows],
            yerr=[r["gap_std"] for r in rows],
            fmt="o-",
        )
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="samples n",
            ylabel="relative gap to population flow",
            title=f"finite n, t={f['t']:g}: slope {f['slope']:+.2f}",
        )
    if summary.get("gd"):
        g, ax = summary["gd"], rest.pop(0)
        ax.loglog([r["lr"] for r in g["rows"]], [r["error"] for r in g["rows"]], "o-")
        ax.set(
            xlabel="GD step",
            ylabel="relative error to the flow",
            title=f"GD, t={g['t']:g}: slope {g['slope']:+.2f}",
        )
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def neuron_study(
    depths=(1, 2, 3, 4),
    scales=(1e-4, 1e-3, 1e-2, 1e-1, 1.0),
    seeds: int = 32,
    *,
    d: int = 10,
    loss_level: float = 1e-6,
    angle_level: float = 1e-3,
    rtol: float = 1e-10,
    ns=(1000, 10000, 100000),
    draws: int = 4,
    sample_depth: int = 1,
    sample_scale: float = 0.1,
    sample_time: float = 2.0,
    lrs=(0.1, 0.03, 0.01, 0.003),
    key=None,
) -> tuple[dict, dict]:
    """The whole study: `convergence_times` for every depth and scale (a random teacher
    per seed), `finite_sample_gap` over `ns` (skipped when empty) and `gd_gap` over
    `lrs` (skipped when empty). Returns the summary (JSON-ready) and the ensembles,
    `{depth: [Ensemble per scale]}`."""
    key = jax.random.key(0) if key is None else key
    results = {}
    for depth in depths:
        results[depth] = [
            convergence_times(
                depth,
                scale,
                jax.random.split(jax.random.fold_in(key, depth), seeds),
                d=d,
                loss_level=loss_level,
                angle_level=angle_level,
                rtol=rtol,
            )
            for scale in scales
        ]
    summary = neuron_summary(results, scales, loss_level, angle_level)
    summary["d"], summary["rtol"] = d, rtol
    if len(ns):
        summary["finite_sample"] = finite_sample_gap(
            sample_depth, sample_scale, ns, draws=draws, d=d, t=sample_time, key=key
        )
    if len(lrs):
        summary["gd"] = gd_gap(2, sample_scale, lrs, d=d, key=key)
    return summary, results
