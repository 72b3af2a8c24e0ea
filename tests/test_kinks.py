import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxflow as jf
from jaxflow import _relu
from jaxflow._kinks import _box, _min_norm, _two_layer

from helpers import (
    boursier_flammarion_problem,
    flat,
    kink_crossing_problem,
    relative_error,
    relu_problem,
)


def _box_reference(G, X, C, K):
    """The least-norm element of each neuron's box problem by scipy's `lsq_linear`
    (BVLS): `(h, d1)`."""
    optimize = pytest.importorskip("scipy.optimize")
    out = np.array(G, dtype=float)
    for j in range(G.shape[0]):
        idx = np.flatnonzero(K[:, j])
        if idx.size:
            A = (C[idx, j][:, None] * X[idx]).T
            s = optimize.lsq_linear(A, -G[j], bounds=(0, 1), method="bvls", tol=1e-15).x
            out[j] = G[j] + A @ s
    return out


def test_box_problem_is_exact():
    """`_box.solve` (Lawson-Hanson active set) against scipy's BVLS on random problems,
    up to 50 points on one neuron's kink, 48 of them in a 3-dimensional subspace
    (linearly dependent columns, so s is not unique): the least-norm element agrees
    to rounding, whether started cold, from the solution's face (no face change),
    or from a wrong face; and s certifies it (in the box, and it rebuilds w)."""
    rng = np.random.default_rng(0)
    h, n, d1 = 5, 60, 6
    solve = jax.jit(_box.solve)
    cold = _box.Face(jnp.full((h, d1), -1, jnp.int32), jnp.zeros((n, h), bool))
    for _ in range(8):
        X = rng.normal(size=(n, d1))
        X[:48] = rng.normal(size=(48, 3)) @ rng.normal(size=(3, d1))
        G = 3 * rng.normal(size=(h, d1))
        C = rng.normal(size=(n, h))
        K = rng.uniform(size=(n, h)) < rng.uniform(0.05, 0.9, size=(1, h))
        K[:50, 0] = True
        args = [jnp.asarray(a) for a in (G, X, C, K, np.linalg.norm(X, axis=1))]
        reference = _box_reference(G, X, C, K)
        box = solve(*args, cold)
        wrong = _box.Face(
            jnp.asarray(np.where(rng.uniform(size=(h, d1)) < 0.5, -1, rng.integers(0, n, (h, d1))), jnp.int32),
            jnp.asarray(rng.uniform(size=(n, h)) < 0.3),
        )  # fmt: skip
        for start in (box.face, wrong):
            free, s = _box.compact(start.free, jnp.zeros(start.free.shape))
            again = solve(*args, _box.Face(free, start.upper))
            assert float(jnp.max(jnp.abs(again.direction - box.direction))) < 1e-12
        assert int(solve(*args, box.face).iterations) == 0
        assert bool(box.converged) and not bool(jnp.any(box.overflow))
        size = np.linalg.norm(G, axis=1, keepdims=True)
        assert np.max(np.abs(np.asarray(box.direction) - reference) / size) < 1e-12
        s = np.asarray(box.multipliers(n))
        assert np.all((s >= 0) & (s <= 1)) and np.all(s[~K] == 0)
        rebuilt = G + (s * C).T @ X
        assert np.max(np.abs(rebuilt - np.asarray(box.direction)) / size) < 1e-12


def _min_norm_reference(net, X, y, on):
    """The least-norm element of the half-square loss's subdifferential at a
    `TwoLayerReLU` with a bias, with the pairs `on` (n, h) on their kink, from NumPy
    and scipy alone: `(gradient in (w_j, b_j) rows, gradient in v)`."""
    W, v, b = (np.asarray(a) for a in (net.W, net.v, net.b))
    X1 = np.concatenate([X, np.ones((X.shape[0], 1))], axis=1)
    Z = np.where(on, 0.0, X1 @ np.concatenate([W, b[:, None]], axis=1).T)
    r = (np.maximum(Z, 0) @ v - y) / X.shape[0]
    G = ((Z > 0) * r[:, None] * v[None, :]).T @ X1
    return _box_reference(G, X1, r[:, None] * v[None, :], on), np.maximum(Z, 0).T @ r


