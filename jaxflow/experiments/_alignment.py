r"""Early neuron alignment: Min, Mallada, Vidal, "Early neuron alignment in two-layer
ReLU networks with small initialization" (ICLR 2024, arXiv 2307.12851).

Theorem 1 (as stated in Section 3.1 of arXiv 2307.12851v2, with the constants of its
Appendices C and D): with a small enough initialisation scale $\epsilon$, by

$$t_1 = \frac{16 \log n}{\min\{\zeta, \xi\}\,\sqrt{\mu}\,X_{\min}}$$

every neuron is in its own cone, $w_j \in S_{\operatorname{sign} v_j} \cup S_{\rm dead}$;
after $t_2 = \Theta(\frac1n\log\frac{1}{\sqrt h\epsilon})$ the loss is at most
$L(t_2) / (L(t_2)\,\alpha\,(t - t_2) + 1)$, and the stable rank of $W$ has limsup at
most 2. The theorem is stated for the sum loss: its times are sum-loss times, $t / n$
for a mean-loss run's time $t$. `AlignmentTheory` quotes it and defines each constant.
"""

import math
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .. import events as jf_events, metrics as jf_metrics
from .._dataset import Dataset
from .._relu import cones
from .._results import last_finite
from ..models import TwoLayerReLU


def _cos_rows(X: Float[Array, "n d"], x: Float[Array, " d"]) -> Float[Array, " n"]:
    norms = jnp.linalg.norm(X, axis=-1) * jnp.linalg.norm(x)
    return jnp.where(norms > 0, (X @ x) / jnp.where(norms > 0, norms, 1.0), 0.0)


def _floats(x) -> list:
    """JSON-ready: nan and inf become None."""
    x = np.asarray(x, dtype=float)
    return [None if not np.isfinite(v) else float(v) for v in x.reshape(-1)]


# The fields of `AlignmentTheory` that are one number per data set (and seed).
_THEORY_SCALARS = (
    "mu X_min X_max zeta1 zeta2 zeta xi t1_bound alpha log_eps log_eps_max".split()
)


