"""Alignment-time sweeps (Min, Mallada, Vidal 2024): t1 against n and mu, t2 against
the initialisation scale eps, on synthetic separable data, many seeds per cell.

    python benchmarks/alignment.py                 # both sweeps, tables and fits
    python benchmarks/alignment.py --sweeps n-mu   # one of them
    python benchmarks/alignment.py --quick         # fewer cells and seeds
    python benchmarks/alignment.py --ns 16 64 256  # some values of n
    python benchmarks/alignment.py --sweeps toys   # the paper's 2-D toys
    python benchmarks/alignment.py --sweeps late   # loss decay and stable rank after t2
    python benchmarks/alignment.py --kinks auto plain  # both modes, and how they differ

`--kinks` is the kink treatment of the n-mu and eps sweeps (default `auto`, the exact
min-norm flow); given two modes, each sweep runs in both on the same seeds, and a table
gives, per cell, the largest difference of a seed's event time between them.

t1 is Theorem 1's event, the first time every neuron is in its own cone
(`jf.events.AllInCones`), located on the dense output; t2 the first time the loss is
half its initial value (`jf.events.LossFraction(0.5)`). Each is a terminal event, so a
seed leaves its batch when it is done. The toys (two points at angle c = 0.1 and 0.001,
the orthogonal pair, circle clusters) run to a fixed horizon with every alignment event
recorded, and their figure shows each neuron's angle over time and the two-phase
diagnostic. Figures are written beside this script (`alignment_t1_ecdf.png`,
`alignment_fits.png`, `alignment_t2_eps.png`, `alignment_toys.png`).
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


# Where the figures go (`--figures`).
HERE = Path(__file__).resolve().parent


def _solve(data, width, scale, seeds, event, t1, rtol, key, kinks):
    flow = jf.GradientFlow(jf.losses.exponential, data)

    def init(k):
        return jf.models.TwoLayerReLU(data.d, width, scale=scale, key=k)

    return jf.solve_ensemble(
        flow,
        init,
        jax.random.split(key, seeds),
        t1=t1,
        ts=jnp.array([0.0, t1]),
        rtol=rtol,
        events={"done": event},
        metrics={"loss": jf.metrics.loss},
        save_models=False,
        batch_size=seeds,
        kinks=kinks,
    )


def _fit(x, y):
    """Least-squares line y = a x + b: slope a, intercept b, R^2."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    a, b = np.polyfit(x, y, 1)
    residual = y - (a * x + b)
    return a, b, 1.0 - residual.var() / y.var()


