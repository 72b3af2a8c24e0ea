"""No silent wrong result: inputs and failures that once gave one (issue 22's rows)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxflow as jf

from helpers import FLOW, KEYS, init, relative_error, relu_problem


def _zero_row_problem(zero: bool):
    X = jax.random.normal(jax.random.key(5), (12, 5))
    X = X.at[0].set(0.0) if zero else X
    y = jnp.where(jnp.arange(12) % 2 == 0, 1.0, -1.0)
    loss = jf.losses.Exponential(reduction="sum")
    net = jf.models.TwoLayerReLU(5, 6, scale=1e-2, key=jax.random.key(6))
    return (
        jf.GradientFlow(loss, jf.Dataset(X, y)),
        jf.GradientFlow(loss, jf.Dataset(X[1:], y[1:])),
        net,
    )


@pytest.mark.slow  # (the README command stays under 10 minutes; CI runs it)
def test_an_all_zero_input_row_has_no_kink():
    # Row 1: with X[0] = 0 every pair (0, j) has z = 0 forever: no kink. Under the
    # summed loss that row adds a constant, so the flow is the flow without it.
    with_zero, without, net = _zero_row_problem(zero=True)
    sol = jf.solve(with_zero, net, t1=20.0, rtol=1e-10, ts=jnp.array([20.0]))
    assert sol.status_name == "successful"
    assert np.all(np.isfinite(np.asarray(sol.final.W)))
    # Neurons slide here (a plain solve stalls at t = 0.014): compare with the min-norm
    # flow without the row, which has no zero input.
    reference = jf.solve(without, net, t1=20.0, rtol=1e-10, ts=jnp.array([20.0]))
    assert int(reference.stats["num_slides"]) > 0
    assert relative_error(sol.final, reference.final) < 1e-9
    # The row adds exp(0) = 1 to the summed loss, and nothing else.
    assert float(with_zero(sol.final)) - float(without(sol.final)) == pytest.approx(1.0)
    # The min-norm gradient there is the gradient (no pair on a kink).
    g = with_zero.min_norm_gradient(net)
    assert relative_error(g, with_zero.gradient(net)) < 1e-12


def test_dataset_and_solve_inside_jit():
    # Row 2: the checks' messages are built while tracing, from staged values.
    X = jax.random.normal(jax.random.key(0), (6, 3))
    y = jnp.where(X[:, 0] > 0, 1.0, -1.0)
    total = jax.jit(lambda X: jf.Dataset(X, y).X.sum())(X)
    assert float(total) == pytest.approx(float(X.sum()))
    flow, net = relu_problem(n=8, d=3, width=4, scale=0.1)

    @jax.jit
    def final_loss(net):
        sol = jf.solve(
            flow, net, t1=1.0, ts=jnp.array([1.0]), metrics={}, kinks="plain"
        )
        return flow(sol.final)

    outside = jf.solve(
        flow, net, t1=1.0, ts=jnp.array([1.0]), metrics={}, kinks="plain"
    )
    assert float(final_loss(net)) == pytest.approx(
        float(flow(outside.final)), rel=1e-12
    )
    # A bad value found at run time still raises, naming the argument.
    bad = X.at[2, 1].set(jnp.nan)
    with pytest.raises(Exception, match="`X` must be finite"):
        jax.block_until_ready(jax.jit(lambda X: jf.Dataset(X, y).X.sum())(bad))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(t1=1.0, ts=[0.1, float("nan"), 0.5]), r"`ts` must be finite"),
        (dict(t1=1.0, ts=[0.1, float("inf")]), r"`ts` must be finite"),
        (dict(t1=float("inf")), r"need finite t0 < t1, got t0=0.0, t1=inf"),
        (dict(t1=float("nan")), r"need finite t0 < t1"),
        (dict(t1=1.0, t0=float("-inf")), r"need finite t0 < t1"),
    ],
)
def test_non_finite_times_are_rejected(kwargs, match):
    # Rows 3 and 4: once accepted, with a `successful` status and inf or nan results.
    flow, net = relu_problem(n=8, d=3, width=4)
    with pytest.raises(ValueError, match=match):
        jf.solve(flow, net, **kwargs)


def test_classify_at_the_end_of_a_separable_flow_is_not_a_minimum():
    # Row 5: the loss tends to 0 only at infinity; Newton ran off and the point was
    # called a local minimum.
    flow, net = relu_problem(n=12, d=3, width=4, scale=0.5)
    sol = jf.solve(flow, net, t1=50.0, ts=jnp.array([50.0]), kinks="plain")
    verdict = jf.classify(flow, sol.final)
    assert verdict.kind == "not stationary"
    assert "polishing did not converge" in verdict.evidence
    # What it reports is the flow's end: a gradient far from zero.
    assert verdict.grad_norm == pytest.approx(
        float(jf.metrics.grad_norm(sol.final, flow)), rel=1e-9
    )
    assert verdict.grad_norm > 1e-4


def test_throw_raises_with_the_status_first():
    # Row 12: the message came below JAX's traceback; `solve_ensemble` had no `throw`.
    flow, net = relu_problem(n=8, d=3, width=4)
    with pytest.raises(RuntimeError, match=r"^solve: the solve failed at t=.* status "
                       r"max_steps_reached: The maximum number"):  # fmt: skip
        jf.solve(flow, net, t1=1e3, max_steps=20, throw=True)
    with pytest.raises(RuntimeError, match=r"^solve_ensemble: 3 of 3 seeds failed "
                       r"\(seed 0: max_steps_reached: "):  # fmt: skip
        jf.solve_ensemble(
            FLOW, init, KEYS[:3], t1=1e3, max_steps=5, throw=True, kinks="plain"
        )
    # Without failures nothing is raised.
    ens = jf.solve_ensemble(FLOW, init, KEYS[:2], t1=1.0, throw=True, kinks="plain")
    assert list(ens.status_name) == ["successful"] * 2


def test_a_model_of_the_wrong_input_dimension_is_named():
    # Row 13: `dot_general requires contracting dimensions ...`, 14 frames deep.
    flow, _ = relu_problem(n=8, d=5, width=4)
    net = jf.models.TwoLayerReLU(3, 4, scale=0.1, key=jax.random.key(0))
    match = (
        r"the loss cannot be evaluated at `model` TwoLayerReLU\(.*\.W: \(4, 3\).*d = 5"
    )
    with pytest.raises(ValueError, match=match):
        jf.solve(flow, net, t1=1.0)
    with pytest.raises(ValueError, match=match):
        jf.gradient_descent(flow, net, lr=0.1, steps=3)
    with pytest.raises(ValueError, match="^solve_ensemble: " + match):
        jf.solve_ensemble(
            flow,
            lambda k: jf.models.TwoLayerReLU(3, 4, scale=0.1, key=k),
            KEYS[:2],
            t1=1.0,
        )
    # A loss that is not a scalar.
    vector = jf.GradientFlow(lambda m, d: m.W.sum(axis=1), flow.data)
    with pytest.raises(ValueError, match="the loss must return a scalar, got shape"):
        jf.solve(vector, net, t1=1.0)
