"""Control flow that stays cheap under `jax.vmap`."""

import functools
import operator

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero
from jax.extend.core import Var


def first_root(psi, lo, hi, f_lo, f_hi, search, iterations: bool = False):
    """The first zero of `psi` in `[lo, hi]`, given `f_lo >= 0 >= f_hi`, by the Illinois
    variant of regula falsi; elementwise over arrays of brackets (`psi` maps an array of
    times to the values of the matching components). Returns the right end of the
    final bracket, where `psi <= 0`, and with `iterations` also how many times `psi`
    was evaluated. Brackets not marked in `search` are returned as `hi`; when none is,
    nothing is evaluated (also under `jax.vmap`)."""
    lo, hi, f_lo, f_hi, search = jnp.broadcast_arrays(lo, hi, f_lo, f_hi, search)
    tol = 4 * jnp.finfo(lo.dtype).eps * jnp.maximum(jnp.abs(lo), jnp.abs(hi))

    def cond(c):
        lo, hi, _, _, _, it = c
        return jnp.any(search & (hi - lo > tol)) & (it < 100)

    def body(c):
        lo, hi, f_lo, f_hi, side, it = c
        active = search & (hi - lo > tol)
        t = (lo * f_hi - hi * f_lo) / (f_hi - f_lo)
        t = jnp.where((t > lo) & (t < hi), t, 0.5 * (lo + hi))
        f = psi(jnp.where(active, t, hi))
        left = f <= 0  # the root is in [lo, t]
        new_f_lo = jnp.where(left & (side == -1), 0.5 * f_lo, f_lo)
        new_f_hi = jnp.where(~left & (side == 1), 0.5 * f_hi, f_hi)
        new = (
            jnp.where(left, lo, t),
            jnp.where(left, t, hi),
            jnp.where(left, new_f_lo, f),
            jnp.where(left, f, new_f_hi),
            jnp.where(left, -1, 1),
        )
        old = (lo, hi, f_lo, f_hi, side)
        out = tuple(jnp.where(active, a, b) for a, b in zip(new, old))
        return out + (it + 1,)

    side = jnp.zeros(lo.shape, jnp.int32)
    init = (lo, hi, jnp.maximum(f_lo, 0.0), f_hi, side, jnp.array(0))
    out = jax.lax.while_loop(cond, body, init)
    return (out[1], out[-1]) if iterations else out[1]


def when(pred, fn, default):
    """`fn()` if `pred`, else `default` (same structure).

    Unlike `jax.lax.cond`, which `jax.vmap` turns into evaluating both branches for every
    element, `fn` runs only for the elements that need it: under vmap they are gathered
    a chunk at a time (`_branch`), so a branch that one seed of a batch takes costs a
    chunk's work, not the batch's, and nothing when no seed takes it. A Python bool
    chooses at trace time. Differentiable in forward mode.
    """
    if isinstance(pred, bool):
        return fn() if pred else default
    # The branch's closed-over arrays become its inputs (vmap batches them), flat.
    dynamic, static = eqx.partition(eqx.filter_closure_convert(fn), eqx.is_array)
    dynamic, tree = jax.tree.flatten(dynamic)

    def call(dynamic):
        return eqx.combine(jax.tree.unflatten(tree, dynamic), static)()

    return _branch(call, pred, dynamic, default)


def once(pred, fn, default):
    """`fn()` if `pred`, else `default`: a loop of at most one iteration, which under
    `jax.vmap` runs `fn` for every element if any needs it (never both branches, as
    `jax.lax.cond` would)."""
    return jax.lax.while_loop(
        lambda c: c[0], lambda c: (jnp.zeros_like(c[0]), fn()), (pred, default)
    )[1]


