r"""The Hessian of the loss on an activation pattern: the second-order evidence at a
stationary point.

For a `jaxflow.models.TwoLayerReLU` the loss is smooth on each activation pattern, and
its Hessian there (of `jaxflow.restricted_loss`) tells a strict saddle, with a negative
eigenvalue, from a point with none.
"""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._flow import GradientFlow
from ._polish import flat, living_neurons, restricted_loss
from ._relu import replace_neurons, select_neurons


def _loss_of_flat(flow, model, active):
    x0, rebuild = flat(model)
    return x0, lambda x: restricted_loss(flow, rebuild(x), active)


@eqx.filter_jit
def _hessian(flow, model, active):
    x0, loss = _loss_of_flat(flow, model, active)
    return jax.hessian(loss)(x0)


@eqx.filter_jit
def _hvp(flow, model, active, v):
    x0, loss = _loss_of_flat(flow, model, active)
    return jax.jvp(jax.grad(loss), (x0,), (v,))[1]


def _lanczos(hvp, size: int, k: int, key) -> tuple[np.ndarray, np.ndarray]:
    """The lowest `k` eigenvalues of the symmetric `(size, size)` matrix behind `hvp`,
    and the eigenvector of the lowest: `min(3k + 20, size)` Lanczos steps with full
    reorthogonalisation, started from a random vector from `key`."""
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
    return values[:k], np.stack(Q[: len(alphas)], axis=1) @ vectors[:, 0]


def _in_full(full, keep, sub, values, vector, k):
    """Add the zero eigenvalues of the neurons of `full` left out of `sub` (those not
    in `keep`), and put the eigenvector back in `full`'s layout."""
    x0, rebuild = flat(sub)
    zeros = flat(full)[0].size - x0.size
    values = np.sort(np.concatenate([values, np.zeros(min(zeros, k))]))[:k]
    embedded = replace_neurons(
        jax.tree.map(jnp.zeros_like, full), keep, rebuild(jnp.asarray(vector))
    )
    return values, np.asarray(flat(embedded)[0])


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
    full = model
    alive, keep, active = living_neurons(flow, model)
    if alive is not None and not alive.any():  # no living neuron: the Hessian is 0
        vector = np.zeros(flat(full)[0].size)
        vector[0] = 1.0
        return np.zeros(min(k, vector.size)), vector
    if alive is not None:
        model, active = select_neurons(model, keep), active[:, keep]
    size = flat(model)[0].size
    if size <= exact_max:
        H = _hessian(flow, model, active)
        values, vectors = np.linalg.eigh(np.asarray((H + H.T) / 2))
        values, vector = values[:k], vectors[:, 0]
    else:
        hvp = functools.partial(_hvp, flow, model, active)
        values, vector = _lanczos(hvp, size, k, key)
    if alive is None:
        return values, vector
    return _in_full(full, keep, model, values, vector, k)
