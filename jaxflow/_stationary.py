r"""Where a flow ended: polish the point to a stationary point, then classify it.

A gradient flow stops (to a tolerance) at a stationary point; which kind decides what
the run found. For a `jaxflow.models.TwoLayerReLU` the loss is smooth on each
activation pattern, so the point is polished by Newton's method on the loss restricted
to the pattern at the flow's end, and its Hessian there is the second-order evidence.
Kinks add escapes a Hessian cannot see: a neuron placed, at a small size, in an
activation cone no living neuron occupies changes the loss at second order in its size
by $\pm\delta^2 G(u)$, with

$$G(u) = \sum_i r_i\, \sigma(\langle u, \tilde x_i\rangle), \qquad
r_i = \partial L / \partial f(x_i),$$

Boursier and Flammarion's early-alignment functional. A stationary point where
$\max_{\|u\| = 1} |G(u)| > 0$ is a saddle, and the maximiser is its escape direction.
Every verdict is checked by re-solving the flow briefly from the perturbed point.
"""

import dataclasses
import math
from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optimistix as optx
from jax.flatten_util import ravel_pytree

from . import _kinks
from ._flow import GradientFlow
from .metrics._metrics import grad_norm, kink_scale, strictly_active


Kind = Literal["global minimum", "local minimum", "saddle", "not stationary"]


@dataclasses.dataclass(frozen=True)
class Polished:
    """The result of `jaxflow.polish`.

    **Fields:**

    - `model`: the polished point.
    - `steps`: Newton steps taken; `converged`: whether Newton met its tolerance.
    - `grad_norm_before`, `grad_norm_after`: the (min-norm) gradient norm at the
        flow's end and at the polished point.
    - `distance`: $\\|\\theta_{\\rm polished} - \\theta_{\\rm end}\\| / \\|\\theta_{\\rm
        end}\\|$, how far the flow's end was from the stationary point.
    - `pattern_kept`: whether the polished point has the activation pattern it was
        polished on (always true for models without kinks).
    """

    model: Any
    steps: int
    converged: bool
    grad_norm_before: float
    grad_norm_after: float
    distance: float
    pattern_kept: bool


