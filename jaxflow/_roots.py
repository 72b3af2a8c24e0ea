"""Control flow that stays cheap under `jax.vmap`."""

import jax
import jax.numpy as jnp


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
    element, this is a loop of at most one iteration: under vmap `fn` runs once if any
    element needs it (its results kept where `pred`), and not at all otherwise.
    A Python bool chooses at trace time.
    """
    if isinstance(pred, bool):
        return fn() if pred else default
    return jax.lax.while_loop(
        lambda c: c[0], lambda c: (jnp.zeros_like(c[0]), fn()), (pred, default)
    )[1]
