r"""The box-constrained least-squares problem of the two-layer minimum-norm field.

For each neuron $j$, with $K_j$ the points on its kink, $b_j$ the gradient in
$u_j$ of its active pairs and $c_{ij} = v_j r_i$,

$$\min_{s \in [0,1]^{K_j}} \tfrac12 \Big\| b_j + \sum_{i \in K_j} s_i\, c_{ij}\,
\tilde x_i \Big\|^2 .$$

The minimizer's value $w_j = b_j + \sum_i s_i c_{ij} \tilde x_i$, the least-norm
element of the subdifferential, is unique; $s$ need not be (more points on a kink than
the dimension, or points on a hyperplane of it, are linearly dependent).

**Method.** The active-set method of Lawson and Hanson (*Solving Least Squares
Problems*, 1974, ch. 23) with both bounds, as in BVLS (Stark and Parker, 1995). A
*face* splits $K_j$ into free pairs $F_j$ and pairs held at $s = 0$ or $s = 1$. On a
face the free $s$ solve the least-squares problem with the others held: $w_j$ is
$b_j$ (plus the columns held at 1) projected onto the orthogonal complement of
$\mathrm{span}\{\tilde x_i : i \in F_j\}$ (`Factor`: an orthonormal basis by
Gram-Schmidt, twice, and the inverse of its triangular factor), and
$s_i = -a_i / c_{ij}$ from the projection's coefficients. Then, per neuron:

- a free $s$ outside $[0, 1]$: step from the current (feasible) $s$ towards the face's
  solution until the first free $s$ reaches its bound, and hold it there;
- else a held pair whose multiplier $\lambda_i = c_{ij}\langle \tilde x_i, w_j\rangle$
  has the wrong sign ($< 0$ held at 0, $> 0$ held at 1): free the worst one;
- else the Karush-Kuhn-Tucker conditions hold, and $w_j$ is the minimizer.

**Termination.** A pair is freed only where its multiplier is nonzero, while $w_j$ is
orthogonal to the free points: its point is linearly independent of theirs. So a free
set holds at most $\operatorname{rank}\{\tilde x_i\}_{i \in K_j} \le
\min(|K_j|, d + 1)$ pairs, the objective falls strictly from one face to the next, no
face repeats, and the method ends after finitely many. Warm-started from the face of
the previous piece (and its factor) it usually ends at once, or after one or two
changes; from a cold start, a pair that ends held at 1 takes two. At most
`max_iterations` changes are made; a neuron not done by then, or whose free set
outgrows its slots, is reported (`Box.converged`, `Box.overflow`).

**Accuracy.** $w_j$ is orthogonal to the free points to rounding. A held pair's
multiplier counts as of the right sign unless it is wrong by more than `TOL`
$|c_{ij}| \|\tilde x_i\| \|b_j\|$, and a free $s$ within `TOL` of $[0, 1]$ counts as
inside (it is clipped). A free point within `_DEPENDENT` (relative) of the span of the
others is taken as in it. Tested against scipy's `lsq_linear` (`tests/test_kinks.py`),
with up to 50 points on one kink.

Everything is vectorized over neurons, with fixed shapes: $K_j$ as a mask over all
points, the free set as `f` slots per neuron (valid slots first); the dense work over
all $n \times h$ pairs (the held-at-1 columns, the held pairs' multipliers) runs only
when some pair is held.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from .._roots import when


# Relative tolerance on the KKT conditions (module docstring, "Accuracy").
TOL = 1e-11
# A free point whose distance from the span of the earlier ones is below this,
# relative to its norm, is taken as in that span. (Below `TOL`: a pair is freed only
# if farther, so free points stay independent, at most min(n, d + 1) a neuron.)
_DEPENDENT = 1e-12


def max_iterations(n: int, f: int) -> int:
    """The most face changes one solve makes, with `n` points and `f` free slots."""
    return 3 * n + 4 * f + 16


class Face(eqx.Module):
    """Which pairs of the box problem are free, and which are held at 1 (the other
    pairs on a kink are held at 0)."""

    free: Int[Array, "h f"]  # points with a free s, per neuron; -1: an empty slot
    upper: Bool[Array, "n h"]  # pairs held at s = 1


def free_values(free: Int[Array, "h f"], values: Array, n: int) -> Array:
    """Per-slot `values` scattered to the `(n, h)` pairs, zero elsewhere."""
    h = free.shape[0]
    rows = jnp.where(free >= 0, free, n)
    cols = jnp.broadcast_to(jnp.arange(h)[:, None], free.shape)
    return jnp.zeros((n, h), values.dtype).at[rows, cols].set(values, mode="drop")


def compact(free: Int[Array, "h f"], *values: Array):
    """The slots `free` (and per-slot `values`) reordered valid first, in order.

    (A stable partition by counts, one scatter a row; an argsort costs ten times as
    much on the CPU, and this runs every step.)"""
    valid = free >= 0
    ahead = jnp.cumsum(valid, axis=1) - 1  # valid slots before and at this one
    behind = jnp.sum(valid, axis=1, keepdims=True) + jnp.cumsum(~valid, axis=1) - 1
    place = jnp.where(valid, ahead, behind)
    rows = jnp.arange(free.shape[0])[:, None]
    put = lambda x: jnp.zeros_like(x).at[rows, place].set(x, unique_indices=True)  # noqa: E731
    return (put(free), *map(put, values))


def _norm(x: Array) -> Array:
    """The 2-norm over the last axis, with a zero derivative at zero (forward mode
    through `jnp.linalg.norm` gives nan there)."""
    squares = jnp.sum(x**2, axis=-1)
    positive = squares > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, squares, 1.0)), 0.0)


class Factor(eqx.Module):
    """An orthonormal basis of the span of each neuron's free points (rows of `A[j]`,
    those marked `valid`): `A[j] = R[j]^T Q[j]` by Gram-Schmidt with
    reorthogonalization (CGS2), `Q[j]`'s rows orthonormal, and `Rinv[j]` the inverse
    of the upper triangular `R[j]`. A point within `_DEPENDENT` (relative) of the
    earlier ones' span is dropped: its row of `Q` is zero and its coefficient 0. A
    face's factor, kept with a piece, spares the field's evaluations within it the
    factorization: a projection is then three small matrix products."""

    Q: Float[Array, "h f d1"]
    Rinv: Float[Array, "h f f"]
    valid: Bool[Array, "h f"]

    @staticmethod
    def of(A: Float[Array, "h f d1"], valid: Bool[Array, "h f"]) -> "Factor":
        """The factor of the points `A` (valid slots first), in as many
        Gram-Schmidt steps as the most valid slots a neuron has."""
        Q, Rinv = _gram_schmidt(jnp.where(valid[..., None], A, 0.0), valid)
        return Factor(Q, Rinv, valid)

    @staticmethod
    def empty(h: int, f: int, dtype, d1: int) -> "Factor":
        """The factor of no free points."""
        eye = jnp.broadcast_to(jnp.eye(f, dtype=dtype), (h, f, f))
        return Factor(jnp.zeros((h, f, d1), dtype), eye, jnp.zeros((h, f), bool))

    def project(self, b: Float[Array, "h d1"]):
        """`(w, a)`: $w_j = b_j - A_j^\\top a_j$, the projection of $b_j$ onto the
        orthogonal complement of the span, and its coefficients $a_j$ (0 for the
        dropped points)."""
        beta = jnp.einsum("hfd,hd->hf", self.Q, b)
        w = b - jnp.einsum("hf,hfd->hd", beta, self.Q)
        return w, jnp.einsum("hfg,hg->hf", self.Rinv, beta)


def _gram_schmidt(A: Float[Array, "h f d1"], valid: Bool[Array, "h f"]):
    """`(Q, Rinv)` of `Factor`: steps for the slots up to the last valid one only."""
    h, f, _ = A.shape
    slots = jnp.arange(f)
    last = jnp.max(jnp.where(valid, slots + 1, 0))
    eye = jnp.broadcast_to(jnp.eye(f, dtype=A.dtype), (h, f, f))

    def step(k, QR):
        Q, R = QR
        a = A[:, k]
        earlier = slots < k
        v, coefficients = a, 0.0
        for _ in range(2):
            c = jnp.where(earlier, jnp.einsum("hfd,hd->hf", Q, v), 0.0)
            v = v - jnp.einsum("hf,hfd->hd", c, Q)
            coefficients = coefficients + c
        size = _norm(v)
        keep = valid[:, k] & (size > _DEPENDENT * _norm(a))
        q = jnp.where(keep[:, None], v / jnp.where(keep, size, 1.0)[:, None], 0.0)
        # A dropped point's column of R is the identity's (its coefficient: 0).
        column = jnp.where(keep[:, None], coefficients, 0.0) + jnp.where(
            slots == k, jnp.where(keep, size, 1.0)[:, None], 0.0
        )
        return Q.at[:, k].set(q), R.at[:, :, k].set(column)

    # Slots past the last valid one keep R's identity columns.
    Q, R = jax.lax.fori_loop(0, last, step, (jnp.zeros_like(A), eye))

    # R^-1 by back substitution, a row at a time (R upper triangular).
    def row(i, Rinv):
        k = last - 1 - i
        Rinv = Rinv.at[:, k].set(0.0)
        rest = jnp.einsum("hl,hlm->hm", R[:, k], Rinv)  # rows > k of Rinv only
        unit = jnp.where(slots == k, 1.0, 0.0)
        return Rinv.at[:, k].set((unit[None, :] - rest) / R[:, k, k, None])

    return Q, jax.lax.fori_loop(0, last, row, eye)


class Box(eqx.Module):
    """The solution of the box problem (`solve`), per neuron."""

    direction: Float[Array, "h d1"]  # w_j, the least-norm element
    # w_j on the warm face, before the search: differs from `direction` only where the
    # search changed the face.
    warm: Float[Array, "h d1"]
    s: Float[Array, "h f"]  # the free multipliers, in [0, 1] (0 at empty slots)
    face: Face  # where it was found (the next solve's warm start)
    factor: Factor  # the face's factor
    scale: Float[Array, " h"]  # |b_j|, the size of the numbers in w_j
    overflow: Bool[Array, " h"]  # the free set would have outgrown its slots
    converged: Bool[Array, ""]  # every neuron met the KKT conditions (or overflowed)
    iterations: Int[Array, ""]  # face changes made

    def multipliers(self, n: int) -> Float[Array, "n h"]:
        """$s_{ij}$ of every pair: the free ones, 1 where held at 1, else 0."""
        return jnp.where(self.face.upper, 1.0, free_values(self.face.free, self.s, n))


class _Solved(eqx.Module):
    """The least-squares solution on one face."""

    w: Float[Array, "h d1"]
    s: Float[Array, "h f"]
    b: Float[Array, "h d1"]
    free: Int[Array, "h f"]  # the face's free slots that count (on a kink, c != 0)
    factor: Factor
    stale: Bool[Array, " h"]  # the factor given was not of those slots


def _on_face(
    G, X, C, kinked, face: Face, factor: Factor | None = None, held=True
) -> _Solved:
    """The solution on `face`, with its `factor` if known (else computed); `held`:
    whether some pair may be held at 1. The factor must be of the face's valid slots
    (`_Solved.stale` says where it is not)."""
    n, h = C.shape
    rows = jnp.where(face.free >= 0, face.free, 0)
    cols = jnp.arange(h)[:, None]
    c = C[rows, cols]
    # A free pair whose column is zero cannot move w_j: it is dropped.
    valid = (face.free >= 0) & kinked[rows, cols] & (c != 0)
    A = X[rows]
    if factor is None:
        factor = Factor.of(A, valid)
    upper = face.upper & kinked
    b = when(held & jnp.any(upper), lambda: G + jnp.where(upper, C, 0.0).T @ X, G)
    w, a = factor.project(b)
    s = jnp.where(valid, -a / jnp.where(valid, c, 1.0), 0.0)
    stale = jnp.any(valid != factor.valid, axis=1)
    return _Solved(w, s, b, jnp.where(valid, face.free, -1), factor, stale)


class _Verdict(eqx.Module):
    """Where a face's solution breaks the KKT conditions, per neuron."""

    outside: Bool[Array, "h f"]  # free s outside [0, 1]
    worst: Int[Array, " h"]  # the held pair most in the wrong, if any
    wrong: Bool[Array, " h"]  # some held pair's multiplier has the wrong sign

    def done(self):
        return ~jnp.any(self.outside, axis=1) & ~self.wrong