class AlignmentTheory(eqx.Module):
    r"""The constants of Min, Mallada and Vidal's Theorem 1 (arXiv 2307.12851v2,
    Section 3.1 and Appendices C and D) for one data set (and initialisation).

    The theorem, as stated (Section 3.1): "Given some initialization from (3), if
    $\epsilon = O\big(\frac{1}{\sqrt h}\exp(-\frac{n}{\sqrt\mu}\log n)\big)$, then for
    any regular solution to the gradient flow dynamics (2), we have 1. (Directional
    convergence in early alignment phase) $\exists t_1 = O(\frac{\log n}{\sqrt\mu})$,
    such that $\forall j \in V_+$, either $w_j(t_1) \in S_+$ or
    $w_j(t_1) \in S_{\rm dead}$ [...] 2. (Final convergence and low-rank bias) [...]
    $\exists \alpha > 0$ and $\exists t_2$ with
    $t_1 \le t_2 = \Theta(\frac1n \log\frac{1}{\sqrt h \epsilon})$, such that
    $L(t) \le \frac{L(t_2)}{L(t_2)\alpha(t - t_2) + 1}$, $\forall t \ge t_2$. As
    $t \to \infty$, $\|W(t)\| \to \infty$ and
    $\|W(t)\|_F^2 \le 2\|W(t)\|_2^2 + O(\epsilon)$." The loss is the sum
    $L = \sum_i \ell(y_i, f(x_i))$, so every time here is a sum-loss time ($t / n$
    for a mean-loss run's time $t$). Appendix C makes $t_1$ explicit,
    "$t_1 = \frac{16 \log n}{\min\{\zeta,\xi\}\sqrt\mu X_{\min}}$", and Appendix D
    gives "$\alpha = \frac{(\mu X_{\min})^2}{32 X_{\max}}$".

    **Fields:**

    - `n`: the number of data points.
    - `mu`: the separation $\mu = \min_{i,j} \cos(y_i x_i, y_j x_j)$ (Assumption 1
        needs $\mu > 0$).
    - `x_plus`, `x_minus`: the centres $x_\pm = \sum_{y_i = \pm 1} x_i$.
    - `X_min`, `X_max`: the smallest and largest $\|x_i\|$.
    - `zeta1`: Lemma 8's $\zeta_1$, the largest with $S^{\zeta_1}_{x_\pm} \subset S_\pm$,
        where $S^\zeta_x = \{z : \cos(z, x) \ge \sqrt{1 - \zeta}\}$. The cap around
        $x_\pm$ stays inside $S_\pm$ until it touches a hyperplane $x_i^\perp$, so
        $\zeta_1 = \min_\pm \min_i \cos^2(x_\pm, x_i)$, and 0 if some $x_i$ is on the
        wrong side of a centre. A centre with no data is no constraint.
    - `zeta2`: eq. (26)'s $\zeta_2$, the largest with
        $\cos(w_j(0), x_{-\operatorname{sign} v_j}) \le \sqrt{1 - \zeta_2}$ for every
        neuron: $1 - \max(0, \max_j \cos(w_j(0), x_{-\operatorname{sign} v_j}))^2$
        (`nan` without a model).
    - `zeta`: $\min\{\zeta_1, \zeta_2\}$ ($\zeta_1$ without a model). The paper prints
        "$\zeta := \max\{\zeta_1, \zeta_2\}$"; its proof uses both (19) and (26), which
        hold only for the smaller, so the minimum is taken here.
    - `xi`: Lemma 9's $\xi$, the largest with $|\cos(x_1, x_2)| \le \sqrt{1 - \xi}$ for
        all $x_1$ in the cone spanned by the $y_i x_i$ and $x_2$ outside
        $S_+ \cup S_-$. The nearest such $x_2$ to $x_1$ lies on a hyperplane
        $x_i^\perp$, at $|\cos| = \sqrt{1 - \cos^2(x_1, x_i)}$, and
        $\min_{x_1} |\cos(x_1, x_i)|$ over the cone is reached at a generator: so
        $\xi = \mu^2$ (0 when $\mu \le 0$). Derived here, checked by Monte Carlo in
        the tests.
    - `t1_bound`: $16 \log n / (\min\{\zeta, \xi\}\sqrt{\mu}\,X_{\min})$, in sum-loss
        time; `inf` when $\mu \le 0$ or $\min\{\zeta, \xi\} = 0$ (the theorem does not
        apply).
    - `alpha`: $(\mu X_{\min})^2 / (32 X_{\max})$, the constant of the loss bound
        (sum loss, sum-loss time; `nan` when $\mu \le 0$).
    - `log_eps`: $\log \max_j \|w_j(0)\|$, the natural log of the initialisation
        scale $\epsilon$ with $W_0$ normalised to $\max_j \|[W_0]_{:,j}\| = 1$
        (`nan` without a model).
    - `log_eps_max`: the natural log of the largest $\epsilon$ that eq. (28) allows
        (same normalisation): $\min\big\{\frac{\min\{\mu,\zeta,\xi\}\sqrt\mu X_{\min}}
        {4\sqrt h\, n X_{\max}^2}, \frac{1}{\sqrt h}\exp\big(-\frac{64 n X_{\max}
        \log n}{\min\{\zeta,\xi\}\sqrt\mu X_{\min}}\big)\big\}$ (`nan` without a
        model, $-\infty$ when the theorem does not apply).
    """

    n: int = eqx.field(static=True)
    mu: Float[Array, ""]
    x_plus: Float[Array, " d"]
    x_minus: Float[Array, " d"]
    X_min: Float[Array, ""]
    X_max: Float[Array, ""]
    zeta1: Float[Array, ""]
    zeta2: Float[Array, ""]
    zeta: Float[Array, ""]
    xi: Float[Array, ""]
    t1_bound: Float[Array, ""]
    alpha: Float[Array, ""]
    log_eps: Float[Array, ""]
    log_eps_max: Float[Array, ""]

    def as_dict(self) -> dict:
        """The scalars as Python floats for JSON (lists, one per seed, when stacked
        over seeds; nan and inf as None)."""
        out = {}
        for name in _THEORY_SCALARS:
            x = _floats(getattr(self, name))
            out[name] = x[0] if np.ndim(getattr(self, name)) == 0 else x
        return out | {"n": self.n}


