import diffrax as dfx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np
import pytest

import jaxflow as jf

from helpers import kink_crossing_problem, relative_error, relu_problem, scipy_flow


def test_matches_scipy_dop853_through_kinks():
    pytest.importorskip("scipy.integrate")
    flow, net = kink_crossing_problem()
    t1 = 5.0
    sol = jf.solve(flow, net, t1=t1, rtol=1e-10, ts=jnp.linspace(0.0, t1, 2001))
    assert sol.status == jf.RESULTS.successful
    pre = jax.vmap(lambda m: m.preactivations(flow.data.X))(sol.ys)
    flips = jnp.sum(jnp.sign(pre[1:]) != jnp.sign(pre[:-1]), axis=0)
    assert int(jnp.sum(flips)) >= 2  # the trajectory crosses kinks ...
    assert int(jnp.max(flips)) == 1  # ... and never slides along one

    assert relative_error(sol.final, scipy_flow(flow, net, t1)) < 1e-7


def test_conserved_quantities_drift_below_1e_9_over_1e4():
    flow, net = relu_problem(n=20, d=5, width=10, scale=1e-6)
    sol = jf.solve(
        flow,
        net,
        t1=1e4,
        rtol=1e-10,
        ts=jnp.geomspace(1e-2, 1e4, 60),
        save_models=False,
    )
    assert sol.status == jf.RESULTS.successful
    assert sol.ys is None
    drift = np.asarray(sol.metrics["conserved_drift"])
    assert drift.shape == (60,)
    assert np.max(drift) <= 1e-9
    # It is a real check: the loss fell and the weights grew by orders of magnitude.
    assert sol.metrics["loss"][-1] < 1e-3 * sol.metrics["loss"][0]
    assert np.max(sol.metrics["neuron_norms"][-1]) > 1e5 * np.max(net.W)


def test_linear_model_matches_matrix_exponential():
    key = jax.random.key(0)
    X = jax.random.normal(key, (10, 3))
    y = jax.random.normal(jax.random.key(1), (10,))
    model = jf.models.Linear(3, bias=True, key=jax.random.key(2))
    flow = jf.GradientFlow(jf.losses.square, jf.Dataset(X, y))
    # theta = (w, b); L = mean (A theta - y)^2, dtheta/dt = -(2/n) A^T (A theta - y).
    A = jnp.column_stack([X, jnp.ones(10)])
    G = 2.0 / 10 * A.T @ A
    c = 2.0 / 10 * A.T @ y
    M = jnp.zeros((5, 5)).at[:4, :4].set(-G).at[:4, 4].set(c)
    ts = jnp.array([0.1, 0.7, 2.0, 5.0])
    sol = jf.solve(flow, model, t1=5.0, rtol=1e-12, ts=ts)
    theta0 = jnp.append(jnp.concatenate([model.w, model.b[None]]), 1.0)
    for k, t in enumerate(ts):
        exact = (jsl.expm(M * t) @ theta0)[:4]
        got = jnp.concatenate([sol.ys.w[k], sol.ys.b[k][None]])
        assert np.allclose(got, exact, rtol=1e-10, atol=1e-12)


def test_num_vf_evals_counts_real_gradient_evaluations():
    calls = []

    def counted(model, data):
        jax.debug.callback(lambda: calls.append(1), ordered=True)
        return jf.losses.exponential(model, data)

    flow, net = relu_problem(n=10, d=3, width=4, scale=0.1)
    flow = jf.GradientFlow(counted, flow.data)
    for solver in (dfx.Tsit5(), dfx.Dopri5(), dfx.Heun(), dfx.Dopri8()):
        calls.clear()
        # (A loss of one's own on a ReLU net would run the general kink mechanism,
        # whose crossing searches evaluate the loss too: count plain solves.)
        sol = jf.solve(
            flow, net, t1=5.0, rtol=1e-6, solver=solver, metrics={}, kinks="plain"
        )
        jax.block_until_ready(sol)
        # + 1: the loss and gradient check at the final state.
        assert len(calls) == int(sol.stats["num_vf_evals"]) + 1, type(solver).__name__
        assert sol.stats["num_steps"] == (
            sol.stats["num_accepted_steps"] + sol.stats["num_rejected_steps"]
        )