def sweep_n_mu(ns, mus, seeds, d, width, scale, rtol, kinks):
    print(
        f"\n## t1 against n and mu: separable data (d={d}), width {width}, balanced "
        f"init scale {scale:g}, mean exponential loss, {seeds} seeds a cell, rtol "
        f"{rtol:g}, kinks={kinks}. Times t in mean-loss time; the theorem's unit, in "
        "which its bound is stated, is the sum-loss time t/n. The bound: Theorem 1's "
        "t1 = 16 log n / (min(zeta, xi) sqrt(mu) X_min) with the paper's constants, "
        "per seed (zeta2 depends on the initial neurons). eps = max_j |w_j(0)|; "
        "eq. (28) is the theorem's requirement on it\n"
    )
    print(
        "| n | mu (asked) | mu (data) | log n / sqrt(mu) | t1 median | t1 q10 | t1 q90 "
        "| t1 max | reached | t1/n median | t1 bound (sum-loss, median) | largest "
        "t1/n / bound | log10 eps | log10 eps allowed by (28) | wall s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for n in ns:
        for mu in mus:
            dkey, key = jax.random.split(jax.random.key(n * 1000 + int(mu * 100)))
            data = jf.datasets.separable(dkey, n, d, mu, exact=True)
            start = time.perf_counter()
            ens = _solve(
                data, width, scale, seeds, jf.events.AllInCones(terminal=True),
                200.0, rtol, key, kinks,
            )  # fmt: skip
            wall = time.perf_counter() - start
            t1 = np.asarray(ens.event_times["done"], float)
            inits = eqx.filter_vmap(
                lambda k: jf.models.TwoLayerReLU(d, width, scale=scale, key=k)
            )(jax.random.split(key, seeds))  # the seeds' initial networks
            theory = eqx.filter_vmap(
                lambda m: jf.experiments.alignment_theory(data, m)
            )(inits)
            mu_data = float(theory.mu[0])
            x = np.log(n) / np.sqrt(mu_data)
            ok = np.isfinite(t1)
            q = np.quantile(t1[ok], [0.1, 0.5, 0.9, 1.0]) if ok.any() else [np.nan] * 4
            bounds = np.asarray(theory.t1_bound, float)
            bound = float(np.median(bounds))
            eps_log10 = np.median(np.asarray(theory.log_eps)) / np.log(10)
            eps_max_log10 = np.median(np.asarray(theory.log_eps_max)) / np.log(10)
            rows.append(
                dict(n=n, mu=mu, mu_data=mu_data, x=x, t1=t1, median=q[1], wall=wall)
            )
            print(
                f"| {n} | {mu:g} | {mu_data:.3f} | {x:.2f} | {q[1]:.3f} | {q[0]:.3f} | "
                f"{q[2]:.3f} | {q[3]:.3f} | {ok.sum()}/{seeds} | {q[1] / n:.3e} | "
                f"{bound:.3g} | {np.max(t1 / n / bounds):.2e} | {eps_log10:.2f} | "
                f"{eps_max_log10:.4g} | {wall:.1f} |",
                flush=True,
            )
    xs = np.array([r["x"] for r in rows])
    med = np.array([r["median"] for r in rows])
    a, b, r2 = _fit(xs, med)
    print(
        f"\nFit over all {len(rows)} cells: median t1 = {a:.3f} * log n / sqrt(mu) + "
        f"{b:.3f}, R^2 = {r2:.3f}."
    )
    for mu in mus:
        sel = [r for r in rows if r["mu"] == mu]
        a_n, _, r2_n = _fit([np.log(r["n"]) for r in sel], [r["median"] for r in sel])
        print(f"- mu={mu:g}: median t1 against log n: slope {a_n:.3f}, R^2 {r2_n:.3f}")
    for n in ns:
        sel = [r for r in rows if r["n"] == n]
        a_m, _, r2_m = _fit(
            [1 / np.sqrt(r["mu_data"]) for r in sel], [r["median"] for r in sel]
        )
        print(f"- n={n}: median t1 against 1/sqrt(mu): slope {a_m:.3f}, R^2 {r2_m:.3f}")
    return rows, (a, b, r2)


def sweep_eps(epss, n, mu, seeds, d, width, rtol, kinks):
    print(
        f"\n## t2 against the initialisation scale: separable n={n}, d={d}, mu={mu:g}, "
        f"width {width}, balanced init, {seeds} seeds a cell, rtol {rtol:g}, "
        f"kinks={kinks}\n"
    )
    print("| eps | log(1/eps) | t2 median | t2 q10 | t2 q90 | reached | wall s |")
    print("|---|---|---|---|---|---|---|")
    dkey, key = jax.random.split(jax.random.key(7))
    data = jf.datasets.separable(dkey, n, d, mu)
    rows = []
    for eps in epss:
        start = time.perf_counter()
        ens = _solve(
            data, width, eps, seeds, jf.events.LossFraction(0.5, terminal=True),
            1e4, rtol, key, kinks,
        )  # fmt: skip
        wall = time.perf_counter() - start
        t2 = np.asarray(ens.event_times["done"], float)
        ok = np.isfinite(t2)
        q = np.quantile(t2[ok], [0.1, 0.5, 0.9]) if ok.any() else [np.nan] * 3
        rows.append(dict(eps=eps, x=np.log(1 / eps), t2=t2, median=q[1], wall=wall))
        print(
            f"| {eps:g} | {np.log(1 / eps):.2f} | {q[1]:.3f} | {q[0]:.3f} | "
            f"{q[2]:.3f} | {ok.sum()}/{seeds} | {wall:.1f} |",
            flush=True,
        )
    a, b, r2 = _fit([r["x"] for r in rows], [r["median"] for r in rows])
    print(
        f"\nFit: median t2 = {a:.3f} * log(1/eps) + {b:.3f}, R^2 = {r2:.4f} "
        f"(the paper: t2 = Theta(log(1/eps)) at fixed n)."
    )
    return rows, (a, b, r2)


def _slope_ci(slopes):
    """Mean of per-seed slopes and its 95% t-interval (seeds are independent)."""
    from scipy import stats

    s = np.asarray(slopes, float)
    s = s[np.isfinite(s)]
    if s.size < 2:
        return np.nan, np.nan, np.nan
    half = stats.t.ppf(0.975, s.size - 1) * s.std(ddof=1) / np.sqrt(s.size)
    return s.mean(), s.mean() - half, s.mean() + half


def sweep_late(ns, mus, seeds, d, width, scale, rtol, kinks, t_end, after):
    """After the loss drop: the loss decay exponent and the stable rank (mu > 0)."""
    print(
        f"\n## After the loss drop: separable data (d={d}, mu > 0, the data of the n-mu "
        f"sweep), width {width}, balanced init scale {scale:g}, mean exponential loss, "
        f"{seeds} seeds a cell, rtol {rtol:g}, kinks={kinks}, to t = {t_end:g} "
        "(mean-loss time; sum-loss time is t/n, which changes no exponent). t2: the "
        "loss at half its initial value. Decay exponent p: per seed, the least-squares "
        f"slope of log L against log t over [{after:g} t2, {t_end:g}]; the table gives "
        "the mean over seeds with its 95% t-interval, and the slope over the last "
        "decade alone. O(1/t) means p <= -1. Stable rank ||W||_F^2 / ||W||_2^2: the "
        "largest over seeds, at t2, at 10 t2 and at the end, and the largest over "
        "seeds and over all saved times after 10 t2 (the claim: limsup <= 2). The "
        "paper's t2: the first saved time at which both classes have an output "
        "|f(x_i)| > 1/4; from it, Theorem 1's bound L(t) <= L(t2) / (L(t2) alpha "
        "(t - t2) + 1), alpha = (mu X_min)^2 / (32 X_max), sum loss and sum-loss time: "
        "the largest ratio of the loss to the bound over seeds and saved times after "
        "t2 (<= 1: "
        "it holds), and how loose it is at the end\n"
    )
    print(
        "| n | mu | t2 median | p mean | p 95% CI | p last decade (mean) | t L(t) end / "
        "at start of window (median) | SR at t2 | SR at 10 t2 | SR at end | SR max "
        "after 10 t2 | paper's t2 (median) | reached | largest L / bound | bound / L "
        "at end (median) | status | wall s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    ts = jnp.concatenate([jnp.zeros(1), jnp.geomspace(0.1, t_end, 121)])
    rows = []
    for n in ns:
        for mu in mus:
            dkey, key = jax.random.split(jax.random.key(n * 1000 + int(mu * 100)))
            data = jf.datasets.separable(dkey, n, d, mu, exact=True)
            flow = jf.GradientFlow(jf.losses.exponential, data)

            def init(k):
                return jf.models.TwoLayerReLU(data.d, width, scale=scale, key=k)

            start = time.perf_counter()
            ens = jf.solve_ensemble(
                flow, init, jax.random.split(key, seeds), t1=t_end, ts=ts, rtol=rtol,
                events={"t2": jf.events.LossFraction(0.5)},
                metrics={"loss": jf.metrics.loss, "sr": jf.metrics.stable_rank,
                         "f+": _largest_output(1.0), "f-": _largest_output(-1.0)},
                save_models=False, batch_size=seeds, kinks=kinks,
            )  # fmt: skip
            wall = time.perf_counter() - start
            t = np.asarray(ens.ts, float)
            loss = np.asarray(ens.metrics["loss"], float)
            sr = np.asarray(ens.metrics["sr"], float)
            t2 = np.asarray(ens.event_times["t2"], float)
            p, p_last, ratio, sr_at = [], [], [], {1: [], 10: []}
            for s in range(seeds):
                if not np.isfinite(t2[s]) or after * t2[s] >= t_end / 10:
                    continue
                w = (t >= after * t2[s]) & (loss[s] > 0)
                p.append(np.polyfit(np.log(t[w]), np.log(loss[s, w]), 1)[0])
                last = t >= t_end / 10
                p_last.append(np.polyfit(np.log(t[last]), np.log(loss[s, last]), 1)[0])
                first = np.argmax(w)
                ratio.append(t[-1] * loss[s, -1] / (t[first] * loss[s, first]))
                for k in sr_at:
                    sr_at[k].append(sr[s, np.argmin(np.abs(t - k * t2[s]))])
            # Theorem 1's loss bound, sum loss and sum-loss time, from its t2 (both
            # classes have an output above 1/4), on the save grid: a later start is
            # allowed, as the bound holds from every time after t2.
            alpha = float(jf.experiments.alignment_theory(data).alpha)
            big = (np.asarray(ens.metrics["f+"]) > 0.25) & (
                np.asarray(ens.metrics["f-"]) > 0.25
            )
            worst, slack, t2_paper = 0.0, [], []
            for s in range(seeds):
                if not big[s].any():
                    continue
                k = int(np.argmax(big[s]))
                t2_paper.append(t[k])
                L0, L = n * loss[s, k], n * loss[s, k:]
                bound = L0 / (L0 * alpha * (t[k:] - t[k]) / n + 1)
                if L.size > 1:  # the ratio is 1 at t2 itself
                    worst = max(worst, float(np.max(L[1:] / bound[1:])))
                slack.append(bound[-1] / L[-1])
            late = t[None, :] >= 10 * t2[:, None]
            mean, lo, hi = _slope_ci(p)
            status = (
                "all successful"
                if bool(ens.succeeded.all())
                else (f"{int(ens.succeeded.sum())}/{seeds} successful")
            )
            rows.append(dict(n=n, mu=mu, t=t, loss=loss, sr=sr, t2=t2))
            print(
                f"| {n} | {mu:g} | {np.nanmedian(t2):.2f} | {mean:.3f} | "
                f"[{lo:.3f}, {hi:.3f}] | {np.mean(p_last):.3f} | {np.median(ratio):.3f} | "
                f"{max(sr_at[1]):.3f} | {max(sr_at[10]):.3f} | {sr[:, -1].max():.3f} | "
                f"{np.where(late, sr, -np.inf).max():.3f} | {np.median(t2_paper):.2f} | "
                f"{len(t2_paper)}/{seeds} | {worst:.3f} | {np.median(slack):.3g} | "
                f"{status} | {wall:.1f} |",
                flush=True,
            )
    return rows


def _largest_output(sign):
    """The largest |f(x_i)| over the points of one class (Theorem 1's t2)."""

    def metric(model, flow):
        f = model(flow.data.X)
        return jnp.max(jnp.where(flow.data.y == sign, jnp.abs(f), 0.0))

    return metric


def _late_figure(rows):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    for r in rows:
        label = f"n={r['n']}, mu={r['mu']:g}"
        line = a.loglog(r["t"][1:], np.median(r["loss"], axis=0)[1:], label=label)[0]
        b.semilogx(r["t"][1:], np.median(r["sr"], axis=0)[1:], color=line.get_color())
    t = rows[0]["t"][1:]
    ref = t[-1] * np.median(rows[0]["loss"], axis=0)[-1]
    a.loglog(t[t > 30], ref / t[t > 30], "k--", label="C / t")
    a.set(xlabel="t (mean loss)", ylabel="loss (median over seeds)")
    b.axhline(2.0, color="k", ls=":", label="2")
    b.set(xlabel="t (mean loss)", ylabel="stable rank (median over seeds)")
    a.legend(fontsize=7)
    b.legend(fontsize=7)
    fig.savefig(HERE / "alignment_late.png", dpi=100)
    plt.close(fig)


def _angles(model, flow):
    """Each neuron's angle in the plane, in degrees (2-D toys)."""
    return jnp.rad2deg(jnp.arctan2(model.W[:, 1], model.W[:, 0]))


def sweep_toys(seeds, width, scale, t1, rtol):
    print(
        f"\n## 2-D toys: width {width}, balanced init scale {scale:g}, mean exponential "
        f"loss, {seeds} seeds a toy, t up to {t1:g}, rtol {rtol:g}, kinks=auto "
        f"(min-norm); delta=1e-3 for tau_j. Times in mean-loss time t; the bound in "
        "the theorem's sum-loss time t/n\n"
    )
    print(
        "| toy | n | mu | t1 bound (sum-loss) | t1 median [q10, q90] | reached | max_j tau_j median "
        "[q10, q90] | reached | t2 median | final loss (median) | dead neurons "
        "(mean) | max drift | steps acc/rej (max) | status | wall s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    toys = {
        "two points, c=0.1": jf.datasets.two_points(0.1),
        "two points, c=0.001": jf.datasets.two_points(0.001),
        "orthogonal pair": jf.datasets.orthogonal(),
        "circle clusters": jf.datasets.circle_clusters(jax.random.key(3), 10, 10),
    }
    ts = jnp.concatenate([jnp.zeros(1), jnp.geomspace(1e-2, t1, 199)])
    rows = {}
    for name, data in toys.items():
        flow = jf.GradientFlow(jf.losses.exponential, data)

        def init(k):
            return jf.models.TwoLayerReLU(2, width, scale=scale, key=k)

        keys = jax.random.split(jax.random.key(11), seeds)
        metrics = jf.experiments.alignment_metrics(init(keys[0]), flow)
        start = time.perf_counter()
        ens = jf.solve_ensemble(
            flow, init, keys, t1=t1, ts=ts, rtol=rtol,
            events=jf.experiments.alignment_events(1e-3),
            metrics=metrics | {"angle": _angles},
            batch_size=seeds, kinks="auto",
        )  # fmt: skip
        wall = time.perf_counter() - start
        theory = jf.experiments.alignment_theory(data)
        s = jf.experiments.alignment_summary(ens, theory, data)
        t, tau, t2 = s["times"]["t1"], s["times"]["tau_max"], s["times"]["t2"]
        acc = s["accuracy"]
        dead = np.mean([r["dead_at_end"] for r in s["seeds"]])

        def q(x):
            if not x["reached"]:
                return "-"
            return f"{x['median']:.3g} [{x['q10']:.3g}, {x['q90']:.3g}]"

        print(
            f"| {name} | {data.n} | {float(theory.mu):.3g} | "
            f"{float(theory.t1_bound):.3g} | {q(t)} | {t['reached']}/{seeds} | "
            f"{q(tau)} | {tau['reached']}/{seeds} | "
            f"{t2.get('median', float('nan')):.3g} | "
            f"{np.median([r['final']['loss'] for r in s['seeds']]):.3g} | "
            f"{dead:.1f} | {acc['max_conserved_drift']:.1e} | "
            f"{acc['steps_accepted_max']}/{acc['steps_rejected_max']} | "
            f"{','.join(acc['statuses'])} | {wall:.1f} |",
            flush=True,
        )
        rows[name] = dict(
            data=data,
            ts=np.asarray(ens.ts),
            angle=np.unwrap(np.asarray(ens.metrics["angle"][0]), period=360, axis=0),
            v=np.asarray(ens.final.v[0]),
            norm=np.asarray(ens.metrics["norm_change"][0]),
            direction=np.asarray(ens.metrics["direction_change"][0]),
            t1=s["seeds"][0]["t1"],
        )
    return rows


def _toy_figure(rows):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        2, len(rows), figsize=(4 * len(rows), 7), layout="constrained", sharex=True
    )
    for c, (name, r) in enumerate(rows.items()):
        ax, ts = axes[0, c], r["ts"]
        X, y = np.asarray(r["data"].X), np.asarray(r["data"].y)
        for x_i, y_i in zip(X, y):
            deg = np.rad2deg(np.arctan2(x_i[1], x_i[0]))
            for turn in (-360, 0, 360):  # the neurons' angles are unwrapped
                if r["angle"].min() - 10 < deg + turn < r["angle"].max() + 10:
                    ax.axhline(
                        deg + turn, color="C0" if y_i > 0 else "C3", lw=0.6, ls=":"
                    )
        for j in range(r["angle"].shape[1]):
            ax.plot(
                ts[1:], r["angle"][1:, j], lw=0.8, color="C0" if r["v"][j] > 0 else "C3"
            )
        if r["t1"] is not None:
            ax.axvline(r["t1"], color="k", lw=0.8, ls="--", label=f"t1 = {r['t1']:.3g}")
            ax.legend(fontsize=7, loc="lower left")
        ax.set(xscale="log", title=name, ylabel="angle of w_j (deg, unwrapped)")
        ax = axes[1, c]
        ax.plot(ts[1:], np.abs(r["norm"][1:]), label="norm change Σ 2<-∇w_j L, w_j>")
        ax.plot(
            ts[1:], r["direction"][1:], label="direction change Σ |P(-∇w_j L)|/|w_j|"
        )
        ax.set(xscale="log", yscale="log", xlabel="t")
        ax.legend(fontsize=7)
    fig.suptitle(
        "2-D toys, seed 0: neuron angles (blue v_j>0, red v_j<0; dotted: data, "
        "coloured by label) and the two-phase diagnostic"
    )
    fig.savefig(HERE / "alignment_toys.png", dpi=100)
    plt.close(fig)


def _figures(nmu, eps):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if nmu is not None:
        rows, _ = nmu
        fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
        for r in rows:
            if r["mu"] == rows[0]["mu"] or r["n"] == rows[-1]["n"]:
                t = np.sort(r["t1"][np.isfinite(r["t1"])])
                ax.step(
                    t, np.arange(1, t.size + 1) / r["t1"].size,
                    label=f"n={r['n']}, mu={r['mu']:g}",
                )  # fmt: skip
        ax.set(
            xscale="log", xlabel="t1", ylabel="fraction of seeds", title="ECDF of t1"
        )
        ax.legend(fontsize=7)
        fig.savefig(HERE / "alignment_t1_ecdf.png", dpi=100)
        plt.close(fig)
    if nmu is not None:
        _fit_figure(nmu, "log n / sqrt(mu)", "median t1", "alignment_fits.png")
    if eps is not None:
        _fit_figure(eps, "log(1/eps)", "median t2", "alignment_t2_eps.png")


def _fit_figure(result, xlabel, ylabel, name):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, (a, b, r2) = result
    fig, ax = plt.subplots(figsize=(6, 4.2), layout="constrained")
    x = np.array([r["x"] for r in rows])
    ax.plot(x, [r["median"] for r in rows], "o")
    grid = np.linspace(x.min(), x.max(), 50)
    ax.plot(grid, a * grid + b, "k--", label=f"slope {a:.3g}, R² {r2:.3f}")
    ax.set(xlabel=xlabel, ylabel=ylabel)
    ax.legend()
    fig.savefig(HERE / name, dpi=100)
    plt.close(fig)


def _compare(name, runs, key, cell):
    """Per cell, how much the event times of the two kink modes differ, seed by seed."""
    (a, rows_a), (b, rows_b) = runs
    print(f"\n## {name}: kinks={a} against kinks={b}, seed by seed\n")
    print(
        f"| cell | median {a} | median {b} | max relative difference of a seed's "
        f"time | seeds reached ({a}/{b}) | wall s ({a}/{b}) |"
    )
    print("|---|---|---|---|---|---|")
    for ra, rb in zip(rows_a, rows_b):
        ta, tb = ra[key], rb[key]
        both = np.isfinite(ta) & np.isfinite(tb)
        diff = np.max(np.abs(ta[both] - tb[both]) / tb[both]) if both.any() else np.nan
        print(
            f"| {cell(ra)} | {ra['median']:.4g} | {rb['median']:.4g} | {diff:.1e} | "
            f"{np.isfinite(ta).sum()}/{np.isfinite(tb).sum()} | "
            f"{ra['wall']:.1f}/{rb['wall']:.1f} |",
            flush=True,
        )


def main():
    global HERE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweeps", nargs="*", default=["n-mu", "eps", "late", "toys"])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--ns", type=int, nargs="*", default=[16, 64, 256, 1024, 4096], help="n values"
    )
    parser.add_argument(
        "--kinks",
        nargs="+",
        default=["auto"],
        choices=["auto", "min-norm", "plain"],
        help="kink treatment(s) of the n-mu and eps sweeps; two: compare them",
    )
    parser.add_argument(
        "--figures", type=Path, default=HERE, help="folder for the figures"
    )
    args = parser.parse_args()
    HERE = args.figures
    HERE.mkdir(parents=True, exist_ok=True)
    if len(args.kinks) > 2:
        parser.error(f"--kinks: at most two modes, got {args.kinks}")
    device = jax.devices()[0]
    print(
        f"# jaxflow alignment sweeps: {platform.machine()}, {device.platform}, "
        f"{os.cpu_count()} cores, jax {jax.__version__}, jaxflow {jf.__version__}"
    )
    quick = args.quick
    nmu, eps = [], []
    if "toys" in args.sweeps:
        _toy_figure(
            sweep_toys(8 if quick else 64, width=20, scale=1e-6, t1=100.0, rtol=1e-8)
        )
    for kinks in args.kinks:
        if "n-mu" in args.sweeps:
            nmu.append((kinks, sweep_n_mu(
                [16, 64] if quick else args.ns,
                [0.1, 0.5] if quick else [0.05, 0.1, 0.3, 0.6, 0.9],
                8 if quick else 64,
                d=20, width=10, scale=1e-6, rtol=1e-8, kinks=kinks,
            )))  # fmt: skip
        if "eps" in args.sweeps:
            eps.append((kinks, sweep_eps(
                [1e-2, 1e-6] if quick else [1e-2, 1e-4, 1e-6, 1e-8, 1e-10, 1e-12],
                n=64 if quick else 256, mu=0.3, seeds=8 if quick else 64,
                d=20, width=10, rtol=1e-8, kinks=kinks,
            )))  # fmt: skip
    if "late" in args.sweeps:
        _late_figure(sweep_late(
            [16, 64] if quick else [16, 64, 256],
            [0.3] if quick else [0.1, 0.3, 0.9],
            4 if quick else 16,
            d=20, width=10, scale=1e-6, rtol=1e-8, kinks=args.kinks[0],
            t_end=1e3 if quick else 1e4, after=3.0,
        ))  # fmt: skip
    if len(nmu) == 2:
        _compare("t1", [(k, r[0]) for k, r in nmu], "t1",
                 lambda r: f"n={r['n']}, mu={r['mu']:g}")  # fmt: skip
    if len(eps) == 2:
        _compare("t2", [(k, r[0]) for k, r in eps], "t2", lambda r: f"eps={r['eps']:g}")
    if nmu or eps:  # the figures show the first mode
        _figures(nmu[0][1] if nmu else None, eps[0][1] if eps else None)


if __name__ == "__main__":
    main()