def test_compact_is_a_stable_partition():
    """`_box.compact` puts each row's valid slots first, both groups in their order
    (against numpy's stable argsort)."""
    rng = np.random.default_rng(0)
    free = np.where(rng.random((40, 9)) < 0.5, rng.integers(0, 100, (40, 9)), -1)
    values = rng.standard_normal((40, 9))
    order = np.argsort(free < 0, axis=1, kind="stable")
    got_free, got_values = _box.compact(jnp.asarray(free), jnp.asarray(values))
    np.testing.assert_array_equal(got_free, np.take_along_axis(free, order, 1))
    np.testing.assert_array_equal(got_values, np.take_along_axis(values, order, 1))


def test_min_norm_gradient_with_50_points_on_one_kink():
    """Neuron 0 on the kinks of 50 of 60 points (in 11 dimensions, with the bias),
    put on the hyperplane of its kink: the min-norm field agrees with scipy's
    `lsq_linear` to rounding, some multipliers strictly inside (0, 1), others at both
    bounds; and the flow from there is solved."""
    rng = np.random.default_rng(0)
    d, n = 10, 60
    net = jf.models.TwoLayerReLU(d, 5, scale=1.0, bias=True, key=jax.random.key(8))
    w, b = np.asarray(net.W[0]), float(net.b[0])
    X = rng.normal(size=(n, d))
    X[:50] -= np.outer((X[:50] @ w + b) / (w @ w), w)
    teacher = jf.models.TwoLayerReLU(d, 3, scale=1.0, bias=True, key=jax.random.key(7))
    y = np.asarray(teacher(jnp.asarray(X)))
    flow = jf.GradientFlow(
        jf.losses.half_square, jf.Dataset(jnp.asarray(X), jnp.asarray(y))
    )
    on = np.zeros((n, 5), bool)
    on[:50, 0] = True
    assert np.array_equal(
        np.abs(np.asarray(net.preactivations(flow.data.X))) < 1e-12, on
    )
    gU, gv = _min_norm_reference(net, X, y, on)
    got = flow.min_norm_gradient(net)
    got_U = np.concatenate([np.asarray(got.W), np.asarray(got.b)[:, None]], axis=1)
    assert np.max(np.abs(got_U - gU)) < 1e-13 * np.max(np.abs(gU))
    assert np.max(np.abs(np.asarray(got.v) - gv)) < 1e-13 * np.max(np.abs(gv))
    plain = np.asarray(flow.gradient(net).W[0])
    assert np.max(np.abs(plain - gU[0, :d])) > 0.1 * np.max(np.abs(gU))  # a real kink
    problem = _min_norm.ReLUProblem(flow, net)
    params = eqx.filter(net, eqx.is_inexact_array)
    pattern = _min_norm.pattern_at(params, problem, _relu.KINK_TOL)
    s = np.asarray(_min_norm.field(params, pattern, problem).box.multipliers(n))[:50, 0]
    assert np.sum((s > 1e-3) & (s < 1 - 1e-3)) >= 1
    assert np.sum(s == 0) >= 1 and np.sum(s == 1) >= 1
    sol = jf.solve(flow, net, t1=1.0, rtol=1e-8, save_models=False, metrics={})
    assert sol.status == jf.RESULTS.successful