def _assess(X, C, kinked, norms, upper, solved: _Solved, held=True) -> _Verdict:
    """`held`: whether some pair on a kink may be held (not free)."""
    n, h = C.shape
    s = solved.s
    free = solved.free >= 0
    outside = free & ((s < -TOL) | (s > 1 + TOL))

    def multipliers():
        held = kinked & ~free_values(solved.free, free, n) & (C != 0)
        # Positive: the pair's multiplier has the wrong sign, by more than rounding.
        side = jnp.where(upper, 1.0, -1.0) * jnp.sign(C)
        scale = TOL * norms[:, None] * _norm(solved.b)[None, :]
        excess = jnp.where(held, side * (X @ solved.w.T) - scale, -jnp.inf)
        worst = jnp.argmax(excess, axis=0).astype(jnp.int32)
        return worst, jnp.max(excess, axis=0) > 0

    worst, wrong = when(
        held, multipliers, (jnp.zeros(h, jnp.int32), jnp.zeros(h, bool))
    )
    return _Verdict(outside, worst, wrong)


class _Search(eqx.Module):
    """The active-set loop's state."""

    face: Face
    s: Float[Array, "h f"]  # the current feasible s of the free slots
    solved: _Solved
    verdict: _Verdict
    done: Bool[Array, " h"]
    overflow: Bool[Array, " h"]
    iterations: Int[Array, ""]


