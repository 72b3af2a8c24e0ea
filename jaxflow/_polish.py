r"""Polish the end of a flow to the stationary point it approaches.

A gradient flow stops (to a tolerance) near a stationary point. For a
`jaxflow.models.TwoLayerReLU` the loss is smooth on each activation pattern, so the
point is polished by Newton's method on the loss restricted to the pattern at the flow's
end (`restricted_loss`).
"""

import dataclasses
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optimistix as optx
from jax.flatten_util import ravel_pytree

from ._flow import GradientFlow
from ._kinks import _gates, treatment
from ._relu import (
    activation_pattern,
    augment,
    kink_scale,
    neurons,
    on_kink,
    replace_neurons,
    select_neurons,
)
from .metrics import grad_norm


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


def unmoved(flow: GradientFlow, model, *, converged: bool) -> Polished:
    """The `Polished` record of `model` left where it is."""
    g = float(grad_norm(model, flow))
    return Polished(model, 0, converged, g, g, 0.0, True)


def restricted_loss(flow: GradientFlow, model, active=None):
    r"""The loss with the activation pattern held at `active` (`(n, width)` booleans):
    $f(x_i) = \sum_j v_j\, [\text{active}_{ij}]\, (\langle w_j, x_i\rangle + b_j)$, a
    smooth function of the parameters that equals the loss near any point with that
    pattern. With `active=None`, or for a model without kinks, the loss itself."""
    if active is None:
        return flow(model)
    z = model.preactivations(flow.data.X)
    return flow.loss.of_predictions(jnp.where(active, z, 0.0) @ model.v, flow.data.y)


def on_device(model):
    """`model` with its numpy arrays (say, from `Ensemble.final`) as JAX arrays."""
    return jax.tree.map(
        lambda x: jnp.asarray(x) if isinstance(x, np.ndarray) else x, model
    )


def flat(model):
    """`model`'s inexact arrays as one flat vector, and the function that rebuilds a
    model from such a vector."""
    params, static = eqx.partition(model, eqx.is_inexact_array)
    vector, unravel = ravel_pytree(params)
    return vector, lambda x: eqx.combine(unravel(x), static)