def test_sliding_on_the_intersection_of_five_kinks():
    """One neuron on the kinks of 5 points (in 7 dimensions), with data built so that
    its minimum-norm field has s = (0.2, 0.3, 0.4, 0.3, 0.2): it slides along the
    intersection of the 5 surfaces. The reference is the same flow written as a smooth
    ODE on that intersection (w in the complement of the 5 points' span, by scipy's
    DOP853), with lsq_linear confirming along it that every s stays in (0, 1). And with
    fewer free slots than the 5 it needs, the solve stops with `kink_overflow`, naming
    the limit and the neuron."""
    optimize = pytest.importorskip("scipy.optimize")
    integrate = pytest.importorskip("scipy.integrate")
    rng = np.random.default_rng(0)
    d, n, T = 7, 6, 2.0
    w0 = rng.normal(size=d)
    w0 /= np.linalg.norm(w0)
    K = rng.normal(size=(5, d))
    K -= np.outer(K @ w0, w0)  # on the kink of w0
    y = np.append(rng.uniform(0.5, 1.5, 5), 3.0)
    s0, v0 = np.array([0.2, 0.3, 0.4, 0.3, 0.2]), 1.0
    # The active point x = S + w0 (z = 1): S cancels sum_k s0_k c_k x_k, c_k = -y_k / n.
    r = (v0 - y[5]) / n
    x = (s0 * y[:5]) @ K / (n * r) + w0
    X = np.vstack([K, x])

    def multipliers(w, v):  # of the box problem, by lsq_linear
        z = x @ w
        G = v * (v * z - y[5]) / n * x
        A = (-v * y[:5] / n)[None, :] * K.T
        return optimize.lsq_linear(A, -G, bounds=(0, 1), method="bvls", tol=1e-15).x

    B = np.linalg.qr(K.T, mode="complete")[0][:, 5:]  # the intersection's directions

    def rhs(t, theta):
        w, v = B @ theta[:2], theta[2]
        r = (v * (x @ w) - y[5]) / n
        return -np.append(B.T @ (v * r * x), r * (x @ w))

    ts = np.linspace(0.0, T, 11)
    ref = integrate.solve_ivp(rhs, (0, T), np.append(B.T @ w0, v0), method="DOP853",
                              rtol=1e-12, atol=1e-14, t_eval=ts)  # fmt: skip
    s = np.array([multipliers(B @ ref.y[:2, i], ref.y[2, i]) for i in range(ts.size)])
    assert np.allclose(s[0], s0, atol=1e-12) and 0.05 < s.min() and s.max() < 0.95
    net = jf.models.TwoLayerReLU(d, 1, scale=1.0, key=jax.random.key(0))
    net = eqx.tree_at(
        lambda m: (m.W, m.v), net, (jnp.asarray(w0)[None], jnp.array([v0]))
    )
    flow = jf.GradientFlow(
        jf.losses.half_square, jf.Dataset(jnp.asarray(X), jnp.asarray(y))
    )
    sol = jf.solve(flow, net, t1=T, rtol=1e-10, ts=jnp.asarray(ts))
    assert sol.status == jf.RESULTS.successful
    assert np.all(np.asarray(sol.metrics["num_sliding"]) == 5)
    Z = np.asarray(jax.vmap(lambda m: m.preactivations(flow.data.X))(sol.ys))[:, :5, 0]
    assert np.max(np.abs(Z)) < 1e-14 * np.max(np.linalg.norm(X, axis=1))
    end = np.append(B @ ref.y[:2, -1], ref.y[2, -1])
    got = np.append(np.asarray(sol.final.W[0]), float(sol.final.v[0]))
    assert np.max(np.abs(got - end)) < 1e-9 * np.max(np.abs(end))
    assert float(sol.metrics["loss"][-1]) < 0.7 * float(sol.metrics["loss"][0])
    # Room for 3 free pairs a neuron (FREE_BYTES over 8 bytes x width x (d + 1) floats).
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_min_norm, "FREE_BYTES", 3 * 8 * d)
        short = jf.solve(flow, net, t1=T, rtol=1e-10, save_models=False, metrics={})
    assert short.status_name == "kink_overflow"
    assert "FREE_BYTES" in short.message and "(Neuron 0.)" in short.message


@pytest.mark.parametrize("bias", [False, True])
def test_field_off_kinks_is_the_gradient(bias):
    flow, net = relu_problem(n=15, d=4, width=7, scale=1.0, bias=bias)
    params, _ = eqx.partition(net, eqx.is_inexact_array)
    problem = _min_norm.ReLUProblem(flow, net)
    pattern = _min_norm.pattern_at(params, problem, _relu.KINK_TOL)
    assert int(jnp.sum(pattern.kinked)) == 0
    F = _min_norm.field(params, pattern, problem)
    assert relative_error(F.gradient, flow.gradient(net)) < 1e-13
    assert float(abs(F.value - flow(net))) < 1e-14
    assert relative_error(flow.min_norm_gradient(net), flow.gradient(net)) < 1e-13


@pytest.mark.parametrize("bias", [False, True])
def test_min_norm_gradient_on_a_kink(bias):
    """Put neuron 0 exactly on the kink of point 0; the min-norm element must be the
    least-norm point of the segment between the two one-sided gradients."""
    flow, net = relu_problem(
        n=15, d=4, width=7, scale=1.0, bias=bias, loss=jf.losses.square
    )
    x = flow.data.X[0]
    x1 = x if not bias else jnp.append(x, 1.0)
    u = net.W[0] if not bias else jnp.append(net.W[0], net.b[0])
    u = u - (u @ x1) / (x1 @ x1) * x1
    net = eqx.tree_at(lambda m: m.W, net, net.W.at[0].set(u[: x.shape[0]]))
    if bias:
        net = eqx.tree_at(lambda m: m.b, net, net.b.at[0].set(u[-1]))
    assert abs(float(net.preactivations(x)[0])) < 1e-15

    def at(offset):  # the gradient just off the kink, on one side
        moved = eqx.tree_at(lambda m: m.W, net, net.W.at[0].add(offset * x))
        if bias:
            moved = eqx.tree_at(lambda m: m.b, moved, moved.b.at[0].add(offset))
        return jax.flatten_util.ravel_pytree(flow.gradient(moved))[0]

    below, above = at(-1e-9), at(1e-9)
    s = np.linspace(0, 1, 200_001)
    norms = np.linalg.norm(
        np.asarray(below)[None] + s[:, None] * np.asarray(above - below), axis=1
    )
    best = below + s[np.argmin(norms)] * (above - below)
    got = jax.flatten_util.ravel_pytree(flow.min_norm_gradient(net))[0]
    assert float(jnp.linalg.norm(got - best) / jnp.linalg.norm(best)) < 1e-6
    assert float(jnp.linalg.norm(got)) <= float(np.min(norms)) * (1 + 1e-6)