def _next_face(search: _Search) -> tuple[Face, Float[Array, "h f"], Bool[Array, " h"]]:
    """One face change per neuron not done: hold the first free pair to reach its
    bound, or free the worst held pair; also, which neurons had no slot to free it."""
    solved, verdict = search.solved, search.verdict
    free, s, target = solved.free, search.s, solved.s
    n, h = search.face.upper.shape
    cols = jnp.arange(h)
    # Towards the face's solution until the first free s reaches its bound.
    step = target - s
    ratio = jnp.where(
        verdict.outside,
        jnp.where(target > 1, 1.0 - s, -s) / jnp.where(step != 0, step, 1.0),
        jnp.inf,
    )
    alpha = jnp.clip(jnp.min(ratio, axis=1, keepdims=True), 0.0, 1.0)
    hit = verdict.outside & (ratio <= alpha)
    held_free = jnp.where(hit, -1, free)
    held_s = jnp.where(hit | (free < 0), 0.0, jnp.clip(s + alpha * step, 0.0, 1.0))
    held_upper = search.face.upper | free_values(free, hit & (target > 1), n)
    # Or free the worst held pair, in the first empty slot, from its bound.
    empty = free < 0
    slot = jnp.argmax(empty, axis=1)
    room = jnp.any(empty, axis=1)
    enter = verdict.wrong & room
    worst = verdict.worst
    start = jnp.where(search.face.upper[worst, cols], 1.0, 0.0)
    put = enter[:, None] & (jnp.arange(free.shape[1])[None, :] == slot[:, None])
    freed = jnp.where(put, worst[:, None], free)
    freed_s = jnp.where(put, start[:, None], jnp.clip(target, 0.0, 1.0))
    freed_upper = search.face.upper.at[worst, cols].set(
        jnp.where(enter, False, search.face.upper[worst, cols])
    )
    # Per neuron: hold if some free s is outside, else free; done ones stay. (Slot
    # arrays have the neurons first, pair arrays last.)
    inside = ~jnp.any(verdict.outside, axis=1)
    move = ~search.done
    choose = lambda new, held, old: jnp.where(  # noqa: E731
        move[:, None], jnp.where(inside[:, None], new, held), old
    )
    upper = jnp.where(
        move[None, :],
        jnp.where(inside[None, :], freed_upper, held_upper),
        search.face.upper,
    )
    free, s = compact(
        choose(freed, held_free, search.face.free), choose(freed_s, held_s, search.s)
    )
    return Face(free, upper), s, move & inside & verdict.wrong & ~room