def alignment_theory(
    data: Dataset, model: TwoLayerReLU | None = None
) -> AlignmentTheory:
    """Min, Mallada and Vidal's Theorem 1 constants for `data` (and the initial
    `model`, for $\\zeta_2$ and the requirement on $\\epsilon$); see
    `AlignmentTheory` for the statement and each constant.

    **Arguments:**

    - `data`: a `jaxflow.Dataset` with labels $\\pm 1$.
    - `model`: the initial `jaxflow.models.TwoLayerReLU`, or `None`.

    **Returns:** an `AlignmentTheory`.

    !!! Example

        ```python
        theory = jf.experiments.alignment_theory(data, net)
        theory.mu, theory.t1_bound
        ```
    """
    if not isinstance(data, Dataset):
        raise ValueError(
            f"alignment_theory: `data` must be a jaxflow.Dataset, got {type(data)}."
        )
    X, y = data.X, data.y
    norms = jnp.linalg.norm(X, axis=1)
    signs = jnp.sign(y)

    def cap(centre, sign):
        if not bool(jnp.any(signs == sign)):
            return jnp.array(1.0, X.dtype)
        c = _cos_rows(X, centre)
        right = jnp.all(jnp.where(signs == sign, c > 0, c < 0))
        return jnp.where(right, jnp.min(c**2), 0.0)

    zeta1 = jnp.minimum(cap(data.x_plus, 1.0), cap(data.x_minus, -1.0))
    mu = data.separation()
    X_min, X_max = jnp.min(norms), jnp.max(norms)
    xi = jnp.where(mu > 0, mu**2, 0.0)
    if model is None:
        zeta2 = log_eps = jnp.array(jnp.nan, X.dtype)
        zeta = zeta1
    else:
        wrong = jnp.where(
            model.v[:, None] > 0, data.x_minus[None, :], data.x_plus[None, :]
        )
        cos = jnp.sum(model.W * wrong, axis=1) / jnp.maximum(
            jnp.linalg.norm(model.W, axis=1) * jnp.linalg.norm(wrong, axis=1),
            jnp.finfo(X.dtype).tiny,
        )
        zeta2 = 1.0 - jnp.maximum(jnp.max(cos), 0.0) ** 2
        zeta = jnp.minimum(zeta1, zeta2)
        log_eps = jnp.log(jnp.max(jnp.linalg.norm(model.W, axis=1)))
    gamma = jnp.minimum(zeta, xi)
    applies = (mu > 0) & (gamma > 0)
    root_mu = jnp.sqrt(jnp.maximum(mu, 0.0))
    safe = jnp.where(applies, gamma * root_mu * X_min, 1.0)
    bound = jnp.where(applies, 16.0 * math.log(data.n) / safe, jnp.inf)
    alpha = jnp.where(mu > 0, (mu * X_min) ** 2 / (32.0 * X_max), jnp.nan)
    if model is None:
        log_eps_max = jnp.array(jnp.nan, X.dtype)
    else:
        h, n = model.W.shape[0], data.n
        first = jnp.log(
            jnp.minimum(jnp.minimum(mu, zeta), xi)
            * root_mu
            * X_min
            / (4.0 * math.sqrt(h) * n * X_max**2)
        )
        second = -0.5 * math.log(h) - 64.0 * n * X_max * math.log(n) / safe
        log_eps_max = jnp.where(applies, jnp.minimum(first, second), -jnp.inf)
    return AlignmentTheory(
        n=data.n,
        mu=mu,
        x_plus=data.x_plus,
        x_minus=data.x_minus,
        X_min=X_min,
        X_max=X_max,
        zeta1=zeta1,
        zeta2=zeta2,
        zeta=zeta,
        xi=xi,
        t1_bound=bound,
        alpha=alpha,
        log_eps=log_eps,
        log_eps_max=log_eps_max,
    )


