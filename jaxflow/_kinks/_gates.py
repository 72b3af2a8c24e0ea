r"""The ReLU kinks of any loss, found in its jaxpr.

A loss $L(\theta)$ written with `jax.nn.relu` or `jax.nn.leaky_relu` (in an equinox
model, `eqx.nn.MLP(..., activation=jax.nn.relu)`, `jaxflow.models.MLP`, or a module of
your own) is traced to a jaxpr, and every call of those two functions is a *site*:
its input $z$ (the pre-activations, of any shape) has a kink at $z = 0$. Evaluating
the jaxpr with each site's output replaced by

$$\sigma_g(z) = \big(\alpha + (1 - \alpha)\, g\big)\, z$$

($\alpha$ = 0 for ReLU, the negative slope for leaky ReLU) gives the loss with a fixed
*gate* $g$ per pre-activation: 1 on the active side, 0 on the inactive one, and the
generalized derivative $s \in [0, 1]$ on a kink. With the gates fixed the loss is
smooth in $\theta$ (the piece's continuation, `_sliding.Sliding`).

This is the protocol a network implements: none. Anything traced by JAX works, as long
as its ReLUs are those two functions and are not inside a `lax.scan`, `lax.cond` or
`lax.while_loop` (those models run `kinks="plain"`, and `jaxflow.solve` says so). A
ReLU written otherwise (`jnp.maximum(z, 0)`) is smooth to jaxflow: its kinks are
integrated as `kinks="plain"` would.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import DropVar, Literal, jaxpr_as_fun, jaxprs_in_params
from jaxtyping import Array, Bool, Float, PyTree

from .._relu import KINK_TOL, on_kink


_CALLS = ("jit", "pjit", "closed_call", "core_call", "remat", "checkpoint")


class Unsupported(Exception):
    """A ReLU inside control flow that the gates cannot reach."""


def _is_relu(eqn) -> bool:
    if eqn.primitive.name != "custom_jvp_call":
        return False
    inner = eqn.params["call_jaxpr"].jaxpr.eqns
    return (
        len(inner) == 1
        and inner[0].primitive.name in _CALLS
        and inner[0].params.get("name") == "relu"
    )


def _is_leaky(eqn) -> bool:
    return eqn.primitive.name in _CALLS and eqn.params.get("name") == "leaky_relu"


def _inner(eqn):
    """The closed jaxpr a call primitive evaluates, or None."""
    if eqn.primitive.name not in _CALLS:
        return None
    jaxpr = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
    if jaxpr is None or not hasattr(jaxpr, "jaxpr"):
        return None
    return jaxpr


def _has_sites(jaxpr) -> bool:
    for eqn in jaxpr.eqns:
        if _is_relu(eqn) or _is_leaky(eqn):
            return True
        for sub in jaxprs_in_params(eqn.params):
            if _has_sites(sub):
                return True
    return False


def _walk(jaxpr, consts, args, visit):
    """Evaluate `jaxpr` on `args`, with each site's output `visit(z, slope)`."""
    env = {}

    def read(v):
        return v.val if isinstance(v, Literal) else env[v]

    env.update(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        inner = _inner(eqn)
        if _is_relu(eqn):
            outs = [visit(invals[0], 0.0)]
        elif _is_leaky(eqn):
            # Linear on each side: the slope is minus its value at -1.
            ones = -jnp.ones_like(invals[0])
            fn = jaxpr_as_fun(inner)
            outs = [visit(invals[0], -fn(ones, *invals[1:])[0])]
        elif inner is not None and _has_sites(inner.jaxpr):
            outs = _walk(inner.jaxpr, inner.consts, invals, visit)
        else:
            if any(_has_sites(s) for s in jaxprs_in_params(eqn.params)):
                raise Unsupported(eqn.primitive.name)
            params = eqn.primitive.get_bind_params(eqn.params)
            with eqn.ctx.manager:
                outs = eqn.primitive.bind(*invals, **params)
            if not eqn.primitive.multiple_results:
                outs = [outs]
        for v, x in zip(eqn.outvars, outs):
            if not isinstance(v, DropVar):
                env[v] = x
    return [read(v) for v in jaxpr.outvars]


def _trace(fn, params, data):
    closed = jax.make_jaxpr(fn)(params, data)
    args = jax.tree.leaves((params, data))
    return closed, args


def sizes(fn, params: PyTree, data: PyTree) -> tuple[tuple[int, ...], ...]:
    """The shapes of the sites of `fn(params, data)` (a scalar loss), in trace order;
    raises `Unsupported` for a site inside control flow."""
    closed, _ = _trace(fn, params, data)
    shapes = []

    def visit(z, slope):
        del slope
        shapes.append(tuple(z.shape))
        return jax.nn.relu(z)

    def run(*args):
        return _walk(closed.jaxpr, closed.consts, args, visit)

    jax.eval_shape(run, *jax.tree.leaves((params, data)))
    return tuple(shapes)


def gated(
    fn, params: PyTree, data: PyTree, gates: Float[Array, " k"] | None
) -> tuple[Float[Array, ""], Float[Array, " k"]]:
    """`fn(params, data)` (a scalar) with its sites gated by `gates` (flat, in trace
    order; `None`: the true ReLUs), and the sites' pre-activations, flat."""
    closed, args = _trace(fn, params, data)
    zs = []

    def visit(z, slope):
        start = sum(x.size for x in zs)
        zs.append(z)
        if gates is None:
            g = (z > 0).astype(z.dtype)
        else:
            g = gates[start : start + z.size].reshape(z.shape)
        return (slope + (1 - slope) * g) * z

    (value,) = _walk(closed.jaxpr, closed.consts, args, visit)
    flat = jnp.concatenate([z.ravel() for z in zs]) if zs else jnp.zeros(0)
    return value, flat


def site_scales(z: Float[Array, " k"], shapes) -> Float[Array, " k"]:
    """The size each pre-activation is measured against: per site, the RMS over all
    axes but the last (for a `(n, width)` site, per neuron over the samples)."""
    parts, start = [], 0
    for shape in shapes:
        size = math.prod(shape)
        part = z[start : start + size].reshape(shape if shape else (1,))
        start += size
        axes = tuple(range(part.ndim - 1)) if part.ndim > 1 else None
        rms = jnp.sqrt(jnp.mean(part**2, axis=axes, keepdims=part.ndim > 1))
        parts.append(jnp.broadcast_to(rms, part.shape).ravel())
    if not parts:
        return jnp.ones_like(z)
    scale = jnp.concatenate(parts)
    return jnp.where(scale > 0, scale, 1.0)


def kinked(z: Float[Array, " k"], shapes, tol: float = KINK_TOL) -> Bool[Array, " k"]:
    """Which pre-activations are on their kink: $|z| \\le$ `tol` times their site's
    scale (`site_scales`)."""
    return on_kink(z, site_scales(z, shapes), tol)


def count(shapes) -> int:
    return int(np.sum([math.prod(s) for s in shapes]))