def solve(
    G: Float[Array, "h d1"],
    X: Float[Array, "n d1"],
    C: Float[Array, "n h"],
    kinked: Bool[Array, "n h"],
    norms: Float[Array, " n"],
    warm: Face,
    factor: Factor | None = None,
    held=True,
    search: bool = True,
) -> Box:
    """The box problem of every neuron (module docstring): `G` the gradients $b_j$ of
    the active pairs, `X` the (augmented) inputs, `C` the coefficients $c_{ij}$,
    `kinked` the pairs on a kink, `norms` the inputs' norms (1 for a zero input),
    `warm` the face to start from (valid slots first; their number fixes how many
    free pairs a neuron may have), `factor` its factor if known (where it is not of
    the warm face's valid slots, that neuron's is recomputed), `held` whether some
    pair on a kink may be held rather than free there. With `search=False`, the
    solution on the warm face and its factor, whether or not it meets the KKT
    conditions. Differentiable in forward mode in `G` and `C` (the face found is
    held)."""
    n, f = X.shape[0], warm.free.shape[1]
    warm = Face(warm.free, warm.upper & kinked)
    first = _on_face(G, X, C, kinked, warm, factor, held)
    verdict = _assess(X, C, kinked, norms, warm.upper, first, held)
    # A neuron whose factor is stale is not judged: the search recomputes it on the
    # same face first.
    stale = first.stale
    verdict = _Verdict(
        verdict.outside & ~stale[:, None], verdict.worst, verdict.wrong & ~stale
    )
    done = verdict.done() & ~stale
    no = jnp.zeros_like(done)
    if not search:
        return _box(first, warm, jnp.ones_like(done), no, jnp.array(0), first.w)

    def search():
        G_, X_, C_ = jax.lax.stop_gradient((G, X, C))

        def cond(c: _Search):
            return jnp.any(~c.done & ~c.overflow) & (
                c.iterations < max_iterations(n, f)
            )

        def body(c: _Search):
            face, s, overflow = _next_face(c)
            solved = _on_face(G_, X_, C_, kinked, face)
            verdict = _assess(X_, C_, kinked, norms, face.upper, solved)
            overflow = c.overflow | overflow
            done = c.done | verdict.done() | overflow
            return _Search(face, s, solved, verdict, done, overflow, c.iterations + 1)

        s = jnp.where(first.free >= 0, jnp.clip(first.s, 0.0, 1.0), 0.0)
        init = _Search(
            warm,
            s,
            jax.lax.stop_gradient(first),
            verdict,
            done,
            jnp.zeros_like(done),
            jnp.array(0),
        )
        out = jax.lax.while_loop(cond, body, init)
        solved = _on_face(G, X, C, kinked, out.face, out.solved.factor)
        return solved, out.face, out.done, out.overflow, out.iterations

    found = when(~jnp.all(done), search, (first, warm, done, no, jnp.array(0)))
    return _box(*found, first.w)


def _box(solved: _Solved, face: Face, done, overflow, iterations, warm) -> Box:
    return Box(
        direction=solved.w,
        warm=warm,
        s=jnp.clip(solved.s, 0.0, 1.0),
        face=Face(solved.free, face.upper),
        factor=solved.factor,
        scale=_norm(solved.b),
        overflow=overflow,
        converged=jnp.all(done | overflow),
        iterations=iterations,
    )
