r"""Ways out of a stationary point, each checked by re-solving the flow from it.

Along a negative eigenvalue of the Hessian on the activation pattern the loss drops at
second order. Kinks add escapes a Hessian cannot see: a neuron placed, at a small size,
in an activation cone no living neuron occupies changes the loss at second order in its
size by $\pm\delta^2 G(u)$, with

$$G(u) = \sum_i r_i\, \sigma(\langle u, \tilde x_i\rangle), \qquad
r_i = \partial L / \partial f(x_i),$$

Boursier and Flammarion's early-alignment functional. A stationary point where
$\max_{\|u\| = 1} |G(u)| > 0$ is a saddle, and the maximiser is its escape direction.
Every escape is checked by re-solving the flow briefly from the perturbed point.
"""

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._flow import GradientFlow
from ._polish import flat
from ._predict import predict
from ._relu import augment, neurons, with_neurons
from ._solve import solve


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

    def as_dict(self) -> dict:
        """The escape as plain JSON-ready values (no direction)."""
        out = {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
            if field.name != "direction"
        }
        out["active"] = None if self.active is None else list(self.active)
        out["u"] = None if self.u is None else [float(x) for x in self.u]
        return out


def _residuals(flow: GradientFlow, model):
    """$r_i = \\partial L / \\partial f(x_i)$."""
    pred = predict(model, flow.data.X)
    return jax.grad(lambda p: flow.loss.of_predictions(p, flow.data.y))(pred)


def best_new_neuron(
    flow: GradientFlow, model, *, samples: int = 4096, key=None
) -> tuple[np.ndarray, float, np.ndarray]:
    r"""The unit direction $u = (w, b)$ maximising $|G(u)|$, with $G(u)$ and the
    pattern of points it is active on. Here $G(u) = \sum_i r_i\, \sigma(\langle u,
    \tilde x_i\rangle)$, with residuals $r_i = \partial L / \partial f(x_i)$, is
    Boursier and Flammarion's early-alignment functional: a small neuron placed along
    $u$ changes the loss by $\pm\delta^2 G(u)$.

    Within one activation cone $G$ is linear, $G(u) = \langle g_P, u\rangle$ with
    $g_P = \sum_{i \in P} r_i \tilde x_i$, so its maximum there is at
    $\pm g_P/\|g_P\|$ when that lies in the cone. Cones are found from `samples`
    random directions (a fine grid on the circle when $(w, b)$ is 2-D); each is then
    refined to its $\pm g_P / \|g_P\|$ when that keeps the pattern. Of directions
    whose $|G|$ ties the maximum (to a relative $10^{-9}$), the one active on the
    fewest points.
    """
    X = augment(np.asarray(flow.data.X), model.b is not None)
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
    # Ties are common, not rounding accidents: with a bias and residuals at a
    # least-squares fit, a cone and its complement have the same |G|. The one active
    # on fewer points is taken, so that the choice does not depend on rounding.
    near = np.abs(G) >= (1 - 1e-9) * np.max(np.abs(G))
    best = int(np.argmin(np.where(near, (U @ X.T > 0).sum(axis=1), X.shape[0] + 1)))
    return U[best], float(G[best]), U[best] @ X.T > 0


def _resolve(flow, model, time, rtol) -> tuple[float, str]:
    """The loss after re-solving the flow from `model` for `time`, and how the solve
    ended."""
    sol = solve(
        flow,
        model,
        t1=time,
        ts=jnp.array([time]),
        rtol=rtol,
        kinks="auto",
        metrics={},
        save_models=False,
        max_steps=200_000,
    )
    return float(flow(sol.final)), str(sol.status_name)


def empty_cone_escape(
    flow: GradientFlow, model, loss: float, size: float, time: float, rtol: float
) -> Escape | None:
    """The smallest neuron of a `TwoLayerReLU` at `model` (loss `loss`) re-placed by a
    neuron of norm `size` along the maximiser of $|G|$ (`best_new_neuron`), with the
    output sign that lowers the loss, and the flow re-solved for `time` at tolerance
    `rtol`; `None` where $G$ vanishes."""
    u, G, active = best_new_neuron(flow, model)
    if G == 0.0:
        return None
    U = neurons(model)
    j = int(jnp.argmin(jnp.abs(model.v) * jnp.linalg.norm(U, axis=1)))
    sign = -math.copysign(1.0, G)
    perturbed = with_neurons(
        model, U.at[j].set(size * jnp.asarray(u)), model.v.at[j].set(sign * size)
    )
    end, status = _resolve(flow, perturbed, time, rtol)
    x0, rebuild = flat(model)
    delta = flat(perturbed)[0] - x0
    return Escape(
        kind="empty cone",
        direction=rebuild(delta / jnp.linalg.norm(delta)),
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


def curvature_escape(
    flow: GradientFlow,
    model,
    vector: np.ndarray,
    value: float,
    loss: float,
    size: float,
    time: float,
    rtol: float,
) -> Escape:
    """`model` (loss `loss`) moved by `size` along the flat eigenvector `vector` of the
    Hessian's eigenvalue `value`, both ways, and the flow re-solved for `time` at
    tolerance `rtol`: the way that lowers the loss more."""
    x0, rebuild = flat(model)
    best = None
    for s in (1.0, -1.0):
        end, status = _resolve(flow, rebuild(x0 + s * size * vector), time, rtol)
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
