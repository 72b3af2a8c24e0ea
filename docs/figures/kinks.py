"""The figure of docs/concepts/kinks.md: a pre-activation that reaches its kink and
slides, under `kinks="plain"` and the default (min-norm) treatment.

Boursier and Flammarion's three points, square loss, a `TwoLayerReLU` of width 20 with
bias, balanced init at scale 0.1 (`fan="width"`), seed 4; Tsit5 at rtol 1e-9. Near
t = 5.4 neuron 11 reaches the kink of point 2 from below and the flow slides along it.

    python docs/figures/kinks.py        # writes docs/figures/kinks_sliding.png

About 30 s on two CPU cores, compilation included.
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

import jaxflow as jf


RTOL, MAX_STEPS = 1e-9, 4000
PAIR = (2, 11)  # (data point i, neuron j) that slides
OUT = Path(__file__).with_name("kinks_sliding.png")

flow = jf.GradientFlow(jf.losses.square, jf.datasets.boursier_flammarion())
net = jf.models.TwoLayerReLU(
    1, 20, scale=0.1, bias=True, fan="width", key=jax.random.key(4)
)
X1 = jnp.concatenate([flow.data.X, jnp.ones((flow.data.n, 1))], axis=1)


def relative_z(model, flow):
    """z_ij / (|u_j| |x_i|) of the pair PAIR, u_j = (w_j, b_j), x_i = (x_i, 1)."""
    i, j = PAIR
    u = jnp.append(model.W[j], model.b[j])
    return X1[i] @ u / (jnp.linalg.norm(X1[i]) * jnp.linalg.norm(u))


def solve(kinks, t1, ts, metrics):
    return jf.solve(
        flow,
        net,
        t1=t1,
        ts=ts,
        rtol=RTOL,
        kinks=kinks,
        max_steps=MAX_STEPS,
        metrics=metrics,
        save_models=False,
    )


def main() -> None:
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # (a) The pair's pre-activation on a fine grid around the time it reaches its kink.
    ts = jnp.linspace(5.3, 5.6, 3001)
    z = {
        kinks: np.asarray(solve(kinks, 5.6, ts, {"z": relative_z}).metrics["z"])
        for kinks in ("plain", "min-norm")
    }

    # (b) Steps (accepted and rejected) a solve takes to reach time t: one solve per t.
    # (t1 is an array argument: the sweep compiles once per mode.)
    steps = {}
    for kinks, t1s in (
        ("plain", np.concatenate([np.linspace(0.05, 5.4, 24), [5.42, 5.44, 5.46]])),
        ("min-norm", np.linspace(0.05, 30.0, 30)),
    ):
        rows = []
        for t1 in t1s:
            sol = solve(kinks, float(t1), jnp.array([t1]), {})
            rows.append(
                (float(sol.t_final), int(sol.stats["num_steps"]), sol.status_name)
            )
        steps[kinks] = rows

    style = {
        "plain": dict(color="tab:red", label='kinks="plain"'),
        "min-norm": dict(color="tab:blue", label="default (min-norm)"),
    }
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)

    t = np.asarray(ts)
    for kinks in ("plain", "min-norm"):
        ok = np.isfinite(z[kinks])
        ax.plot(t[ok], z[kinks][ok], lw=1.2, **style[kinks])
    stall = t[np.isfinite(z["plain"])][-1]
    ax.axvline(stall, color="tab:red", ls=":", lw=1)
    ax.text(stall + 0.004, 1e-3, "plain stops:\nmax_steps\nreached", color="tab:red",
            fontsize=9, va="top")  # fmt: skip
    ax.set_yscale("symlog", linthresh=1e-16)
    ax.set_ylim(-1e-1, 1e-1)
    ax.set_xlim(t[0], t[-1])
    ax.set_xlabel("t")
    ax.set_ylabel(r"$z_{ij} / (\|u_j\|\,\|\tilde x_i\|)$  (symlog)")
    ax.set_title(f"(a) pre-activation of point {PAIR[0]} on neuron {PAIR[1]}")
    ax.legend(loc="lower right", fontsize=9)

    for kinks in ("plain", "min-norm"):
        rows = steps[kinks]
        tf = np.array([r[0] for r in rows])
        n = np.array([r[1] for r in rows])
        bx.plot(tf, n, marker="o", ms=3, lw=1.2, **style[kinks])
        failed = [r for r in rows if r[2] != "successful"]
        if failed:
            bx.plot(failed[0][0], failed[0][1], "x", color="tab:red", ms=10, mew=2)
            bx.annotate(
                f"{failed[0][1]} steps, stuck at t = {failed[0][0]:.2f}",
                (failed[0][0], failed[0][1]),
                xytext=(8, -4),
                textcoords="offset points",
                color="tab:red",
                fontsize=9,
            )
    bx.set_yscale("log")
    bx.set_xlabel("t")
    bx.set_ylabel("steps to reach t (accepted + rejected)")
    bx.set_title("(b) cost of reaching time t")
    bx.legend(loc="lower right", fontsize=9)

    fig.savefig(OUT, dpi=110)
    print(f"wrote {OUT}")
    for kinks in ("plain", "min-norm"):
        final = steps[kinks][-1]
        print(f"{kinks:<9} t reached {final[0]:.4g}, {final[1]} steps, {final[2]}")


if __name__ == "__main__":
    main()