def test_under_jit_and_vmap_over_keys():
    flow, _ = relu_problem(n=12, d=4, width=6)
    keys = jax.random.split(jax.random.key(7), 3)

    # (Plain kinks: min-norm solves under vmap are tests/test_kinks.py's.)
    def run(key):
        net = jf.models.TwoLayerReLU(4, 6, scale=1e-3, key=key)
        return jf.solve(
            flow, net, t1=50.0, rtol=1e-12, ts=jnp.linspace(1.0, 50.0, 5), kinks="plain"
        )

    batch = jax.jit(jax.vmap(run))(keys)
    assert batch.metrics["loss"].shape == (3, 5)
    assert batch.ys.W.shape == (3, 5, 6, 4)
    assert bool(jnp.all(batch.status == jf.RESULTS.successful))
    for i, key in enumerate(keys):
        alone = run(key)
        # vmap changes rounding, hence step sizes: agreement to the solve's accuracy.
        assert (
            relative_error(jax.tree.map(lambda x: x[i], batch.final), alone.final)
            < 1e-8
        )
        assert np.allclose(batch.metrics["loss"][i], alone.metrics["loss"], rtol=1e-9)
    assert not np.allclose(batch.metrics["loss"][0], batch.metrics["loss"][1])


def test_errors_fire_under_jit():
    flow, net = relu_problem(n=8, d=3, width=4)
    run = jax.jit(lambda ts: jf.solve(flow, net, t1=1.0, ts=ts).metrics["loss"])
    assert run(jnp.array([0.2, 0.5])).shape == (2,)
    with pytest.raises(Exception, match="`ts` must be finite, non-decreasing"):
        jax.block_until_ready(run(jnp.array([0.5, 0.2])))
    with pytest.raises(Exception, match="`ts` must be finite, non-decreasing"):
        jax.block_until_ready(run(jnp.array([0.5, 2.0])))
    net32 = jax.tree.map(lambda x: x.astype(jnp.float32), net)
    flow32 = jf.GradientFlow(
        flow.loss, jax.tree.map(lambda x: x.astype(jnp.float32), flow.data)
    )
    with pytest.raises(
        ValueError, match=r"rtol=1e-10 needs float64 parameters.*jax_enable_x64"
    ):
        jax.jit(lambda m: jf.solve(flow32, m, t1=1.0, rtol=1e-10).final)(net32)
    with pytest.raises(ValueError, match=r"`flow.data` is float64 but `model`'s param"):
        jax.jit(lambda m: jf.solve(flow, m, t1=1.0, rtol=1e-4).final)(net32)


def test_float32_allowed_at_loose_tolerance():
    flow, net = relu_problem(n=8, d=3, width=4, scale=0.1)
    net32 = jax.tree.map(lambda x: x.astype(jnp.float32), net)
    data32 = jf.Dataset(flow.data.X, flow.data.y)
    data32 = jax.tree.map(lambda x: x.astype(jnp.float32), data32)
    sol = jf.solve(
        jf.GradientFlow(jf.losses.exponential, data32), net32, t1=1.0, rtol=1e-5
    )
    assert sol.final.W.dtype == jnp.float32
    assert sol.status == jf.RESULTS.successful


def test_bad_arguments_name_the_value():
    flow, net = relu_problem(n=8, d=3, width=4)
    with pytest.raises(ValueError, match=r"need finite t0 < t1, got t0=0.0, t1=-1.0"):
        jf.solve(flow, net, t1=-1.0)
    with pytest.raises(
        ValueError,
        match=r"`ts` must be finite, non-decreasing and inside \[0.0, 1.0\], got \[0.5, 2.0\]",
    ):
        jf.solve(flow, net, t1=1.0, ts=[0.5, 2.0])
    with pytest.raises(
        ValueError, match="`flow` must be a jaxflow.GradientFlow, got function"
    ):
        jf.solve(lambda m, d: 0.0, net, t1=1.0)
    with pytest.raises(
        ValueError, match="`flow` must be a jaxflow.GradientFlow, got method"
    ):
        jf.solve(jf.losses.square.__call__, net, t1=1.0)
    with pytest.raises(ValueError, match="`max_steps` must be a positive int, got 0"):
        jf.solve(flow, net, t1=1.0, max_steps=0)
    with pytest.raises(ValueError, match="`metrics` must be a dict"):
        jf.solve(flow, net, t1=1.0, metrics=["loss"])


def test_failures_are_reported_not_raised():
    flow, net = relu_problem(n=8, d=3, width=4)
    sol = jf.solve(flow, net, t1=1e3, max_steps=20, ts=jnp.array([1e-3, 1e3]))
    assert sol.status == jf.RESULTS.max_steps_reached
    assert sol.message.startswith("max_steps_reached: The maximum number")
    assert float(sol.t_final) < 1e3 and np.isinf(sol.metrics["loss"][-1])
    assert np.all(np.isfinite(sol.final.W))
    with pytest.raises(Exception, match="maximum number of solver steps"):
        jax.block_until_ready(
            jf.solve(flow, net, t1=1e3, max_steps=20, throw=True).final
        )