@dataclasses.dataclass(frozen=True)
class Escape:
    """A perturbation that leaves a stationary point, and what a short re-solve from it
    did.

    **Fields:**

    - `kind`: `"negative curvature"` (along the Hessian's lowest eigenvector) or
        `"empty cone"` (a small neuron placed in an activation cone).
    - `direction`: the perturbation, a model-shaped PyTree of unit norm (for
        `"empty cone"` only the re-placed neuron is nonzero).
    - `size`: the perturbation's norm $\\delta$.
    - `rate`: its predicted strength: minus the eigenvalue, or $|G(u)|$.
    - `loss_decrease`: $L^* - L$ at the end of the re-solve (positive: escaped).
    - `time`: how long the re-solve ran; `status`: how the re-solve ended
        (`jaxflow.RESULTS` name: `"successful"`, else the loss decrease is not evidence).
    - `neuron`, `active`: for `"empty cone"`, the neuron re-placed and the data points
        the new neuron is active on; `u`: its unit direction $(w, b)$; `sign`: the sign
        of its output weight.
    """

    kind: str
    direction: Any
    size: float
    rate: float
    loss_decrease: float
    time: float
    status: str
    neuron: int | None = None
    active: tuple[int, ...] | None = None
    u: np.ndarray | None = None
    sign: float | None = None


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The result of `jaxflow.classify`.

    **Fields:**

    - `kind`: `"global minimum"`, `"local minimum"`, `"saddle"` or
        `"not stationary"`.
    - `loss`: the loss at the polished point; `min_loss`: the known global minimum
        value it was compared with (or `None`).
    - `grad_norm`: the (min-norm) gradient norm there.
    - `polished`: the `Polished` record.
    - `eigenvalues`: the lowest eigenvalues of the Hessian on the activation pattern,
        ascending (all of them for small models; from Lanczos for large ones).
    - `escape`: the `Escape` found, or `None`.
    - `evidence`: the reasons for the verdict, in words.
    """

    kind: Kind
    loss: float
    min_loss: float | None
    grad_norm: float
    polished: Polished
    eigenvalues: np.ndarray
    escape: Escape | None
    evidence: str

    def as_dict(self) -> dict:
        """The verdict as plain JSON-ready values (no models)."""
        out = {
            "kind": self.kind,
            "loss": self.loss,
            "min_loss": self.min_loss,
            "grad_norm": self.grad_norm,
            "polish": {
                k: getattr(self.polished, k)
                for k in (
                    "steps",
                    "converged",
                    "grad_norm_before",
                    "grad_norm_after",
                    "distance",
                    "pattern_kept",
                )  # fmt: skip
            },
            "lowest_eigenvalues": [float(x) for x in self.eigenvalues[:5]],
            "evidence": self.evidence,
            "escape": None,
        }
        if self.escape is not None:
            e = self.escape
            out["escape"] = {
                "kind": e.kind,
                "size": e.size,
                "rate": e.rate,
                "loss_decrease": e.loss_decrease,
                "time": e.time,
                "status": e.status,
                "neuron": e.neuron,
                "active": None if e.active is None else list(e.active),
                "u": None if e.u is None else [float(x) for x in e.u],
                "sign": e.sign,
            }
        return out


def _pattern(flow: GradientFlow, model):
    """The activation pattern `(n, width)` of a `TwoLayerReLU` (pairs on a kink count
    inactive), or `None` for a model without kinks."""
    if not _kinks.supports(flow, model):
        return None
    X = flow.data.X
    return strictly_active(model.preactivations(X), X, model.W, model.b)


def restricted_loss(flow: GradientFlow, model, active=None):
    r"""The loss with the activation pattern held at `active` (`(n, width)` booleans):
    $f(x_i) = \sum_j v_j\, [\text{active}_{ij}]\, (\langle w_j, x_i\rangle + b_j)$, a
    smooth function of the parameters that equals the loss near any point with that
    pattern. With `active=None`, or for a model without kinks, the loss itself."""
    if active is None:
        return flow(model)
    z = model.preactivations(flow.data.X)
    return flow.loss.of_predictions(jnp.where(active, z, 0.0) @ model.v, flow.data.y)


def _on_device(model):
    """`model` with its numpy arrays (say, from `Ensemble.final`) as JAX arrays."""
    return jax.tree.map(
        lambda x: jnp.asarray(x) if isinstance(x, np.ndarray) else x, model
    )


def _flat(model):
    params, static = eqx.partition(model, eqx.is_inexact_array)
    flat, unravel = ravel_pytree(params)
    return flat, lambda x: eqx.combine(unravel(x), static)


def _living(flow: GradientFlow, model):
    """Which neurons to differentiate: `(alive, keep, active)`, two boolean `(width,)`
    masks and the activation pattern `(n, width)`, or `(None, None, None)` for a model
    without kinks.

    `alive` marks the neurons active on some point. The loss on the activation pattern
    does not depend on the other neurons' parameters at all (a zero block of its
    Hessian), so polishing and the Hessian work on the living neurons: at width 1000
    a few hundred neurons instead of 3000 parameters. `keep` adds dead neurons up to
    one of eight sizes per octave (at most 1/8 more), so that seeds with different
    numbers of living neurons share a few compiled shapes.
    """
    active = _pattern(flow, model)
    if active is None:
        return None, None, None
    alive = np.asarray(jnp.any(active, axis=0))
    count = max(int(alive.sum()), 8)
    step = 1 << max(int(np.log2(count)) - 3, 0)
    size = min(alive.size, -(-count // step) * step)
    keep = alive.copy()
    keep[np.flatnonzero(~alive)[: size - alive.sum()]] = True
    return alive, keep, active


def _neurons_at(model, keep):
    """`model` with only the neurons where `keep`."""
    return eqx.tree_at(
        lambda m: (m.W, m.v, m.b), model, (model.W[keep], model.v[keep],
        None if model.b is None else model.b[keep]),
        is_leaf=lambda x: x is None,
    )  # fmt: skip


def _with_neurons_at(model, keep, sub):
    """`model` with the neurons where `keep` replaced by those of `sub`."""
    index = np.flatnonzero(keep)
    return eqx.tree_at(
        lambda m: (m.W, m.v, m.b), model, (model.W.at[index].set(sub.W),
        model.v.at[index].set(sub.v),
        None if model.b is None else model.b.at[index].set(sub.b)),
        is_leaf=lambda x: x is None,
    )  # fmt: skip


@eqx.filter_jit
def _newton_jit(flow, model, active, points, neurons, rtol, max_steps):
    x0, rebuild = _flat(model)
    inputs = None if active is None else _kinks.ReLUProblem(flow, model).inputs

    def kinks(x):
        U = _kinks.neurons(rebuild(x))
        return jnp.sum(inputs[points] * U[neurons], axis=1)

    def lagrangian_gradient(y, _):
        x, lam = y
        gx = jax.grad(
            lambda x: restricted_loss(flow, rebuild(x), active) + lam @ kinks(x)
        )(x)
        return gx, kinks(x)

    def gradient(x, _):
        return jax.grad(lambda y: restricted_loss(flow, rebuild(y), active))(x)

    solver = optx.Newton(rtol=rtol, atol=rtol, linear_solver=lx.SVD())
    if points.size:
        y0 = (x0, jnp.zeros(points.size))
        sol = optx.root_find(
            lagrangian_gradient, solver, y0, max_steps=max_steps, throw=False
        )
        x = sol.value[0]
    else:
        sol = optx.root_find(gradient, solver, x0, max_steps=max_steps, throw=False)
        x = sol.value
    x = jnp.where(jnp.all(jnp.isfinite(x)), x, x0)
    return x, sol.stats["num_steps"], sol.result == optx.RESULTS.successful


def _newton(flow, model, active, points, neurons, rtol, max_steps):
    """Newton's method on the restricted loss (with the kink pairs `(points,
    neurons)` held by multipliers): the flat result, steps, whether it converged.
    Compiled once per shape."""
    x, steps, converged = _newton_jit(
        flow, model, active, jnp.asarray(points), jnp.asarray(neurons), rtol, max_steps
    )
    return x, int(steps), bool(converged)


def polish(
    flow: GradientFlow, model, *, rtol: float = 1e-14, max_steps: int = 64
) -> Polished:
    r"""Converge from `model` (say, the end of a flow) to the nearby stationary point by
    Newton's method on the loss restricted to the current activation pattern
    (`optimistix.Newton` on its gradient, with an SVD solve: the Hessian of an
    over-parameterised net is singular along its symmetries, and the SVD's
    least-norm step does not move along them).

    A living neuron sitting on the kink of a point (within $10^{-10}$ relative),
    as a sliding flow leaves it, is held there: each such pair is a constraint
    $\langle u_j, \tilde x_i\rangle = 0$ with a Lagrange multiplier (Newton on the
    Lagrangian's gradient and the constraints), since neither side's gradient
    vanishes at such a point. Neurons active on no point are not moved. The
    certificate is the min-norm gradient norm at the result (`grad_norm_after`).

    **Arguments:**

    - `flow`: the `jaxflow.GradientFlow`.
    - `model`: the starting point.
    - `rtol`: Newton's relative (and absolute) tolerance.
    - `max_steps`: the most Newton steps.

    **Returns:** a `Polished` record: the point, its gradient norm before and after,
    and the distance moved.
    """
    if not 0 < rtol < 1:
        raise ValueError(f"polish: `rtol` must be in (0, 1), got {rtol!r}.")
    model = _on_device(model)
    full, (alive, keep, full_active) = model, _living(flow, model)
    active = None
    points = neurons = np.zeros(0, int)
    if alive is not None and not alive.any():  # nothing to move
        g = float(grad_norm(model, flow))
        return Polished(model, 0, True, g, g, 0.0, True)
    if alive is not None:
        # Newton on the living neurons only (neurons active on no point have no
        # gradient on the pattern, and are not moved).
        model = _neurons_at(model, keep)
        active = full_active[:, keep]
        # Living neurons' pairs on a kink: constraints z_ij = 0, with multipliers.
        X = flow.data.X
        scale = kink_scale(X, model.W, model.b)
        on_kink = np.abs(model.preactivations(X)) <= _kinks.RELEASE * scale
        points, neurons = np.nonzero(on_kink & alive[keep][None, :])
    x, steps, converged = _newton(flow, model, active, points, neurons, rtol, max_steps)
    if alive is not None:
        # Only the living neurons are written back: the SVD step leaves rounding on
        # the others (it could move a dead neuron sitting on a kink off it).
        living = _neurons_at(_flat(model)[1](x), alive[keep])
        polished, model = _with_neurons_at(full, alive, living), full
        active = full_active
    else:
        polished = _flat(model)[1](x)
    x0 = _flat(model)[0]
    kept = True if active is None else bool(jnp.all(_pattern(flow, polished) == active))
    before = float(grad_norm(model, flow))
    after = float(grad_norm(polished, flow))
    if not kept or after > before:  # Newton left the piece: keep the flow's end
        polished, after = model, before
    return Polished(
        model=polished,
        steps=steps,
        converged=converged,
        grad_norm_before=before,
        grad_norm_after=after,
        distance=float(jnp.linalg.norm(_flat(polished)[0] - x0) / jnp.linalg.norm(x0)),
        pattern_kept=kept,
    )


def _loss_of_flat(flow, model, active):
    x0, rebuild = _flat(model)
    return x0, lambda x: restricted_loss(flow, rebuild(x), active)


@eqx.filter_jit
def _hessian(flow, model, active):
    x0, loss = _loss_of_flat(flow, model, active)
    return jax.hessian(loss)(x0)


@eqx.filter_jit
def _hvp(flow, model, active, v):
    x0, loss = _loss_of_flat(flow, model, active)
    return jax.jvp(jax.grad(loss), (x0,), (v,))[1]


def hessian_eigenvalues(
    flow: GradientFlow, model, *, k: int = 6, exact_max: int = 3000, key=None
) -> tuple[np.ndarray, np.ndarray]:
    r"""The lowest eigenvalues of the Hessian of the loss restricted to the activation
    pattern at `model`, ascending, with the eigenvector of the lowest (flat).

    For a `TwoLayerReLU` only the living neurons' parameters are differentiated (the
    others are a zero block, whose zero eigenvalues are added). Exact (`jax.hessian`,
    `eigh`) up to `exact_max` such parameters; above that, the Lanczos method on
    Hessian-vector products (`min(3k + 20, size)` steps with full
    reorthogonalisation, started from a random vector from `key`): the lowest is
    accurate, and a repeated eigenvalue appears once.
    """
    full, (alive, keep, active) = model, _living(flow, model)
    if alive is not None:
        model, active = _neurons_at(model, keep), active[:, keep]
    x0, rebuild = _flat(model)

    def in_full(values, vector):
        """Add the zero eigenvalues of the neurons left out, and put the eigenvector
        back in the full model's layout."""
        if alive is None:
            return values, vector
        zeros = _flat(full)[0].size - x0.size
        values = np.sort(np.concatenate([values, np.zeros(min(zeros, k))]))[:k]
        embedded = _with_neurons_at(
            jax.tree.map(jnp.zeros_like, full), keep, rebuild(jnp.asarray(vector))
        )
        return values, np.asarray(_flat(embedded)[0])

    size = x0.size
    if alive is not None and not alive.any():  # no living neuron: the Hessian is 0
        vector = np.zeros(_flat(full)[0].size)
        vector[0] = 1.0
        return np.zeros(min(k, vector.size)), vector
    if size <= exact_max:
        H = _hessian(flow, model, active)
        values, vectors = np.linalg.eigh(np.asarray((H + H.T) / 2))
        return in_full(values[:k], vectors[:, 0])

    def hvp(v):
        return _hvp(flow, model, active, v)

    key = jax.random.key(0) if key is None else key
    steps = min(3 * k + 20, size)
    q = np.asarray(jax.random.normal(key, (size,)), dtype=float)
    Q = [q / np.linalg.norm(q)]
    alphas, betas = [], []
    for i in range(steps):
        w = np.asarray(hvp(jnp.asarray(Q[i])))
        alphas.append(float(w @ Q[i]))
        for q_prev in Q:  # full reorthogonalisation
            w = w - (w @ q_prev) * q_prev
        beta = float(np.linalg.norm(w))
        if beta < 1e-12 * max(1.0, abs(alphas[-1])) or i == steps - 1:
            break
        betas.append(beta)
        Q.append(w / beta)
    T = np.diag(alphas) + np.diag(betas[: len(alphas) - 1], 1)
    T = T + np.diag(betas[: len(alphas) - 1], -1)
    values, vectors = np.linalg.eigh(T)
    return in_full(values[:k], np.stack(Q[: len(alphas)], axis=1) @ vectors[:, 0])


def _residuals(flow: GradientFlow, model):
    """$r_i = \\partial L / \\partial f(x_i)$."""
    pred = model(flow.data.X)
    return jax.grad(lambda p: flow.loss.of_predictions(p, flow.data.y))(pred)


def _inputs(flow, model) -> np.ndarray:
    X = np.asarray(flow.data.X)
    if model.b is not None:
        X = np.concatenate([X, np.ones((X.shape[0], 1))], axis=1)
    return X


def best_new_neuron(
    flow: GradientFlow, model, *, samples: int = 4096, key=None
) -> tuple[np.ndarray, float, np.ndarray]:
    r"""The unit direction $u = (w, b)$ maximising $|G(u)|$ (see the module), with
    $G(u)$ and the pattern of points it is active on.

    Within one activation cone $G$ is linear, $G(u) = \langle g_P, u\rangle$ with
    $g_P = \sum_{i \in P} r_i \tilde x_i$, so its maximum there is at $\pm g_P/\|g_P\|$
    when that lies in the cone. Cones are found from `samples` random directions (a
    fine grid on the circle when $(w, b)$ is 2-D); each is then refined to its
    $\pm g_P / \|g_P\|$ when that keeps the pattern.
    """
    X = _inputs(flow, model)
    r = np.asarray(_residuals(flow, model))
    dim = X.shape[1]
    if dim == 2:
        angle = np.linspace(-np.pi, np.pi, 3600, endpoint=False)
        U = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    else:
        key = jax.random.key(0) if key is None else key
        U = np.array(jax.random.normal(key, (samples, dim)), dtype=float)
        U /= np.linalg.norm(U, axis=1, keepdims=True)
    P = U @ X.T > 0
    g = (P * r[None, :]) @ X  # g_P per sample
    nonzero = np.linalg.norm(g, axis=1) > 0
    g, P = g[nonzero], P[nonzero]
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    refined = np.concatenate([g, -g])
    keeps = (refined @ X.T > 0) == np.concatenate([P, P])
    U = np.concatenate([U, refined[keeps.all(axis=1)]])
    G = np.maximum(U @ X.T, 0.0) @ r
    best = int(np.argmax(np.abs(G)))
    return U[best], float(G[best]), U[best] @ X.T > 0


def _resolve(flow, model, time, rtol, kinks):
    from ._solve import solve

    sol = solve(
        flow, model, t1=time, ts=jnp.array([time]), rtol=rtol, kinks=kinks,
        metrics={}, save_models=False, max_steps=200_000,
    )  # fmt: skip
    return float(flow(sol.final)), str(sol.status_name)


def _escape_neuron(flow, model, loss, size, time, rtol):
    u, G, active = best_new_neuron(flow, model)
    if G == 0.0:
        return None
    U = _kinks.neurons(model)
    j = int(jnp.argmin(jnp.abs(model.v) * jnp.linalg.norm(U, axis=1)))
    sign = -math.copysign(1.0, G)
    d = model.W.shape[1]
    new_u = size * jnp.asarray(u)
    perturbed = eqx.tree_at(
        lambda m: (m.W, m.v),
        model,
        (model.W.at[j].set(new_u[:d]), model.v.at[j].set(sign * size)),
    )
    if model.b is not None:
        perturbed = eqx.tree_at(lambda m: m.b, perturbed, model.b.at[j].set(new_u[d]))
    end, status = _resolve(flow, perturbed, time, rtol, "auto")
    x0, _ = _flat(model)
    x1, _ = _flat(perturbed)
    delta = x1 - x0
    direction = _flat(model)[1](delta / jnp.linalg.norm(delta))
    return Escape(
        kind="empty cone",
        direction=direction,
        size=size,
        rate=abs(G),
        loss_decrease=loss - end,
        time=time,
        status=status,
        neuron=j,
        active=tuple(int(i) for i in np.flatnonzero(active)),
        u=np.asarray(u),
        sign=sign,
    )


def _escape_curvature(flow, model, vector, value, loss, size, time, rtol):
    x0, rebuild = _flat(model)
    best = None
    for s in (1.0, -1.0):
        end, status = _resolve(
            flow, rebuild(x0 + s * size * vector), time, rtol, "auto"
        )
        if best is None or end < best[0]:
            best = (end, s, status)
    return Escape(
        kind="negative curvature",
        direction=rebuild(best[1] * jnp.asarray(vector)),
        size=size,
        rate=-float(value),
        loss_decrease=loss - best[0],
        time=time,
        status=best[2],
    )


def classify(
    flow: GradientFlow,
    model,
    *,
    min_loss: float | None = None,
    gtol: float = 1e-8,
    loss_tol: float = 1e-9,
    curvature_tol: float = 1e-7,
    escape_size: float = 1e-3,
    escape_time: float = 100.0,
    rtol: float = 1e-10,
    polish_first: bool = True,
) -> Verdict:
    r"""What kind of point `model` is: a global minimum, a local minimum, a saddle, or
    not stationary at all, with the evidence.

    1. Polish (`jaxflow.polish`) and measure the (min-norm) gradient norm: above
        `gtol` it is `"not stationary"`.
    2. With a known global minimum value `min_loss` (0 for a net that can
        interpolate), a loss within `loss_tol` (relative to $\max(1, |{\rm min\_loss}|)$)
        of it is a `"global minimum"`.
    3. Otherwise the Hessian on the activation pattern: an eigenvalue below
        $-$`curvature_tol` $\cdot \max(1, |\lambda|_{\max})$ makes a strict saddle.
        The escape is checked by re-solving the flow for `escape_time` from the point
        moved by `escape_size` along the eigenvector.
    4. For a `TwoLayerReLU`, the empty-cone test: the smallest neuron is re-placed by a
        neuron of size `escape_size` along the maximiser of $|G|$, with the output sign
        that lowers the loss, and the flow is re-solved for `escape_time`. A loss
        decrease beyond `loss_tol` makes a saddle.
    5. Else a `"local minimum"` (with `min_loss=None`, possibly the global one).

    **Arguments:** as above; `rtol` is the re-solves' tolerance; `polish_first=False`
    classifies `model` as it is.

    **Returns:** a `Verdict`.
    """
    for name, value in (
        ("gtol", gtol), ("loss_tol", loss_tol), ("curvature_tol", curvature_tol),
        ("escape_size", escape_size), ("escape_time", escape_time), ("rtol", rtol),
    ):  # fmt: skip
        if not (isinstance(value, (int, float)) and value > 0):
            raise ValueError(
                f"classify: `{name}` must be a positive number, got {value!r}."
            )
    model = _on_device(model)
    if polish_first:
        polished = polish(flow, model)
    else:
        g = float(grad_norm(model, flow))
        polished = Polished(model, 0, False, g, g, 0.0, True)
    point = polished.model
    loss = float(flow(point))
    g = polished.grad_norm_after
    values, vector = hessian_eigenvalues(flow, point)
    values = np.asarray(values)
    common = dict(
        loss=loss, min_loss=min_loss, grad_norm=g, polished=polished, eigenvalues=values
    )
    if not g <= gtol:
        return Verdict(
            kind="not stationary",
            escape=None,
            evidence=f"gradient norm {g:.3g} > gtol {gtol:g} after polishing",
            **common,
        )
    if min_loss is not None and loss - min_loss <= loss_tol * max(1.0, abs(min_loss)):
        return Verdict(
            kind="global minimum",
            escape=None,
            evidence=(
                f"gradient norm {g:.3g}; loss {loss:.12g} within {loss_tol:g} of the "
                f"global minimum {min_loss:g}"
            ),
            **common,
        )
    scale = max(1.0, float(np.max(np.abs(values))))
    if values[0] < -curvature_tol * scale:
        escape = _escape_curvature(
            flow, point, vector, values[0], loss, escape_size, escape_time, rtol
        )
        return Verdict(
            kind="saddle",
            escape=escape,
            evidence=(
                f"gradient norm {g:.3g}; Hessian eigenvalue {values[0]:.4g} < 0; "
                f"re-solve from {escape_size:g} along it lowers the loss by "
                f"{escape.loss_decrease:.4g} in t={escape_time:g}"
            ),
            **common,
        )
    escape = None
    if _kinks.supports(flow, point):
        escape = _escape_neuron(flow, point, loss, escape_size, escape_time, rtol)
        if (
            escape is not None
            and escape.status == "successful"
            and escape.loss_decrease > loss_tol * max(1.0, loss)
        ):
            return Verdict(
                kind="saddle",
                escape=escape,
                evidence=(
                    f"gradient norm {g:.3g}; Hessian on the pattern has no negative "
                    f"eigenvalue (lowest {values[0]:.3g}), but a neuron of size "
                    f"{escape_size:g} active on points {list(escape.active)} "
                    f"(|G| = {escape.rate:.4g}) lowers the loss by "
                    f"{escape.loss_decrease:.4g} in t={escape_time:g}"
                ),
                **common,
            )
    gap = (
        "" if min_loss is None else f", {loss - min_loss:.4g} above the global minimum"
    )
    tried = (
        ""
        if escape is None
        else (
            f"; the best new neuron (|G| = {escape.rate:.3g}) changed the loss by "
            f"{-escape.loss_decrease:.3g}"
            + (
                ""
                if escape.status == "successful"
                else f" (its re-solve ended {escape.status}: no evidence)"
            )
        )
    )
    return Verdict(
        kind="local minimum",
        escape=escape,
        evidence=(
            f"gradient norm {g:.3g}; lowest Hessian eigenvalue {values[0]:.3g} "
            f">= -{curvature_tol:g}{tried}{gap}"
        ),
        **common,
    )