@pytest.mark.slow  # (`pytest -m slow`; CI runs it)
def test_no_sliding_agrees_with_the_plain_solve():
    flow, net = kink_crossing_problem()
    reference = jf.solve(flow, net, t1=5.0, rtol=1e-13, kinks="plain", max_steps=10**6)
    plain = jf.solve(flow, net, t1=5.0, rtol=1e-10, kinks="plain")
    exact = jf.solve(flow, net, t1=5.0, rtol=1e-10, kinks="min-norm")
    assert exact.status == jf.RESULTS.successful
    assert int(exact.stats["num_crossings"] + exact.stats["num_small_crossings"]) >= 2
    assert int(exact.stats["num_slides"]) == 0
    assert int(exact.metrics["num_crossings"][-1]) == int(exact.stats["num_crossings"])
    error = relative_error(exact.final, reference.final)
    assert error < 1e-8
    assert error <= relative_error(plain.final, reference.final)
    # (Each correction of a step's end counts as three gradient evaluations.)
    assert int(exact.stats["num_vf_evals"]) < 0.6 * int(plain.stats["num_vf_evals"])
    assert np.allclose(exact.metrics["loss"], reference.metrics["loss"], rtol=1e-8)


@pytest.mark.slow  # (`pytest -m slow`; CI runs it)
def test_auto_picks_min_norm_for_relu_nets_only():
    flow, net = kink_crossing_problem()
    assert "num_kink_events" in jf.solve(flow, net, t1=0.1).stats
    assert "num_kink_events" not in jf.solve(flow, net, t1=0.1, kinks="plain").stats
    linear = jf.GradientFlow(jf.losses.square, flow.data)
    sol = jf.solve(linear, jf.models.Linear(3, key=jax.random.key(0)), t1=0.1)
    assert "num_kink_events" not in sol.stats
    with pytest.raises(ValueError, match="kinks='min-norm' needs a loss whose ReLUs"):
        jf.solve(
            linear, jf.models.Linear(3, key=jax.random.key(0)), t1=0.1, kinks="min-norm"
        )
    with pytest.raises(ValueError, match="`kinks` must be 'auto'.*got 'filippov'"):
        jf.solve(flow, net, t1=0.1, kinks="filippov")


@pytest.mark.slow  # (`pytest -m slow`; CI runs it)
def test_sliding_pairs_stay_on_their_kink():
    """Boursier-Flammarion data at scale 0.1: neurons with a_j < 0 slide along a data
    point's kink, where the plain solve stalls."""
    flow, net = boursier_flammarion_problem(width=20, scale=0.1, seed=4)
    ts = jnp.linspace(0.0, 30.0, 61)
    sol = jf.solve(flow, net, t1=30.0, rtol=1e-9, ts=ts)
    assert sol.status == jf.RESULTS.successful
    assert int(sol.stats["num_slides"]) > 0
    sliding = np.asarray(sol.metrics["num_sliding"])
    assert sliding.max() > 0
    X1 = jnp.concatenate([flow.data.X, jnp.ones((3, 1))], axis=1)

    def on_kink(m):
        u = jnp.concatenate([m.W, m.b[:, None]], axis=1)
        scale = (
            jnp.linalg.norm(X1, axis=1)[:, None] * jnp.linalg.norm(u, axis=1)[None, :]
        )
        return jnp.sum(jnp.abs(X1 @ u.T) <= 1e-13 * scale)

    exact = np.asarray(jax.vmap(on_kink)(sol.ys))
    assert np.all(exact >= sliding)  # sliding pairs sit on z = 0 to rounding
    assert float(jnp.max(sol.metrics["conserved_drift"])) < 1e-8
    stalled = jf.solve(
        flow, net, t1=30.0, rtol=1e-9, ts=ts, kinks="plain", max_steps=4000
    )
    assert stalled.status == jf.RESULTS.max_steps_reached
    assert int(sol.stats["num_steps"]) < 1000


