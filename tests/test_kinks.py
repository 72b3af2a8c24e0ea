import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxflow as jf
from jaxflow import _relu
from jaxflow._kinks import _min_norm, _two_layer

from helpers import (
    boursier_flammarion_problem,
    kink_crossing_problem,
    relative_error,
    relu_problem,
)


@pytest.mark.parametrize("empty", [(), (0,), (1,), (0, 2)])
def test_box_least_squares_is_exact(empty):
    optimize = pytest.importorskip("scipy.optimize")
    k = _min_norm.MAX_KINKS
    valid = jnp.array([i not in empty for i in range(k)])
    rng = np.random.default_rng(0)
    for _ in range(30):
        g = jnp.asarray(rng.normal(size=6))
        M = jnp.asarray(rng.normal(size=(k, 6)) * rng.uniform(0.1, 3, size=(k, 1)))
        s = _min_norm._box_lsq(g, M, valid)
        A = np.asarray(M[np.asarray(valid)].T)
        ref = optimize.lsq_linear(A, -np.asarray(g), bounds=(0, 1), tol=1e-14)
        best = np.sum((np.asarray(g) + A @ ref.x) ** 2)
        ours = float(jnp.sum((g + M.T @ s) ** 2))
        assert ours <= best + 1e-12 * (1 + best)
        assert bool(jnp.all((s >= 0) & (s <= 1) & (valid | (s == 0))))


@pytest.mark.parametrize("bias", [False, True])
def test_field_off_kinks_is_the_gradient(bias):
    flow, net = relu_problem(n=15, d=4, width=7, scale=1.0, bias=bias)
    params, _ = eqx.partition(net, eqx.is_inexact_array)
    problem = _min_norm.ReLUProblem(flow, net)
    pattern, _ = _min_norm.pattern_at(params, problem, _relu.KINK_TOL)
    assert int(jnp.sum(pattern.slots >= 0)) == 0
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
    assert exact.stats["num_vf_evals"] < 0.6 * plain.stats["num_vf_evals"]
    assert np.allclose(exact.metrics["loss"], reference.metrics["loss"], rtol=1e-8)


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


def test_num_vf_evals_counts_real_gradient_evaluations():
    calls = []

    class Counted(jf.losses.AbstractLoss):
        reduction: str = eqx.field(default="mean", static=True)
        needs_pm1_labels = False

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
    pieces = _two_layer.MinNorm(_min_norm.ReLUProblem(flow, net), 1e-8, 1e-8)
    pattern = _min_norm.Pattern(
        active=jnp.ones((2, 2), bool), slots=-jnp.ones((2, 4), int)
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