def chunk(size: int) -> int:
    """How many elements of a batch of `size` a branch of `when` runs on at once."""
    return max(1, -(-size // 8))


def _reached(call, dynamic: list, batched: list):
    """Which outputs of `call(dynamic)` (a tree of bools) depend on the inputs marked
    in `batched` (those have a leading batch axis): forward through its jaxpr, an
    equation's outputs are reached when one of its inputs is."""
    one = [
        jax.ShapeDtypeStruct(
            jnp.shape(x)[1:] if b else jnp.shape(x), jnp.result_type(x)
        )
        for x, b in zip(dynamic, batched)
    ]
    closed, shape = jax.make_jaxpr(call, return_shape=True)(one)
    jaxpr = closed.jaxpr
    on = {v for v, b in zip(jaxpr.invars, batched) if b}
    for eqn in jaxpr.eqns:
        if any(isinstance(v, Var) and v in on for v in eqn.invars):
            on.update(eqn.outvars)
    flags = [isinstance(v, Var) and v in on for v in jaxpr.outvars]
    return jax.tree.unflatten(jax.tree.structure(shape), flags)


def _inexact(x) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.inexact)


def _float_tangents(tree) -> list:
    """The tangents of a tree's inexact leaves, flat (not the float0 of the others)."""
    return [t for t in jax.tree.leaves(tree) if t.dtype != jax.dtypes.float0]


def _branch(call, pred, dynamic: list, default):
    """`call(dynamic)` if `pred`, else `default`. Under `jax.vmap`, the elements where
    `pred` holds are gathered, `chunk` at a time, and `call` runs vmapped over each
    chunk. Its derivative is the branch of `call`'s derivative (a custom JVP: JAX's
    own derivative of a custom_vmap would batch the rule's inputs inconsistently)."""

    @jax.custom_batching.custom_vmap
    def branch(pred, dynamic, default):
        return once(pred, lambda: call(dynamic), default)

    @branch.def_vmap
    def gathered(size, in_batched, pred, dynamic, default):
        # Each element's result is the one `call` gives it alone, whichever others
        # share its chunk (a vmapped function computes each element on its own).
        pred_b, dynamic_b, default_b = in_batched
        axes = [0 if b else None for b in dynamic_b]
        if pred_b:
            batched = jax.tree.map(lambda _: True, default)
        else:  # what the batched inputs reach (an unbatched output stays so)
            reached = _reached(call, dynamic, dynamic_b)
            batched = jax.tree.map(operator.or_, reached, default_b)
        out_axes = jax.tree.map(lambda b: 0 if b else None, batched)

        def run(d, n):
            return jax.vmap(call, in_axes=(axes,), out_axes=out_axes, axis_size=n)(d)

        default = jax.tree.map(
            lambda x, b, o: (
                jnp.broadcast_to(x, (size,) + jnp.shape(x)) if o and not b else x
            ),
            default,
            default_b,
            batched,
        )
        if not pred_b:  # the whole batch, or none of it
            return once(pred, lambda: run(dynamic, size), default), batched
        k = chunk(size)
        count = jnp.sum(pred)
        lanes = jnp.nonzero(pred, size=-(-size // k) * k, fill_value=size)[0]

        def body(c):
            start, out = c
            these = jax.lax.dynamic_slice(lanes, (start,), (k,))
            safe = jnp.minimum(these, size - 1)
            part = [x[safe] if b else x for x, b in zip(dynamic, dynamic_b)]
            # (Padding, at index `size`, is dropped.)
            put = lambda o, v: o.at[these].set(v, mode="drop")  # noqa: E731
            return start + k, jax.tree.map(put, out, run(part, k))

        init = (jnp.array(0, count.dtype), default)
        return jax.lax.while_loop(lambda c: c[0] < count, body, init)[1], batched

    # Differentiated, the branch is the loop of `once` over `call`'s JVP: JAX splits
    # that loop into its primal and tangent parts (`jax.linearize`, which lineax
    # takes of the implicit solvers' field), where a custom_vmap would not be split.
    @jax.custom_jvp
    def gated(pred, dynamic, default):
        return branch(pred, dynamic, default)

    @functools.partial(gated.defjvp, symbolic_zeros=True)
    def gated_jvp(primals, tangents):
        pred, dynamic, default = primals
        _, t_dynamic, t_default = tangents
        # Only the inputs with a tangent are differentiated (the others are constant:
        # an `equinox.filter_custom_jvp` inside may not take tangents for all).
        live = [not isinstance(t, SymbolicZero) for t in t_dynamic]

        def derivative():
            def moving(xs):
                it = iter(xs)
                return call([next(it) if a else x for x, a in zip(dynamic, live)])

            xs = [x for x, a in zip(dynamic, live) if a]
            ts = [t for t, a in zip(t_dynamic, live) if a]
            out, t_out = jax.jvp(moving, (xs,), (ts,))
            return out, _float_tangents(t_out)

        zero = lambda t: isinstance(t, SymbolicZero)  # noqa: E731
        floats = [
            jnp.zeros_like(x) if zero(t) else t
            for x, t in zip(jax.tree.leaves(default), jax.tree.leaves(t_default, zero))
            if _inexact(x)
        ]
        out, t_floats = once(pred, derivative, (default, floats))
        leaves, tree = jax.tree.flatten(out)
        it = iter(t_floats)
        t_out = [
            next(it) if _inexact(x) else np.zeros(jnp.shape(x), jax.dtypes.float0)
            for x in leaves
        ]
        return out, jax.tree.unflatten(tree, t_out)

    return gated(pred, dynamic, default)