@pytest.mark.slow  # (`pytest -m slow`; CI runs it)
def test_grazing_pairs_slide_instead_of_recrossing():
    """Dopri8 at rtol 1e-4, width 200 (the performance suite's problem iii): near
    t = 41.7 four pairs reach their kink where the field on their side turns tangent.
    Sent back to that side, each was located crossing again at ever shorter steps and
    the solve ran out of steps at t = 41.74; they slide instead."""
    flow = jf.GradientFlow(jf.losses.square, jf.datasets.boursier_flammarion())
    net = jf.models.TwoLayerReLU(
        1, 200, scale=0.1, bias=True, fan="width",
        key=jax.random.split(jax.random.key(0))[1],
    )  # fmt: skip
    sol = jf.solve(flow, net, t1=100.0, ts=jnp.array([100.0]), rtol=1e-4,
                   solver=dfx.Dopri8(), metrics={}, max_steps=2000)  # fmt: skip
    assert sol.status == jf.RESULTS.successful
    assert int(sol.stats["num_steps"]) < 500
    assert int(sol.stats["num_slides"]) > 0


@pytest.mark.slow  # (`pytest -m slow`; CI runs it)
def test_gradient_descent_converges_to_the_sliding_flow():
    """GD crosses a sliding surface back and forth; its error against the min-norm flow
    must still shrink like the step."""
    flow, net = boursier_flammarion_problem(width=10, scale=0.1, seed=2)
    T = 10.0
    sol = jf.solve(flow, net, t1=T, rtol=1e-11, ts=jnp.array([T]))
    assert int(sol.stats["num_slides"]) > 0
    target = sol.final(flow.data.X)
    errors = []
    for lr in (1e-2, 1e-3, 1e-4):
        gd = jf.gradient_descent(
            flow, net, lr=lr, steps=int(round(T / lr)), ts=jnp.array([T])
        )
        errors.append(float(jnp.max(jnp.abs(gd.final(flow.data.X) - target))))
    order = np.polyfit(np.log([1e-2, 1e-3, 1e-4]), np.log(errors), 1)[0]
    assert 0.8 < order < 1.2, errors
    assert errors[-1] < 1e-3


@pytest.mark.slow  # (`pytest -m slow`; CI runs it)
@pytest.mark.parametrize("scale,seed", [(1e-3, 1), (1e-2, 2)])
def test_stepping_over_crossings_of_sliding_neurons_in_regression(scale, seed):
    """Teacher-student regression at a loose tolerance: crossings stepped over by the
    hundreds while neurons slide. GD's error against the flow shrinks like its step,
    so the flow must be about 10 times closer to GD at lr 1e-4 than to GD at lr 1e-3
    (8.5 and 9.7, and 9.9 and 9.5 at seeds 3 and 4; before a sliding neuron's face
    changes were charged to the error, and pairs that left their kink in a step
    released before the correction, 1.2 and 3.0)."""
    teacher = jf.models.TwoLayerReLU(5, 3, scale=1.0, key=jax.random.key(100 + seed))
    data = jf.datasets.GaussianTeacher(teacher).sample(jax.random.key(101 + seed), 100)
    flow = jf.GradientFlow(jf.losses.half_square, data)
    net = jf.models.TwoLayerReLU(
        5, 20, scale=scale, bias=True, key=jax.random.key(seed)
    )
    T, ts = 20.0, jnp.array([20.0])
    sol = jf.solve(flow, net, t1=T, ts=ts, rtol=1e-6, metrics={})
    assert sol.status == jf.RESULTS.successful
    assert int(sol.stats["num_small_crossings"]) > 500
    assert int(sol.stats["num_slides"]) > 10
    gd = [
        jf.gradient_descent(flow, net, lr=lr, steps=round(T / lr), ts=ts).final
        for lr in (1e-3, 1e-4)
    ]
    far = [np.linalg.norm(flat(sol.final) - flat(g)) for g in gd]
    assert far[0] / far[1] > 6, far