def test_failing_seed_in_a_batch_keeps_the_others():
    # L = sum(w^2) - log(w_0): finite for w_0 > 0, nan for w_0 < 0.
    def loss(model, data):
        return jnp.sum(model.w**2) - jnp.log(model.w[0])

    flow = jf.GradientFlow(loss, None)
    inits = jf.models.Linear(2, key=None)
    inits = jax.tree.map(
        lambda x: jnp.array([[1.0, 1.0], [-1.0, 1.0], [2.0, 0.5]]), inits
    )
    batch = jax.vmap(lambda m: jf.solve(flow, m, t1=3.0, rtol=1e-9))(inits)
    names = list(batch.status_name)
    assert names == ["successful", "nonfinite_gradient", "successful"]
    # The others reach the minimiser w = (1/sqrt 2, 0).
    for i in (0, 2):
        assert np.allclose(batch.final.w[i], [2**-0.5, 0.0], atol=1e-2)


@pytest.mark.slow  # (39 s; the README command stays under 10 minutes; CI runs it)
def test_implicit_solver_takes_the_controllers_tolerances():
    # diffrax's implicit solvers copy the controller's tolerances into their Newton
    # solve, whose arithmetic takes no JAX arrays; jaxflow's default atol is one.
    data = jf.datasets.separable(jax.random.key(0), 20, 5, 0.3)
    net = jf.models.TwoLayerReLU(5, 5, scale=1e-2, key=jax.random.key(1))
    flow = jf.GradientFlow(jf.losses.exponential, data)
    ts = jnp.array([10.0])
    implicit = jf.solve(flow, net, t1=10.0, ts=ts, rtol=1e-8, solver=dfx.Kvaerno5())
    explicit = jf.solve(flow, net, t1=10.0, ts=ts, rtol=1e-11)
    assert implicit.status_name == "successful"
    error = jnp.max(jnp.abs(implicit.final.W - explicit.final.W))
    assert float(error / jnp.max(jnp.abs(explicit.final.W))) < 1e-5


@pytest.mark.slow  # (`pytest -m slow`; CI runs it)
def test_metrics_on_stored_models_equal_metrics_in_the_loop():
    # With `save_models` the metrics are evaluated on the stored models after the time
    # loop; without, inside it. The same values, boolean metrics included, and the same
    # marks at times never reached (inf, True for booleans).
    flow, net = relu_problem(n=8, d=3, width=4, scale=0.1)
    metrics = jf.metrics.default_metrics(net, flow) | {
        "positive": lambda model, flow: model.W[:, 0] > 0
    }
    ts = jnp.array([0.0, 1.0, 5.0, 1e3])
    kw = dict(t1=1e3, ts=ts, max_steps=100, metrics=metrics)
    stored = jf.solve(flow, net, save_models=True, **kw)
    in_loop = jf.solve(flow, net, save_models=False, **kw)
    assert stored.status_name == in_loop.status_name == "max_steps_reached"
    assert 5.0 < float(stored.t_final) < 1e3
    assert stored.ys is not None and in_loop.ys is None
    assert set(stored.metrics) == set(in_loop.metrics)
    for name, value in stored.metrics.items():
        a, b = np.asarray(value), np.asarray(in_loop.metrics[name])
        assert a.dtype == b.dtype, name
        assert np.allclose(a, b, rtol=1e-12, atol=0.0, equal_nan=True), name
    assert np.isinf(stored.metrics["loss"][-1]) and np.isfinite(
        stored.metrics["loss"][2]
    )
    assert stored.metrics["positive"][-1].all()


@pytest.mark.slow  # (`pytest -m slow`; CI runs it)
def test_a_traced_rtol_solves_as_a_concrete_one():
    # Tolerances may be traced (several solves, one compilation); the float64 check
    # on a small rtol must not branch on the tracer.
    data = jf.datasets.separable(jax.random.key(0), 20, 5, 0.3)
    net = jf.models.TwoLayerReLU(5, 4, scale=1e-3, key=jax.random.key(1))
    flow = jf.GradientFlow(jf.losses.exponential, data)

    def final(rtol):
        sol = jf.solve(flow, net, t1=1.0, rtol=rtol, save_models=False)
        return sol.final.W, sol.stats["num_steps"]

    (traced, steps), (concrete, concrete_steps) = jax.jit(final)(1e-8), final(1e-8)
    # The same steps; the values up to the rounding of differently fused programs.
    assert steps == concrete_steps
    assert np.allclose(traced, concrete, rtol=1e-9, atol=0)