def alignment_events(delta: float = 1e-3) -> dict[str, jf_events.AbstractEvent]:
    """The events of an alignment study, none terminal:

    - `"aligned"`: per neuron, $\\tau_j$, the first time $\\cos(w_j, x_{\\operatorname{sign}
        v_j}) \\ge 1 - \\delta$ (`jaxflow.events.Aligned`);
    - `"in_cone"`: per neuron, the first time $w_j \\in S_+ \\cup S_- \\cup S_{\\rm dead}$
        (`jaxflow.events.InCone`);
    - `"t1"`: the first time every neuron is in its own cone, Theorem 1's event
        (`jaxflow.events.AllInCones`);
    - `"t2"`: the loss drop, the first time the loss is half its initial value
        (`jaxflow.events.LossFraction(0.5)`);
    - `"norm_growth"`: the first time $\\|W\\|_F$ is twice its initial value
        (`jaxflow.events.NormGrowth(2.0)`).
    """
    return {
        "aligned": jf_events.Aligned(delta),
        "in_cone": jf_events.InCone(),
        "t1": jf_events.AllInCones(),
        "t2": jf_events.LossFraction(0.5),
        "norm_growth": jf_events.NormGrowth(2.0),
    }


def alignment_metrics(model: TwoLayerReLU, flow) -> dict:
    """`jaxflow.metrics.default_metrics` plus `cos_own` (per neuron, with its own
    centre) and the two-phase diagnostic, `norm_change` and `direction_change`."""
    return jf_metrics.default_metrics(model, flow) | {
        "cos_own": jf_metrics.cos_own,
        "norm_change": jf_metrics.norm_change,
        "direction_change": jf_metrics.direction_change,
    }


def _quantiles(x) -> dict[str, float | int]:
    x = np.asarray(x, dtype=float)
    finite = x[np.isfinite(x)]
    out: dict[str, float | int] = {"reached": int(finite.size), "of": int(x.size)}
    if finite.size:
        q = np.quantile(finite, [0.0, 0.1, 0.5, 0.9, 1.0])
        out |= dict(zip(("min", "q10", "median", "q90", "max"), map(float, q)))
    return out


# The metrics whose last finite value per seed the summary reports.
_FINAL_METRICS = (
    "loss stable_rank spectral_norm_sq align_plus align_minus frac_plus frac_minus "
    "frac_dead conserved_drift"
).split()


# The first times the summary reports, per seed and over seeds.
_TIMES = ("t1", "t2", "norm_growth", "tau_max")