@pytest.mark.slow  # (`pytest -m slow`; CI runs it)
@pytest.mark.parametrize("bias", [False, True])
def test_vmap_over_seeds_matches_single_solves(bias):
    if bias:
        flow, _ = boursier_flammarion_problem(width=10, scale=0.1, seed=0)
    else:
        flow, _ = kink_crossing_problem()
    d = flow.data.X.shape[1]

    def run(key):
        net = jf.models.TwoLayerReLU(d, 10, scale=0.5, bias=bias, fan="width", key=key)
        return jf.solve(flow, net, t1=20.0, rtol=1e-11, ts=jnp.linspace(0, 20.0, 5))

    keys = jax.random.split(jax.random.key(5), 3)
    batch = jax.jit(jax.vmap(run))(keys)
    assert bool(jnp.all(batch.status == jf.RESULTS.successful))
    crossings = batch.stats["num_crossings"] + batch.stats["num_small_crossings"]
    assert int(jnp.sum(crossings)) > 0
    for i, key in enumerate(keys):
        alone = run(key)
        assert (
            relative_error(jax.tree.map(lambda x: x[i], batch.final), alone.final)
            < 1e-8
        )
        assert int(batch.stats["num_crossings"][i]) == int(alone.stats["num_crossings"])


@pytest.mark.slow  # (`pytest -m slow`; CI runs it)
def test_num_vf_evals_counts_real_gradient_evaluations():
    calls = []

    class Counted(jf.losses.AbstractLoss):
        reduction: str = eqx.field(default="mean", static=True)
        targets = "real"

        def pointwise(self, prediction, target):
            jax.debug.callback(lambda: calls.append(1), ordered=True)
            return (prediction - target) ** 2

    flow, net = boursier_flammarion_problem(width=10, scale=0.1, seed=1)
    flow = jf.GradientFlow(Counted(), flow.data)
    for solver in (dfx.Tsit5(), dfx.Dopri5(), dfx.Heun()):
        calls.clear()
        sol = jf.solve(flow, net, t1=10.0, rtol=1e-6, solver=solver, metrics={})
        jax.block_until_ready(sol)
        assert int(sol.stats["num_kink_events"]) > 0
        # Each attempted step also evaluates the loss (not its gradient) at its end, to
        # find sign changes, and at its start when some pair changed sign; + 1: the
        # loss and gradient check at the final state. A correction of a step's end
        # (3 in `num_vf_evals`) calls the loss three times.
        assert int(sol.stats["num_corrections"]) > 0
        expected = (
            int(sol.stats["num_vf_evals"])
            + int(sol.stats["num_steps"])
            + int(sol.stats["num_crossing_steps"])
            + 1
        )
        assert len(calls) == expected, type(solver).__name__


def test_first_crossing_not_the_first_by_linear_interpolation():
    """Within a step the crossing is located on one candidate pair per neuron (the
    first by linear interpolation); a pair of the same neuron that crosses earlier
    along a curved path must still be found, and a neuron without crossings (here
    one whose pair sits a hair below its kink) has no candidate."""
    X = jnp.eye(2)
    flow = jf.GradientFlow(jf.losses.square, jf.Dataset(X, jnp.ones(2)))
    net = jf.models.TwoLayerReLU(2, 2, scale=1.0, key=jax.random.key(0))
    params, _ = eqx.partition(net, eqx.is_inexact_array)
    problem = _min_norm.ReLUProblem(flow, net)
    pieces = _two_layer.MinNorm(problem, 1e-8, 1e-8)
    pattern = eqx.tree_at(
        lambda p: (p.active, p.kinked),
        _min_norm.pattern_at(params, problem, _relu.KINK_TOL),
        (jnp.ones((2, 2), bool), jnp.zeros((2, 2), bool)),
    )

    class Path(eqx.Module):
        # Neuron 0: z_a = 1 - 4t + 2.9t^2 crosses at t = 0.328 and ends at -0.1
        # (linear guess 0.91); z_b = 1 - 2t crosses at 0.5 (linear guess 0.5).
        def evaluate(self, t):
            W = jnp.array([[1 - 4 * t + 2.9 * t**2, 1 - 2 * t], [-1e-20, 1.0]])
            return eqx.tree_at(lambda m: m.W, params, W)

    path = Path()
    e1 = pieces._excess(path.evaluate(1.0), pattern)
    crossed = jnp.array([[True, False], [True, False]])
    assert bool(jnp.all(e1[:, 0] < 0)) and float(e1[0, 1]) < 0
    t = pieces._first_crossing(0.0, 1.0, e1, crossed, pattern, path)
    assert abs(float(t) - (4 - np.sqrt(16 - 11.6)) / 5.8) < 1e-12
    # Only the straight pair crosses: its own root.
    t = pieces._first_crossing(
        0.0, 1.0, e1, crossed & jnp.array([[False], [True]]), pattern, path
    )
    assert abs(float(t) - 0.5) < 1e-12


