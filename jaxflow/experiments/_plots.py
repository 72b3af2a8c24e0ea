"""Figures of the alignment study (Min, Mallada, Vidal 2024, Fig. 2 and 3) and of
`jaxflow demo`."""

from pathlib import Path

import numpy as np


# The time axis of the figures: jaxflow's studies solve the mean loss.
TIME = "t (mean loss)"


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def alignment_panel(ax, ts, metrics, positive, gd=None) -> None:
    """cos of the mean neuron over $v_j > 0$ with $x_+$ (and over $v_j < 0$ with $x_-$),
    with the per-neuron min-max band; GD's curves dashed when given."""
    groups = (
        (positive, "plus", "v_j>0 with x+", "C0"),
        (~positive, "minus", "v_j<0 with x-", "C3"),
    )
    for sign, name, label, colour in groups:
        if not sign.any():
            continue
        cos = metrics[f"cos_{name}"][:, sign]
        ax.plot(ts, metrics[f"align_{name}"], color=colour, label=f"flow, {label}")
        ax.fill_between(ts, cos.min(1), cos.max(1), color=colour, alpha=0.2)
        if gd is not None:
            ax.plot(gd[0], np.asarray(gd[1][f"align_{name}"]), "--", color="k", lw=1)
    if gd is not None:
        ax.plot([], [], "--", color="k", lw=1, label=gd[2])
    ax.set(
        ylim=(-1.05, 1.05),
        xlabel=TIME,
        title="cos(mean neuron, x±), band: min-max",
    )
    ax.legend(fontsize=8)


def plot_alignment(
    ts, metrics, v, path: Path, *, gd=None, images=None, title: str = ""
) -> Path:
    """The paper's panels for one seed: alignment, loss, stable rank and $\\|W\\|_2^2$;
    with `images` (the mean neurons and $\\bar x_\\pm$, 28x28), a row of them.

    `metrics`: name -> array over `ts` (per-neuron arrays `(times, width)`); `v`: the
    second-layer weights (their signs group the neurons); `gd`: `(ts, metrics, label)`
    of gradient descent, drawn dashed.
    """
    plt = pyplot()
    ts = np.asarray(ts)
    m = {k: np.asarray(x) for k, x in metrics.items()}
    positive = np.asarray(v) > 0
    rows = 2 if images is None else 3
    fig = plt.figure(figsize=(11, 3.4 * rows), layout="constrained")
    grid = fig.add_gridspec(rows, 4 if images is not None else 2)
    span = 2 if images is not None else 1
    axes = [
        fig.add_subplot(grid[r, c * span : (c + 1) * span])
        for r in range(2)
        for c in range(2)
    ]
    alignment_panel(axes[0], ts, m, positive, gd)
    panels = (
        ("loss", "loss (mean exponential)", "log"),
        ("stable_rank", "stable rank ‖W‖²_F / ‖W‖²_2", "linear"),
        ("spectral_norm_sq", "‖W‖²_2", "log"),
    )
    for ax, (name, label, yscale) in zip(axes[1:], panels):
        ax.plot(ts, m[name], color="C0", label="flow")
        if gd is not None:
            ax.plot(gd[0], np.asarray(gd[1][name]), "--", color="k", lw=1, label=gd[2])
        ax.set(xlabel=TIME, title=label, yscale=yscale)
        ax.legend(fontsize=8)
    if images is not None:
        for c, (label, image) in enumerate(images.items()):
            ax = fig.add_subplot(grid[2, c])
            ax.imshow(np.asarray(image).reshape(28, 28), cmap="RdBu_r")
            ax.set(title=label, xticks=[], yticks=[])
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_times(summary: dict, path: Path) -> Path:
    """ECDFs over seeds of $t_1$ (Theorem 1's event), the largest per-neuron alignment
    time, $t_2$ (loss drop) and the norm-growth onset, with the $t_1$ bound."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    for name, label in (
        ("t1", "t1: all neurons in their cones"),
        ("tau_max", "max_j τ_j: all aligned"),
        ("t2", "t2: loss halved"),
        ("norm_growth", "‖W‖_F doubled"),
    ):
        x = np.array([s[name] for s in summary["seeds"] if s[name] is not None])
        if x.size:
            x = np.sort(x)
            ax.step(x, np.arange(1, x.size + 1) / len(summary["seeds"]), label=label)
    bound = np.asarray(summary["theory"]["t1_bound"], dtype=float)  # None -> nan
    bound = np.median(bound[np.isfinite(bound)]) if np.isfinite(bound).any() else None
    n = summary["theory"]["n"]
    if bound is not None:  # stated in sum-loss time: at n times it in mean-loss time
        label = f"t1 bound (median) {bound:.3g} in sum-loss time, x n = {n}"
        ax.axvline(bound * n, color="k", ls=":", label=label)
    ax.set(
        xscale="log",
        xlabel=f"mean-loss time t (the theorem's sum-loss time is t / {n})",
        ylabel="fraction of seeds",
        title="first times",
    )
    if ax.get_legend_handles_labels()[0]:  # nothing happened within t1: no legend
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_demo(ts, metrics, net, path: Path) -> Path:
    """`jaxflow demo`'s panels: alignment, loss and gradient norm, the fractions of
    neurons in $S_+$, $S_-$ and dead with the stable rank, and the drift of the
    conserved $v_j^2 - \\|w_j\\|^2$. `net` is the initial model: the signs of its
    $v_j$ group the neurons."""
    plt = pyplot()
    m = metrics
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), layout="constrained")
    alignment_panel(axes[0, 0], ts, m, np.asarray(net.v) > 0)
    axes[0, 0].set(xscale="log")
    ax = axes[0, 1]
    ax.loglog(ts, m["loss"], label="loss")
    ax.loglog(ts, m["grad_norm"], label="‖∇L‖")
    ax.set(xlabel=TIME, title="loss")
    ax.legend()
    ax = axes[1, 0]
    for name in ("frac_plus", "frac_minus", "frac_dead"):
        ax.plot(ts, m[name], label=name.removeprefix("frac_"))
    label = "stable rank ‖W‖²_F/‖W‖²_2 / width"
    ax.plot(ts, m["stable_rank"] / net.width, "k--", label=label)
    ax.set(
        xscale="log",
        xlabel=TIME,
        title="fraction of neurons in S+, S-, dead",
    )
    ax.legend()
    ax = axes[1, 1]
    ax.loglog(ts, np.maximum(m["conserved_drift"], 1e-18))
    ax.set(
        xlabel=TIME,
        title="relative drift of v_j² - ‖w_j‖² (exactness check)",
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