def alignment_summary(
    ens,
    theory: AlignmentTheory,
    data: Dataset | None = None,
    *,
    reduction: Literal["mean", "sum"] = "mean",
) -> dict:
    r"""What an alignment study found, per seed and over seeds, beside the theory; the
    content of `summary.json` written by `jaxflow align`.

    **Arguments:**

    - `ens`: a `jaxflow.Ensemble` solved with `alignment_events()` and
        `alignment_metrics` (or at least the metrics `loss`, `stable_rank`,
        `spectral_norm_sq`, `align_plus`, `align_minus`).
    - `theory`: `alignment_theory(data, initial models)`, the models stacked over the
        seeds (`eqx.filter_vmap`), or computed for the data alone.
    - `data`: the `Dataset` solved on. With it, the neurons dead at the end (in
        $S_{\rm dead}$, `ens.final`) are counted per seed and left out of `tau_max`:
        a dead neuron never aligns. Without it, `tau_max` waits for every neuron.
    - `reduction`: the reduction of the loss `ens` was solved with, `"mean"` (as
        `jaxflow align` does) or `"sum"`.

    Times are reported in two units. Min et al. state their theorems for the sum loss
    $\sum_i \ell_i$, whose flow is the mean loss's run $n$ times faster: a mean-loss
    time $t$ is the sum-loss time $t / n$. `times` and each seed's times are in
    mean-loss time; `times_sum_loss` and each seed's `sum_loss` in sum-loss time, the
    theorem's unit, in which `t1_bound` is stated and `t1_over_bound` is taken.

    **Returns:** a dict with `theory` (per-seed arrays where they depend on the
    initialisation), `time_units`, `times` (quantiles over seeds of `t1`, `t2`,
    `norm_growth`, the largest per-neuron alignment time `tau_max`, and
    `t1_over_bound`), `times_sum_loss` (the same times in sum-loss time), and `seeds`
    (one dict per seed: status, those times in both units, the per-neuron times, the
    final metrics).
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(
            "alignment_summary: `reduction` must be 'mean' or 'sum' (the loss's "
            f"reduction), got {reduction!r}."
        )
    # Event times in the run's unit, as mean-loss times: t_mean = n t_sum.
    to_mean = float(theory.n) if reduction == "sum" else 1.0
    bound = np.broadcast_to(np.asarray(theory.t1_bound, float), (ens.num_seeds,))
    times = {k: to_mean * np.asarray(v, float) for k, v in ens.event_times.items()}
    aligned = times.get("aligned")
    dead = None
    if data is not None:
        dead = np.asarray(jax.vmap(lambda m: cones(m, data)[2])(ens.final))
    tau_max = np.full(ens.num_seeds, np.nan)
    if aligned is not None:
        counted = np.isfinite(aligned) | (False if dead is None else dead)
        tau_max = np.where(
            counted.all(axis=1),
            np.max(np.where(np.isfinite(aligned), aligned, -np.inf), axis=1),
            np.nan,
        )
        tau_max = np.where(np.isneginf(tau_max), np.nan, tau_max)
    firsts = {name: times.get(name, np.full(ens.num_seeds, np.nan)) for name in _TIMES}
    firsts["tau_max"] = tau_max
    ratio = firsts["t1"] / theory.n / bound  # in the theorem's unit, sum-loss time
    final = {}
    for name in _FINAL_METRICS:
        if name in ens.metrics:
            final[name] = last_finite(np.asarray(ens.metrics[name], float))
    scalars = theory.as_dict()
    seeds = []
    for s in range(ens.num_seeds):
        row = {
            "seed": int(ens.seeds[s]),
            "status": str(ens.status_name[s]),
            "t_final": float(ens.t_final[s]),
            **{k: _floats(x[s])[0] for k, x in firsts.items()},
            "t1_bound": _floats(bound[s])[0],
            "t1_over_bound": _floats(ratio[s])[0],
            "sum_loss": {k: _floats(x[s] / theory.n)[0] for k, x in firsts.items()},
            "dead_at_end": None if dead is None else int(dead[s].sum()),
            "num_steps": int(ens.stats["num_steps"][s]),
            "num_rejected_steps": int(ens.stats["num_rejected_steps"][s]),
        }
        for name in ("aligned", "in_cone"):
            if name in times:
                row[name] = _floats(times[name][s])
        row["final"] = {k: _floats(v[s])[0] for k, v in final.items()}
        seeds.append(row)
    return {
        "theory": scalars,
        "time_units": {
            "times": "mean-loss time t",
            "times_sum_loss": f"sum-loss time t / n (n = {theory.n}), the theorem's",
        },
        "times": {k: _quantiles(x) for k, x in firsts.items()}
        | {"t1_over_bound": _quantiles(ratio)},
        "times_sum_loss": {k: _quantiles(x / theory.n) for k, x in firsts.items()},
        "accuracy": {
            "rtol": float(ens.rtol),
            "statuses": sorted(set(map(str, ens.status_name))),
            "max_conserved_drift": (
                float(np.nanmax(final["conserved_drift"]))
                if "conserved_drift" in final
                else None
            ),
            "steps_accepted_max": int(np.max(ens.stats["num_accepted_steps"])),
            "steps_rejected_max": int(np.max(ens.stats["num_rejected_steps"])),
        },
        "seeds": seeds,
    }