@pytest.mark.slow  # (`pytest -m slow`; CI runs it)
def test_crossings_on_a_sliding_neuron_charged_where_its_face_changes():
    """A crossing on a neuron sliding along a kink is stepped over, its correction
    holding the neuron's pair on the kink; where the crossing moves that pair's
    multiplier out of (0, 1) (the one-kink box problem's closed form
    s = -<g, x_a> / (c_a |x_a|^2)), the field's drift from the held face,
    |s - clip(s)| |c_a x_a| entrywise, is charged to the step's error, and nothing
    where it stays inside. Random instances: a neuron u = (1, 0) with point a on its
    kink, point b just off it, the rest random."""
    net = jf.models.TwoLayerReLU(2, 1, scale=1.0, key=jax.random.key(0))
    net = eqx.tree_at(lambda m: m.W, net, jnp.array([[1.0, 0.0]]))

    @jax.jit
    def decide(X, target, v):
        flow = jf.GradientFlow(jf.losses.half_square, jf.Dataset(X, target))
        params, _ = eqx.partition(eqx.tree_at(lambda m: m.v, net, v), eqx.is_array)
        pieces = _two_layer.MinNorm(_min_norm.ReLUProblem(flow, net), 1e-8, 1e-8)
        start = pieces.init(params)
        y, pattern = start.y, start.piece
        _, _, _, r = _min_norm.forward(y, pattern, pieces.problem)
        one = jnp.array([True])
        pairs = _two_layer.Pairs(jnp.array([1], jnp.int32), jnp.array([0]), one)
        sign = jnp.where(pairs.at(pattern.active), 1.0, -1.0)
        got, drift = pieces._on_sliding(y, pattern, pairs, sign, one, ~one)
        return pattern.kinked[:, 0], pattern.active[:, 0], r, y.v[0], got, drift

    charged = {False: 0, True: 0}
    for seed in range(200):
        rng = np.random.default_rng(seed)
        X = rng.normal(size=(8, 2))
        X[0] = [0.0, 1.3]  # a, on the kink
        X[1] = [1e-6 * np.sign(rng.normal()), 3 * rng.normal()]  # b, just off it
        v = jnp.array([rng.choice([-1.0, 1.0])])
        kinked, active, r, v, got, drift = map(
            np.asarray, decide(jnp.asarray(X), jnp.asarray(rng.normal(size=8)), v)
        )
        if not kinked[0] or kinked[1]:
            continue  # a leaves its kink at once (its s at a bound): no sliding

        def multiplier(active):  # s of pair a, closed form
            g = v * (np.where(active, r, 0.0) @ X)
            return -(g @ X[0]) / (v * r[0] * (X[0] @ X[0]))

        flipped = active.copy()
        flipped[1] = ~flipped[1]
        assert 0 < multiplier(active) < 1
        s = multiplier(flipped)
        expected = np.abs((s - np.clip(s, 0.0, 1.0)) * v * r[0] * X[0])
        # (The crossing pair b does not slide here: its jump is not `large`.)
        assert not got[0]
        # (b's flip also moves the residuals, by its z ~ 1e-6: not in the closed form.)
        np.testing.assert_allclose(drift[0], expected, rtol=1e-4, atol=1e-12)
        charged[bool(np.any(drift > 0))] += 1
    assert charged[True] >= 10 and charged[False] >= 10, charged


