r"""Spurious stationary points: Boursier and Flammarion, "Early alignment in two-layer
networks training is a two-edged sword" (arXiv 2401.10791).

From a small initialisation, the living neurons of a one-hidden-layer ReLU net with
bias on the three points $x = (-0.75, -0.5, 0.125)$, $y = (1.1, 0.1, 0.8)$ collapse onto
one ray, active on every point: the net is linear on the data and the flow ends at the
least-squares line, mean squared error 0.175043, although a zero-loss interpolant
exists. `classify_ensemble` says for every seed where it ended and what kind of point
that is (`jaxflow.classify`); `spurious_summary` counts them.
"""

from pathlib import Path

import jax
import numpy as np

from .._classify import Verdict, classify
from .._dataset import Dataset
from ._plots import pyplot


def least_squares(data: Dataset) -> tuple[np.ndarray, float]:
    r"""The ordinary least-squares fit of $y$ on $(x, 1)$: the coefficients $\beta$
    and the mean squared error, the loss of the spurious point (mean square loss)."""
    X = np.asarray(data.X, dtype=float)
    A = np.concatenate([X, np.ones((X.shape[0], 1))], axis=1)
    y = np.asarray(data.y, dtype=float)
    beta = np.linalg.lstsq(A, y, rcond=None)[0]
    return beta, float(np.mean((A @ beta - y) ** 2))


def _seed(tree, s: int):
    return jax.tree.map(lambda x: x[s], tree)


def classify_ensemble(flow, ens, **kwargs) -> list[Verdict | None]:
    """`jaxflow.classify` for the end point of every seed of `ens` (`None` for a seed
    whose solve failed: its status says why). `kwargs` go to `classify`."""
    return [
        classify(flow, _seed(ens.final, s), **kwargs) if ens.succeeded[s] else None
        for s in range(ens.num_seeds)
    ]


def spurious_summary(ens, verdicts, data: Dataset, min_loss: float | None) -> dict:
    """Per seed: status, end time, final loss, verdict (with its evidence and escape);
    over seeds: how many ended at each kind of point, how many at the least-squares
    loss, and the fraction spurious two ways. The content of `summary.json` written by
    `jaxflow spurious`.

    A seed whose flow has not settled (its verdict "not stationary", or no verdict)
    is neither spurious nor global, so the fraction spurious among all seeds
    (`spurious / of`) undercounts where many have not settled; `spurious_of_settled`
    is the fraction among the `settled` seeds (None if none settled). Both are shown
    because neither alone is the answer: a seed not settled may end either way."""
    beta, mse = least_squares(data)
    seeds, counts = [], {}
    for s, verdict in enumerate(verdicts):
        row = {
            "seed": int(ens.seeds[s]),
            "status": str(ens.status_name[s]),
            "t_final": float(ens.t_final[s]),
            "num_steps": int(ens.stats["num_steps"][s]),
            "num_rejected_steps": int(ens.stats["num_rejected_steps"][s]),
            "verdict": None if verdict is None else verdict.as_dict(),
        }
        kind = "failed" if verdict is None else verdict.kind
        counts[kind] = counts.get(kind, 0) + 1
        if verdict is not None:
            row["at_least_squares"] = bool(abs(verdict.loss - mse) <= 1e-6 * mse)
        seeds.append(row)
    spurious = sum(
        1
        for v in verdicts
        if v is not None and v.kind in ("saddle", "local minimum") and v.loss > 1e-9
    )
    settled = sum(1 for v in verdicts if v is not None and v.kind != "not stationary")
    return {
        "least_squares": {"beta": [float(b) for b in beta], "mse": mse},
        "min_loss": min_loss,
        "counts": counts,
        "spurious": spurious,
        "settled": settled,
        "spurious_of_settled": spurious / settled if settled else None,
        "at_least_squares": sum(bool(r.get("at_least_squares")) for r in seeds),
        "of": len(seeds),
        "accuracy": {
            "rtol": float(ens.rtol),
            "statuses": sorted(set(map(str, ens.status_name))),
            "steps_accepted_max": int(np.max(ens.stats["num_accepted_steps"])),
            "steps_rejected_max": int(np.max(ens.stats["num_rejected_steps"])),
            "max_grad_norm_polished": max(
                (v.grad_norm for v in verdicts if v is not None), default=None
            ),
        },
        "seeds": seeds,
    }


def plot_spurious(
    data: Dataset, ens, verdicts, path: Path, *, seed: int = 0, title: str = ""
) -> Path:
    """Boursier and Flammarion's panels for one seed: the neurons $(w_j, b_j)$ in polar
    coordinates (radius their norm, colour the sign of $a_j$, dashed lines where a data
    point's activation boundary lies, the escape direction as an arrow), the fitted
    function against the data and the least-squares line, and the loss of every
    seed over time."""
    plt = pyplot()
    verdict = verdicts[seed]
    model = _seed(ens.final, seed) if verdict is None else verdict.polished.model
    W, b, v = (np.asarray(x) for x in (model.W[:, 0], model.b, model.v))
    X, y = np.asarray(data.X[:, 0]), np.asarray(data.y)
    fig = plt.figure(figsize=(14, 4.6), layout="constrained")
    ax = fig.add_subplot(1, 3, 1, projection="polar")
    radius = np.hypot(W, b)
    ax.scatter(np.arctan2(b, W), radius, c=np.where(v > 0, "C0", "C3"), s=14, zorder=3)
    top = radius.max() * 1.1
    for i, x in enumerate(X):  # w x + b = 0: the direction (1, -x) and its opposite
        for angle in (np.arctan2(-x, 1.0), np.arctan2(x, -1.0)):
            ax.plot([angle, angle], [0, top], "k--", lw=0.7)
        if len(X) <= 10:
            ax.text(np.arctan2(-x, 1.0), top, f"x{i + 1}", fontsize=8)
    escape = None if verdict is None else verdict.escape
    if escape is not None and escape.u is not None:
        u = escape.u
        ax.annotate(
            "",
            xy=(np.arctan2(u[1], u[0]), top * 0.8),
            xytext=(0, 0),
            arrowprops=dict(arrowstyle="->", color="C2", lw=2),
        )
        ax.plot([], [], color="C2", label="escape: new neuron")
        ax.legend(fontsize=7, loc="lower left")
    ax.set_rlabel_position(270)
    ax.set_title("neurons (w_j, b_j): blue a_j>0, red a_j<0", fontsize=9)
    ax = fig.add_subplot(1, 3, 2)
    grid = np.linspace(X.min() - 0.5, X.max() + 0.5, 400)
    beta, mse = least_squares(data)
    ax.plot(grid, np.asarray(model(grid[:, None])), label="network (end of flow)")
    ax.plot(
        grid,
        beta[0] * grid + beta[1],
        "k--",
        lw=1,
        label=f"least squares, MSE {mse:.6f}",
    )
    ax.plot(X, y, "o", color="k", label="data")
    kind = "failed" if verdict is None else verdict.kind
    ax.set(xlabel="x", title=f"seed {seed}: {kind}")
    ax.legend(fontsize=8)
    ax = fig.add_subplot(1, 3, 3)
    ts = np.asarray(ens.ts)
    for s in range(ens.num_seeds):
        ax.loglog(ts, np.asarray(ens.metrics["loss"][s]), lw=0.8, alpha=0.7)
    ax.axhline(mse, color="k", ls="--", lw=1, label="least-squares loss")
    ax.set(xlabel="t", ylabel="loss (mean square)", title="loss, every seed")
    ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
