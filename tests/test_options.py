"""The options shared by `jf.solve`, `jf.solve_ensemble` and `jf.gradient_descent` are
resolved in one place: the same arguments give the same solve, or the same error."""

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxflow as jf

from helpers import relu_problem


D, WIDTH = 3, 4


def init(key):
    return jf.models.TwoLayerReLU(D, WIDTH, scale=0.1, key=key)


def test_implicit_solver_in_an_ensemble_equals_single_solves():
    """Kvaerno5 takes its Newton tolerances from the controller in both (the ensemble
    raised a TypeError deep in diffrax). A smooth flow (logistic regression), so that
    vmap's different rounding does not change the steps (kinks crossed by a plain
    solve would)."""
    flow, _ = relu_problem(n=8, d=D, width=WIDTH, loss=jf.losses.logistic)
    keys = jax.random.split(jax.random.key(0), 2)

    def linear(key):
        return jf.models.Linear(D, bias=True, scale=1.0, key=key)

    metrics = {"loss": jf.metrics.loss}
    options = dict(t1=5.0, ts=jnp.linspace(0.0, 5.0, 5), rtol=1e-8, metrics=metrics)
    ens = jf.solve_ensemble(flow, linear, keys, solver=dfx.Kvaerno5(), **options)
    assert list(ens.status_name) == ["successful"] * 2
    for i, key in enumerate(keys):
        sol = jf.solve(flow, linear(key), solver=dfx.Kvaerno5(), **options)
        assert sol.status_name == "successful"
        for name in ("num_accepted_steps", "num_rejected_steps"):
            assert int(ens.stats[name][i]) == int(sol.stats[name]), name
        assert float(ens.atol[i]) == float(sol.atol)
        np.testing.assert_allclose(
            ens.metrics["loss"][i], sol.metrics["loss"], rtol=1e-10
        )
        np.testing.assert_allclose(ens.final.w[i], sol.final.w, rtol=1e-9)
        # And both are the flow: against an explicit solve at a tight tolerance.
        tight = jf.solve(flow, linear(key), **options | dict(rtol=1e-12))
        np.testing.assert_allclose(sol.final.w, tight.final.w, rtol=1e-6)


def _mixed(key):
    """float64 except the output weights."""
    net = init(key)
    return eqx.tree_at(lambda m: m.v, net, net.v.astype(jnp.float32))


@pytest.mark.parametrize("rtol", [1e-10, 1e-6])
def test_mixed_precision_model_is_refused_by_solve_and_ensemble_alike(rtol):
    flow, _ = relu_problem(n=8, d=D, width=WIDTH)
    key = jax.random.key(0)
    with pytest.raises(ValueError) as single:
        jf.solve(flow, _mixed(key), t1=1.0, rtol=rtol)
    with pytest.raises(ValueError) as many:
        jf.solve_ensemble(flow, _mixed, jax.random.split(key, 2), t1=1.0, rtol=rtol)
    text = str(single.value)
    assert text.startswith("solve: `model` mixes floating-point dtypes")
    assert "float32 (e.g. `.v`)" in text and "float64" in text
    assert str(many.value) == text.replace("solve:", "solve_ensemble:", 1)


def test_bad_arguments_get_the_same_message_from_solve_and_ensemble():
    flow, net = relu_problem(n=8, d=D, width=WIDTH)
    keys = jax.random.split(jax.random.key(0), 2)
    cases = [
        dict(kinks="smooth"),
        dict(max_steps=0),
        dict(rtol=-1.0),
        dict(atol=-1.0),
        dict(t1=0.0),
        dict(ts=jnp.array([0.5, 0.2])),
        dict(solver=dfx.Kvaerno5(), stepsize_controller=dfx.ConstantStepSize()),
    ]
    for case in cases:
        kwargs = dict(t1=1.0) | case
        with pytest.raises(ValueError) as single:
            jf.solve(flow, net, **kwargs)
        with pytest.raises(ValueError) as many:
            jf.solve_ensemble(flow, init, keys, **kwargs)
        message = str(single.value).removeprefix("solve: ")
        assert str(many.value).removeprefix("solve_ensemble: ") == message, case


def test_status_prints_its_name():
    flow, net = relu_problem(n=8, d=D, width=WIDTH)
    sol = jf.solve(flow, net, t1=1.0, max_steps=3, metrics={}, kinks="plain")
    assert str(sol.status) == "max_steps_reached" == repr(sol.status)
    assert "status=max_steps_reached" in repr(sol)
    # Still the status: comparable both ways, and usable by RESULTS.
    assert bool(sol.status == jf.RESULTS.max_steps_reached)
    assert bool(jf.RESULTS.max_steps_reached == sol.status)
    assert sol.message.startswith("max_steps_reached: ")
    # An ensemble's statuses, one per seed.
    keys = jax.random.split(jax.random.key(0), 2)
    ens = jf.solve_ensemble(flow, init, keys, t1=1.0, max_steps=3, metrics={})
    assert str(ens.status) == "['max_steps_reached', 'max_steps_reached']"