def _one_step_over_kinks(flow, model, h, rtol):
    """One Tsit5 step of length `h` from `model` with the min-norm pieces, its
    crossings stepped over and corrected; returns the pairs stepped over, and in the
    controller's scaled RMS norm: the corrected end's actual error, the error estimate
    the controller sees (solver + `Cut.error`), the uncorrected end's error. The
    reference is the plain flow at rtol 1e-13 (no pair slides on this data)."""
    params, static = eqx.partition(model, eqx.is_inexact_array)
    atol = rtol * 1e-3
    # Tolerances of 1 for the pieces: every crossing is stepped over (none is cut at
    # for its error); the errors are compared in the norm of `rtol`, `atol`.
    pieces = _two_layer.MinNorm(_min_norm.ReLUProblem(flow, model), 1.0, 1.0)
    start = pieces.init(params)
    y0, pattern = start.y, start.piece
    term, solver = pieces.term(), dfx.Tsit5()
    t0, t1 = jnp.array(0.0), jnp.array(h)
    state = solver.init(term, t0, t1, y0, pattern)
    y1, y_error, dense, _, _ = solver.step(term, t0, t1, y0, pattern, state, False)
    interp = solver.interpolation_cls(t0=t0, t1=t1, **dense)
    cut = pieces.cut(t0, t1, y0, y1, None, pattern, interp)
    assert not bool(cut.event)
    end = pieces.switch(y1, pattern, cut, jnp.array(True)).y
    ref = jf.solve(flow, eqx.combine(y0, static), t1=h, ts=jnp.array([h]),
                   rtol=1e-13, kinks="plain", solver=dfx.Dopri8(), metrics={},
                   max_steps=10**6)  # fmt: skip
    ref = eqx.filter(ref.final, eqx.is_inexact_array)
    scale = jax.tree.map(
        lambda a, b: atol + rtol * jnp.maximum(jnp.abs(a), jnp.abs(b)), y0, y1
    )

    def rms(tree):
        scaled = jax.tree.map(lambda x, w: jnp.ravel(x / w), tree, scale)
        return float(jnp.sqrt(jnp.mean(jnp.concatenate(jax.tree.leaves(scaled)) ** 2)))

    estimate = jax.tree.map(lambda e, c: jnp.abs(e) + c, y_error, cut.error)
    return (
        int(jnp.sum(cut.crossed.stepped)),
        rms(jax.tree.map(jnp.subtract, end, ref)),
        rms(estimate),
        rms(jax.tree.map(jnp.subtract, y1, ref)),
    )


@pytest.mark.slow  # (`pytest -m slow`; CI runs it)
def test_stepping_over_crossings_error_estimate_bounds_the_error():
    """Steps over many crossings (several per neuron) early in a separable flow: the
    corrected end is far closer than the uncorrected one, and the error estimate the
    controller sees bounds its actual error."""
    flow, net = relu_problem(n=40, d=5, width=10, scale=1e-3)
    later = jf.solve(flow, net, t1=0.5, ts=jnp.array([0.5]), rtol=1e-12, metrics={})
    for model in (net, later.final):
        for h in (0.3, 0.1):
            stepped, actual, estimate, uncorrected = _one_step_over_kinks(
                flow, model, h, 1e-8
            )
            assert stepped >= 4
            assert actual <= estimate, (h, actual, estimate)
            assert actual < uncorrected / 5, (h, actual, uncorrected)


@pytest.mark.slow  # (`pytest -m slow`; CI runs it)
def test_cost_follows_the_tolerance():
    """At a loose tolerance crossings are stepped over (few located), and the result
    beats plain's at a hundred times tighter rtol for less work; at a tight one the
    error follows the tolerance."""
    flow, net = relu_problem(n=60, d=5, width=10, scale=1e-6, seed=1)
    T, ts = 200.0, jnp.array([200.0])
    reference = jf.solve(flow, net, t1=T, ts=ts, rtol=1e-13, kinks="plain",
                         solver=dfx.Dopri8(), metrics={}, max_steps=10**6)  # fmt: skip

    def run(rtol, kinks):
        sol = jf.solve(flow, net, t1=T, ts=ts, rtol=rtol, kinks=kinks, metrics={})
        assert sol.status == jf.RESULTS.successful
        return sol, relative_error(sol.final, reference.final)

    loose, loose_error = run(1e-4, "auto")
    plain, plain_error = run(1e-6, "plain")
    stepped = int(loose.stats["num_small_crossings"])
    assert stepped > 20
    assert int(loose.stats["num_kink_events"]) < stepped / 20
    assert loose_error <= plain_error
    assert loose.stats["num_vf_evals"] < plain.stats["num_vf_evals"]
    tight, tight_error = run(1e-9, "auto")
    assert tight_error < 1e-8
    assert tight_error < run(1e-9, "plain")[1]

    # A step over more crossings than it lists is tried again, shorter (it used to be
    # cut at its first crossing, and the next as long again: one step per crossing).
    # (Two saves: a program of its own, traced with the patched list.)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_min_norm, "crossings_listed", lambda n, width: 20)
        short = jf.solve(flow, net, t1=T, ts=jnp.array([T / 2, T]), rtol=1e-4,
                         metrics={})  # fmt: skip
    assert short.status == jf.RESULTS.successful
    retried = short.stats["num_rejected_steps"] - loose.stats["num_rejected_steps"]
    assert int(retried) > 0
    assert int(short.stats["num_kink_events"]) < stepped / 20
    assert short.stats["num_vf_evals"] < 2 * loose.stats["num_vf_evals"]
    assert relative_error(short.final, reference.final) <= plain_error