def living_neurons(flow: GradientFlow, model):
    """Which neurons to differentiate: `(alive, keep, active)`, two boolean `(width,)`
    masks and the activation pattern `(n, width)` (pairs on a kink count inactive), or
    `(None, None, None)` for a model without kinks.

    `alive` marks the neurons active on some point. The loss on the activation pattern
    does not depend on the other neurons' parameters at all (a zero block of its
    Hessian), so polishing and the Hessian work on the living neurons: at width 1000
    a few hundred neurons instead of 3000 parameters. `keep` adds dead neurons up to
    one of eight sizes per octave (at most 1/8 more), so that seeds with different
    numbers of living neurons share a few compiled shapes.
    """
    if treatment(flow, model) != "min-norm":
        return None, None, None
    active = activation_pattern(model, flow.data.X)
    alive = np.asarray(jnp.any(active, axis=0))
    count = max(int(alive.sum()), 8)
    step = 1 << max(int(np.log2(count)) - 3, 0)
    size = min(alive.size, -(-count // step) * step)
    keep = alive.copy()
    keep[np.flatnonzero(~alive)[: size - alive.sum()]] = True
    return alive, keep, active


def _root(loss, kinks, x0, num_kinks: int, rtol, max_steps):
    """Newton's method on the gradient of `loss` (a function of the flat parameters),
    with the `num_kinks` constraints `kinks(x) = 0` held by multipliers: the result,
    steps, whether it converged."""

    def lagrangian_gradient(y, _):
        x, lam = y
        gx = jax.grad(lambda x: loss(x) + lam @ kinks(x))(x)
        return gx, kinks(x)

    solver = optx.Newton(rtol=rtol, atol=rtol, linear_solver=lx.SVD())
    if num_kinks:
        y0 = (x0, jnp.zeros(num_kinks, x0.dtype))
        sol = optx.root_find(
            lagrangian_gradient, solver, y0, max_steps=max_steps, throw=False
        )
        x = sol.value[0]
    else:
        gradient = lambda x, _: jax.grad(loss)(x)  # noqa: E731
        sol = optx.root_find(gradient, solver, x0, max_steps=max_steps, throw=False)
        x = sol.value
    x = jnp.where(jnp.all(jnp.isfinite(x)), x, x0)
    return x, sol.stats["num_steps"], sol.result == optx.RESULTS.successful


@eqx.filter_jit
def _newton_jit(flow, model, active, pair_points, pair_neurons, rtol, max_steps):
    x0, rebuild = flat(model)
    inputs = None if active is None else augment(flow.data.X, model.b is not None)

    def kinks(x):
        U = neurons(rebuild(x))
        return jnp.sum(inputs[pair_points] * U[pair_neurons], axis=1)

    return _root(
        lambda x: restricted_loss(flow, rebuild(x), active),
        kinks,
        x0,
        pair_points.size,
        rtol,
        max_steps,
    )


@eqx.filter_jit
def _newton_gated(flow, model, gates, held, rtol, max_steps):
    """`_root` on the loss with its ReLU sites gated (`_gates`), the pre-activations
    `held` (indices) on their kinks."""
    params, static = eqx.partition(model, eqx.is_inexact_array)
    x0, unravel = ravel_pytree(params)
    fn = lambda p, data: flow.loss(eqx.combine(p, static), data)  # noqa: E731

    def run(x):
        return _gates.gated(fn, unravel(x), flow.data, gates)

    x, steps, ok = _root(
        lambda x: run(x)[0], lambda x: run(x)[1][held], x0, held.size, rtol, max_steps
    )
    return eqx.combine(unravel(x), static), steps, ok


# Pairs this close to their kink (relative to their site's scale) are held on it when
# Newton on the pattern does not cut the gradient norm by _NEAR_GRAD.
_NEAR = 1e-5
_NEAR_GRAD = 1e-3


def _polish_gated(flow, model, rtol, max_steps) -> Polished:
    """`polish` for a network whose kinks `_sliding` follows: Newton on the loss with
    the activation pattern fixed, the pre-activations on a kink held there."""
    params, static = eqx.partition(model, eqx.is_inexact_array)
    fn = lambda p, data: flow.loss(eqx.combine(p, static), data)  # noqa: E731
    shapes = _gates.sizes(fn, params, flow.data)

    def pattern(model):
        p = eqx.filter(model, eqx.is_inexact_array)
        _, z = _gates.gated(fn, p, flow.data, None)
        on = _gates.kinked(z, shapes)
        return np.asarray((z > 0) & ~on), np.asarray(on)

    def attempt(active, on):
        # A pair near its kink that Newton carries across is held on it instead, and
        # Newton runs again (at the end of a flow whose rates vanish, pairs sit within
        # the flow's accuracy of a kink without being on it).
        for _ in range(4):
            gates = jnp.asarray(active, float)
            held = jnp.asarray(np.flatnonzero(on))
            polished, steps, converged = _newton_gated(
                flow, model, gates, held, rtol, max_steps
            )
            after, _ = pattern(polished)
            flipped = (after != active) & ~on
            kept = not flipped.any()
            if kept:
                break
            on, active = on | flipped, active & ~flipped
        return _record(flow, model, polished, int(steps), bool(converged), kept)

    active, on = pattern(model)
    record = attempt(active, on)
    if record.grad_norm_after > _NEAR_GRAD * record.grad_norm_before:
        # Newton found no stationary point on this pattern: hold every pair within
        # `_NEAR` of its kink too (a sliding pair that the flow's last step left a
        # little off its surface), and keep the better of the two.
        p = eqx.filter(model, eqx.is_inexact_array)
        _, z = _gates.gated(fn, p, flow.data, None)
        near = np.asarray(_gates.kinked(z, shapes, _NEAR))
        if (near & ~on).any():
            other = attempt(active & ~near, near)
            if other.grad_norm_after < record.grad_norm_after:
                record = other
    return record


def _newton(flow, model, active, pair_points, pair_neurons, rtol, max_steps):
    """Newton's method on the restricted loss (with the kink pairs `(pair_points,
    pair_neurons)` held by multipliers): the flat result, steps, whether it converged.
    Compiled once per shape."""
    x, steps, converged = _newton_jit(
        flow,
        model,
        active,
        jnp.asarray(pair_points),
        jnp.asarray(pair_neurons),
        rtol,
        max_steps,
    )
    return x, int(steps), bool(converged)


def _record(flow, model, polished, steps, converged, kept) -> Polished:
    """The `Polished` record of Newton's result `polished` from `model`, the flow's
    end, which it keeps instead where Newton left the activation pattern (`kept`
    false) or raised the gradient norm."""
    before = float(grad_norm(model, flow))
    after = float(grad_norm(polished, flow))
    if not kept or after > before:
        polished, after = model, before
    x0 = flat(model)[0]
    return Polished(
        model=polished,
        steps=steps,
        converged=converged,
        grad_norm_before=before,
        grad_norm_after=after,
        distance=float(jnp.linalg.norm(flat(polished)[0] - x0) / jnp.linalg.norm(x0)),
        pattern_kept=kept,
    )


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
    model = on_device(model)
    alive, keep, active = living_neurons(flow, model)
    if alive is None and treatment(flow, model) == "general":
        return _polish_gated(flow, model, rtol, max_steps)
    if alive is None:  # no kinks: Newton on all the parameters
        none = np.zeros(0, int)
        x, steps, converged = _newton(flow, model, None, none, none, rtol, max_steps)
        return _record(flow, model, flat(model)[1](x), steps, converged, True)
    if not alive.any():  # nothing to move
        return unmoved(flow, model, converged=True)
    # Newton on the living neurons only (neurons active on no point have no
    # gradient on the pattern, and are not moved).
    sub = select_neurons(model, keep)
    # Living neurons' pairs on a kink: constraints z_ij = 0, with multipliers.
    X = flow.data.X
    held = on_kink(sub.preactivations(X), kink_scale(X, sub.W, sub.b))
    pair_points, pair_neurons = np.nonzero(np.asarray(held) & alive[keep][None, :])
    x, steps, converged = _newton(
        flow, sub, active[:, keep], pair_points, pair_neurons, rtol, max_steps
    )
    # Only the living neurons are written back: the SVD step leaves rounding on
    # the others (it could move a dead neuron sitting on a kink off it).
    living = select_neurons(flat(sub)[1](x), alive[keep])
    polished = replace_neurons(model, alive, living)
    kept = bool(jnp.all(activation_pattern(polished, X) == active))
    return _record(flow, model, polished, steps, converged, kept)
