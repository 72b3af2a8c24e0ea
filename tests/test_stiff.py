"""`solver="auto"`: Tsit5 until the flow is stiff, then Kvaerno5, checked against the
closed form of a stiff quadratic, and left alone where the flow is not stiff."""

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxflow as jf


class _Quadratic(eqx.Module):
    theta: jax.Array


# L = 1/2 sum_i lam_i theta_i^2, eigenvalues 1e-3 ... 1e3: theta_i(t) = e^{-lam_i t}.
LAM = jnp.geomspace(1e-3, 1e3, 8)
QUADRATIC = jf.GradientFlow(lambda m, lam: 0.5 * jnp.sum(lam * m.theta**2), LAM)


def test_auto_switches_to_the_implicit_solver_where_the_flow_is_stiff():
    T = 1000.0
    sol = jf.solve(QUADRATIC, _Quadratic(jnp.ones(8)), t1=T, rtol=1e-8, solver="auto")
    assert sol.status_name == "successful"
    # Tsit5 would need h < 3.5e-3 (the stability bound for the eigenvalue 1e3):
    # about 300,000 steps. The switch is recorded, early.
    switch = float(sol.stats["stiff_from"])
    assert 0 < switch < 1.0, switch
    assert 50 < int(sol.stats["num_implicit_steps"]) <= int(sol.stats["num_steps"])
    assert int(sol.stats["num_steps"]) < 1000
    # Against the closed form, at every saved time (the slowest mode has decayed to
    # e^{-1} at t1), to the tolerance.
    exact = np.exp(-np.outer(np.asarray(sol.ts), np.asarray(LAM)))
    assert np.max(np.abs(np.asarray(sol.ys.theta) - exact)) < 1e-6


def test_auto_stays_explicit_where_the_flow_is_not_stiff():
    flow = jf.GradientFlow(jf.losses.half_square, jf.Dataset(jnp.eye(3), jnp.ones(3)))
    net = jf.models.Linear(3, key=jax.random.key(0))
    kw = dict(t1=5.0, rtol=1e-10, ts=[5.0])
    auto = jf.solve(flow, net, solver="auto", **kw)
    tsit5 = jf.solve(flow, net, solver=dfx.Tsit5(), **kw)
    assert float(auto.stats["stiff_from"]) == np.inf
    assert int(auto.stats["num_implicit_steps"]) == 0
    assert int(auto.stats["num_steps"]) == int(tsit5.stats["num_steps"])
    error = max(
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(jax.tree.leaves(auto.final), jax.tree.leaves(tsit5.final))
    )
    assert error < 1e-14
    with pytest.raises(
        ValueError, match=r"`solver` must be a diffrax solver or 'auto'"
    ):
        jf.solve(flow, net, solver="tsit5", **kw)


def test_auto_in_an_ensemble_per_seed_with_a_loss_written_as_a_lambda():
    keys = jax.random.split(jax.random.key(0), 2)

    def init(key):
        return _Quadratic(1.0 + 0.1 * jax.random.normal(key, (8,)))

    ens = jf.solve_ensemble(
        QUADRATIC, init, keys, t1=100.0, ts=[100.0], solver="auto", processes=1
    )
    for i, key in enumerate(keys):
        solo = jf.solve(QUADRATIC, init(key), t1=100.0, ts=[100.0], solver="auto")
        assert np.array_equal(ens.final.theta[i], solo.final.theta)
        assert ens.stats["stiff_from"][i] == solo.stats["stiff_from"] < 1.0
