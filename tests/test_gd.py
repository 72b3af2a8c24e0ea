import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxflow as jf

from helpers import relative_error, relu_problem


def _smooth_problem():
    X = jax.random.normal(jax.random.key(0), (12, 3))
    y = jnp.where(X[:, 0] - X[:, 2] > 0, 1.0, -1.0)
    model = jf.models.Linear(3, bias=True, scale=0.5, key=jax.random.key(1))
    return jf.GradientFlow(jf.losses.logistic, jf.Dataset(X, y)), model


def test_gd_is_plain_gradient_descent():
    flow, model = _smooth_problem()
    gd = jf.gradient_descent(
        flow, model, lr=0.1, steps=7, ts=jnp.array([0.0, 0.3, 0.7])
    )
    theta = model
    expected = [theta]
    for k in range(7):
        grad = flow.gradient(theta)
        theta = jax.tree.map(lambda p, g: p - 0.1 * g, theta, grad)
        expected.append(theta)
    assert np.allclose(gd.ts, [0.0, 0.3, 0.7])
    for i, k in enumerate([0, 3, 7]):
        assert relative_error(jax.tree.map(lambda x: x[i], gd.ys), expected[k]) < 1e-14
    assert relative_error(gd.final, expected[7]) < 1e-14
    assert gd.stats["num_vf_evals"] == 7 and gd.stats["num_rejected_steps"] == 0
    assert gd.status == jf.RESULTS.successful and gd.solver == "GradientDescent(lr=0.1)"
    assert np.isclose(gd.metrics["loss"][-1], flow(expected[7]))


def test_gd_error_against_the_flow_is_first_order():
    flow, model = _smooth_problem()
    T = 2.0
    ref = jf.solve(flow, model, t1=T, rtol=1e-12, atol=1e-14, ts=jnp.array([T]))
    lrs = np.array([2e-2, 1e-2, 5e-3, 2.5e-3, 1.25e-3])
    errors = [
        relative_error(
            jf.gradient_descent(flow, model, lr=lr, steps=round(T / lr)).final,
            ref.final,
        )
        for lr in lrs
    ]
    order = np.polyfit(np.log(lrs), np.log(errors), 1)[0]
    assert 0.9 <= order <= 1.1, (order, errors)


def test_gd_rounds_times_to_steps_and_validates():
    flow, net = relu_problem(n=8, d=3, width=4)
    gd = jf.gradient_descent(
        flow, net, lr=0.01, steps=100, ts=jnp.array([0.0123, 0.5, 1.0])
    )
    assert np.allclose(gd.ts, [0.01, 0.5, 1.0])
    assert gd.metrics["loss"].shape == (3,) and gd.ys.W.shape == (3, 4, 3)
    with pytest.raises(ValueError, match="`lr` must be a finite float > 0, got -0.1"):
        jf.gradient_descent(flow, net, lr=-0.1, steps=10)
    with pytest.raises(ValueError, match="`steps` must be a positive int, got 2.5"):
        jf.gradient_descent(flow, net, lr=0.1, steps=2.5)
    with pytest.raises(ValueError, match=r"inside \[0.0, 1.0\]"):
        jf.gradient_descent(flow, net, lr=0.1, steps=10, ts=[2.0])


def test_gd_reports_nonfinite():
    def loss(model, data):  # finite only for w_0 > 0; GD overshoots past 0
        return jnp.sum(model.w**2) - jnp.log(model.w[0])

    model = jax.tree.map(
        lambda x: x + jnp.array([0.1, 1.0]), jf.models.Linear(2, key=None)
    )
    gd = jf.gradient_descent(jf.GradientFlow(loss, None), model, lr=1.0, steps=2)
    assert gd.status != jf.RESULTS.successful
    assert "nan" in gd.message
