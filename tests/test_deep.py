"""Deep ReLU networks through their kinks (`jaxflow._gates`, `jaxflow._sliding`):
the general sliding flow against the two-layer minimum-norm rule, equinox models,
gradient descent's convergence order, conserved quantities, and plain references."""

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import jaxflow as jf
from jaxflow._kinks import _gates, _min_norm, _sliding

from helpers import boursier_flammarion_problem, flat, relative_error


BF = jf.GradientFlow(jf.losses.square, jf.datasets.boursier_flammarion())


def sliding_mlp():
    """A 3-layer MLP (widths 5, 5) on the three points: one pair slides from t = 0.8
    on (probed; the test checks it)."""
    return jf.models.MLP(1, (5, 5), scale=1.0, key=jax.random.key(1))


def test_mlp_init_and_conserved_quantities():
    net = jf.models.MLP(3, (4, 6, 5), scale=0.5, key=jax.random.key(0))
    assert net.widths == (4, 6, 5)
    assert net(jnp.ones((7, 3))).shape == (7,) and net(jnp.ones(3)).shape == ()
    # Balanced: every hidden neuron's incoming and outgoing norms agree.
    np.testing.assert_allclose(net.conserved(), 0.0, atol=1e-14)
    gaussian = jf.models.MLP(3, (4,), scale=0.5, init="gaussian", key=jax.random.key(0))
    assert np.abs(np.asarray(gaussian.conserved())).max() > 1e-3
    with pytest.raises(ValueError, match="widths"):
        jf.models.MLP(3, (4, 0), scale=1.0, key=jax.random.key(0))
    with pytest.raises(ValueError, match="activation"):
        jf.models.MLP(3, (4,), scale=1.0, activation="tanh", key=jax.random.key(0))


def test_sites_are_found_in_equinox_and_custom_models():
    X = jax.random.normal(jax.random.key(0), (6, 3))
    data = jf.Dataset(X, jnp.sign(X[:, 0]))

    def shapes(model):
        params, static = eqx.partition(model, eqx.is_inexact_array)
        fn = lambda p, d: jf.losses.logistic(eqx.combine(p, static), d)  # noqa: E731
        return _gates.sizes(fn, params, data)

    key = jax.random.key(1)
    assert shapes(jf.models.MLP(3, (4, 5), scale=1.0, key=key)) == ((6, 4), (6, 5))
    eqx_relu = eqx.nn.MLP(3, "scalar", 4, 2, activation=jax.nn.relu, key=key)
    assert shapes(eqx_relu) == ((6, 4), (6, 4))
    leaky = eqx.nn.MLP(3, "scalar", 4, 1, activation=jax.nn.leaky_relu, key=key)
    assert shapes(leaky) == ((6, 4),)
    assert shapes(eqx.nn.MLP(3, "scalar", 4, 1, activation=jnp.tanh, key=key)) == ()

    class Scanned(eqx.Module):  # a ReLU inside lax.scan: not reachable
        w: jax.Array

        def __call__(self, x):
            h, _ = jax.lax.scan(
                lambda h, _: (jax.nn.relu(h), None), x @ self.w, None, 2
            )
            return h

    scanned = Scanned(jnp.ones(3))
    flow = jf.GradientFlow(jf.losses.logistic, data)
    assert not _sliding.supports(flow, scanned)
    sol = jf.solve(flow, scanned, t1=0.1, ts=[0.1])  # kinks="auto": plain
    assert "num_kink_events" not in sol.stats
    with pytest.raises(ValueError, match="kinks='min-norm' needs a loss whose ReLUs"):
        jf.solve(flow, scanned, t1=0.1, kinks="min-norm")


def _kinked_mlp(seed):
    """A 3-layer MLP on 8 random points with six pairs placed on their kinks by their
    biases (four in the first hidden layer, two in the second), their flat site
    indices, and the pre-activations written out by hand (not through `_gates`)."""
    kx, ky, kn = jax.random.split(jax.random.key(seed), 3)
    X = jax.random.normal(kx, (8, 2))
    flow = jf.GradientFlow(jf.losses.square, jf.Dataset(X, jax.random.normal(ky, (8,))))
    net = jf.models.MLP(2, (6, 6), scale=1.0, init="gaussian", key=kn)
    W1, W2 = net.weights
    b1 = net.biases[0].at[:4].set(-jnp.sum(W1[:4] * X[:4], axis=1))
    h1 = jax.nn.relu(X @ W1.T + b1[None, :])
    b2 = net.biases[1].at[:2].set(-jnp.sum(W2[:2] * h1[4:6], axis=1))
    net = eqx.tree_at(lambda m: m.biases, net, (b1, b2))

    def pre(net):
        z1 = X @ net.weights[0].T + net.biases[0][None, :]
        z2 = jax.nn.relu(z1) @ net.weights[1].T + net.biases[1][None, :]
        return jnp.concatenate([z1.ravel(), z2.ravel()])

    slots = [7 * j for j in range(4)] + [48 + 4 * 6, 48 + 5 * 6 + 1]
    return flow, net, pre, slots


@pytest.mark.slow
@pytest.mark.parametrize("seed", [4])
def test_equivalent_control_is_complementary(seed):
    """The control at a switch: every free pair's rate vanishes and every pair held
    at a bound leaves to that bound's side, checked by forward differences of the
    hand-written pre-activations along the velocity; two or more pairs slide at
    once (a coupled system)."""
    flow, net, pre, slots = _kinked_mlp(seed)
    params, static = eqx.partition(net, eqx.is_inexact_array)
    pieces = _sliding.Sliding(flow, params, static)
    z = pre(net)
    m = _sliding.MAX_SLIDING
    on = jnp.zeros(z.shape[0], bool).at[jnp.array(slots)].set(True)
    pattern = _sliding.Pattern(
        (z > 0) & ~on,
        jnp.full(m, -1, jnp.int32).at[: len(slots)].set(jnp.array(slots, jnp.int32)),
        jnp.full(m, 0.5),
        jnp.zeros(m, jnp.int32),
    )
    s, bound, resolved, _ = pieces._control(params, pattern)
    assert bool(resolved)
    pattern = eqx.tree_at(lambda p: (p.s, p.bound), pattern, (s, bound))
    grad = jax.grad(lambda p: pieces._run(p, pattern.gates())[0])(params)
    eps = 1e-7
    moved = eqx.combine(jax.tree.map(lambda a, g: a - eps * g, params, grad), static)
    rate = np.asarray((pre(moved) - z)[jnp.array(slots)] / eps)
    s = np.asarray(s[: len(slots)])
    tol = 1e-6 * np.abs(rate).max()
    free = (s > 0) & (s < 1)
    assert free.sum() >= 2
    assert np.all(np.abs(rate[free]) < tol)
    assert np.all(rate[s == 0] < tol) and np.all(rate[s == 1] > -tol)
    # Not the plain gradient's rates: those push the free pairs off their kinks.
    plain = eqx.combine(
        jax.tree.map(lambda a, g: a - eps * g, params, flow.gradient(net)), static
    )
    assert np.abs((pre(plain) - z)[jnp.array(slots)][free]).max() / eps > 1e3 * tol


@pytest.mark.slow
def test_general_sliding_equals_the_two_layer_min_norm_rule():
    """At a point where pairs slide, the equivalent control of the general mechanism
    is the two-layer minimum-norm element (to 1e-10), and the two solves agree."""
    flow, net = boursier_flammarion_problem(width=20, scale=0.1, seed=4)
    ts = jnp.linspace(0.0, 8.0, 9)
    sol = jf.solve(flow, net, t1=8.0, rtol=1e-10, kinks="min-norm", ts=ts)
    sliding = np.asarray(sol.metrics["num_sliding"])
    assert sliding.max() >= 1
    model = jax.tree.map(lambda x: x[int(np.argmax(sliding))], sol.ys)
    exact = _min_norm.min_norm_gradient(flow, model)
    general = _sliding.min_norm_velocity(flow, model)
    assert relative_error(general, exact) < 1e-10
    # And the plain gradient is not it (the test could fail).
    assert relative_error(flow.gradient(model), exact) > 1e-3

    both = [
        jf.solve(flow, net, t1=8.0, rtol=1e-10, kinks=k, ts=[8.0])
        for k in ("min-norm", "general")
    ]
    assert [str(s.status) for s in both] == ["successful"] * 2
    assert int(both[1].stats["num_slides"]) >= 1
    assert relative_error(both[1].final, both[0].final) < 1e-7


@pytest.mark.slow
def test_eqx_mlp_with_relu_follows_the_same_trajectory_as_jf_mlp():
    flow = BF
    net = sliding_mlp()
    other = eqx.nn.MLP(
        1, "scalar", 5, 2, activation=jax.nn.relu, use_final_bias=False,
        key=jax.random.key(0),
    )  # fmt: skip
    # The same weights: eqx's layers hold (weight, bias); the last has no bias.
    other = eqx.tree_at(
        lambda m: (
            m.layers[0].weight, m.layers[0].bias,
            m.layers[1].weight, m.layers[1].bias, m.layers[2].weight,
        ),
        other,
        (
            net.weights[0], net.biases[0], net.weights[1], net.biases[1],
            net.v[None, :],
        ),
    )  # fmt: skip
    ts = jnp.linspace(0.0, 2.0, 5)
    a = jf.solve(flow, net, t1=2.0, rtol=1e-12, ts=ts)
    b = jf.solve(flow, other, t1=2.0, rtol=1e-12, ts=ts)
    assert int(a.stats["num_slides"]) >= 1 and int(b.stats["num_slides"]) >= 1
    np.testing.assert_allclose(b.metrics["loss"], a.metrics["loss"], rtol=1e-10)
    mine = (a.final.weights, a.final.biases, a.final.v)
    theirs = (
        (b.final.layers[0].weight, b.final.layers[1].weight),
        (b.final.layers[0].bias, b.final.layers[1].bias),
        b.final.layers[2].weight[0],
    )
    assert np.abs(flat(mine) - flat(theirs)).max() < 1e-10 * np.abs(flat(mine)).max()


@pytest.mark.slow
def test_gradient_descent_converges_to_the_deep_sliding_flow_at_order_one():
    flow, net, T = BF, sliding_mlp(), 2.0
    exact = jf.solve(flow, net, t1=T, rtol=1e-12, ts=[T])
    assert int(exact.metrics["num_sliding"][-1]) >= 1  # a pair slides at T
    lrs = np.array([4e-3, 2e-3, 1e-3, 5e-4])
    errors = [
        relative_error(
            jf.gradient_descent(flow, net, lr=lr, steps=round(T / lr), ts=[T]).final,
            exact.final,
        )
        for lr in lrs
    ]
    order = np.polyfit(np.log(lrs), np.log(errors), 1)[0]
    assert 0.8 <= order <= 1.2, (errors, order)


@pytest.mark.slow
def test_conserved_quantities_through_kinks_and_sliding():
    sol = jf.solve(BF, sliding_mlp(), t1=2.0, rtol=1e-10, ts=jnp.linspace(0.0, 2.0, 11))
    assert str(sol.status) == "successful"
    assert int(sol.stats["num_slides"]) >= 1
    assert int(sol.stats["num_kink_events"]) >= 2
    assert float(np.max(sol.metrics["conserved_drift"])) <= 1e-9
    stable = np.asarray(sol.metrics["layer_stable_ranks"])
    assert stable.shape == (11, 2) and np.all((stable >= 1 - 1e-12) & (stable <= 5))


@pytest.mark.slow
def test_deep_net_without_sliding_matches_plain_with_fewer_evaluations():
    """Separable data, no biases: pairs cross their kinks but none slides."""
    dkey, mkey = jax.random.split(jax.random.key(4))
    data = jf.datasets.separable(dkey, 16, 3, 0.3)
    flow = jf.GradientFlow(jf.losses.logistic, data)
    net = jf.models.MLP(3, (6, 6), scale=0.3, bias=False, key=mkey)
    T = 20.0
    reference = jf.solve(flow, net, t1=T, rtol=1e-13, kinks="plain", ts=[T])
    plain = jf.solve(flow, net, t1=T, rtol=1e-10, kinks="plain", ts=[T])
    general = jf.solve(flow, net, t1=T, rtol=1e-10, ts=[T])
    assert int(general.stats["num_kink_events"]) >= 3
    assert int(general.stats["num_slides"]) == 0
    assert relative_error(general.final, reference.final) < 1e-8
    assert int(general.stats["num_vf_evals"]) < int(plain.stats["num_vf_evals"])


@pytest.mark.slow
def test_polish_and_classify_a_deep_net():
    flow, net = BF, jf.models.MLP(1, (8, 8), scale=0.5, key=jax.random.key(0))
    sol = jf.solve(flow, net, t1=100.0, rtol=1e-8, ts=[100.0])
    assert str(sol.status) == "successful"
    polished = jf.polish(flow, sol.final)
    assert polished.converged and polished.grad_norm_after <= 1e-8
    verdict = jf.classify(flow, sol.final, min_loss=0.0)
    assert verdict.kind in ("global minimum", "local minimum", "saddle")
    assert verdict.polished.grad_norm_after <= 1e-8


@pytest.mark.slow
def test_implicit_solver_and_ensemble_run_the_sliding_flow():
    keys = jax.random.split(jax.random.key(0), 2)
    ens = jf.solve_ensemble(
        BF,
        lambda k: jf.models.MLP(1, (4, 4), scale=1.0, key=k),
        keys,
        t1=1.0,
        rtol=1e-8,
        ts=[1.0],
    )
    assert list(ens.status_name) == ["successful"] * 2
    sol = jf.solve(
        BF, sliding_mlp(), t1=2.0, rtol=1e-8, solver=dfx.Kvaerno5(), ts=[2.0]
    )
    exact = jf.solve(BF, sliding_mlp(), t1=2.0, rtol=1e-12, ts=[2.0])
    assert relative_error(sol.final, exact.final) < 1e-5


@pytest.mark.slow
def test_saved_speed_is_the_flow_s_own():
    """`grad_norm` at the saved times is the speed of the flow, pairs sliding on kinks
    included: against central differences of a tight solve's trajectory (independent
    of the metric). Saved points of the dense output sit off a sliding pair's kink by
    the interpolation's error; recomputing the velocity from their side gave errors of
    up to 85% at rtol 1e-8 here. Deferred metrics (`save_models`) agree bitwise."""
    net, T, d = jf.models.MLP(1, (30, 30), scale=0.3, key=jax.random.key(0)), 8.0, 1e-5
    ts = jnp.linspace(0.5, T - 0.5, 8)
    around = jnp.stack([ts - d, ts + d], axis=1).ravel()
    tight = jf.solve(BF, net, t1=T, rtol=1e-12, ts=around, save_models=True)
    ys = np.stack([flat(jax.tree.map(lambda x: x[i], tight.ys)) for i in range(16)])
    speed = np.linalg.norm((ys[1::2] - ys[::2]) / (2 * d), axis=1)
    loose = jf.solve(BF, net, t1=T, rtol=1e-8, ts=ts)
    assert np.min(np.asarray(loose.metrics["num_sliding"])) >= 3
    got = np.asarray(loose.metrics["grad_norm"])
    np.testing.assert_allclose(got, speed, rtol=1e-5)
    deferred = jf.solve(BF, net, t1=T, rtol=1e-8, ts=ts, save_models=True)
    np.testing.assert_array_equal(np.asarray(deferred.metrics["grad_norm"]), got)


@pytest.mark.slow
def test_sliding_field_jacobian_against_finite_differences():
    """The Jacobian an implicit solver takes of the sliding field (the control
    differentiated as an implicit function, its rows by reverse mode: `_implicit`)
    against central differences of the field itself, where a pair slides."""
    end = jf.solve(BF, sliding_mlp(), t1=1.5, rtol=1e-12, ts=[1.5]).final
    params, static = eqx.partition(end, eqx.is_inexact_array)
    pieces = _sliding.Sliding(BF, params, static)
    start = pieces.init(params)
    pattern = start.piece
    assert int(jnp.sum(pattern.valid() & (pattern.bound == _sliding._FREE))) >= 1
    x, unravel = ravel_pytree(start.y)

    def field(x):
        return ravel_pytree(pieces.term().vf(0.0, unravel(x), pattern))[0]

    jacobian = np.asarray(jax.jacfwd(field)(x))
    eps = 1e-6
    columns = jax.vmap(lambda e: (field(x + eps * e) - field(x - eps * e)) / (2 * eps))(
        jnp.eye(x.shape[0], dtype=x.dtype)
    )
    scale = np.abs(jacobian).max()
    np.testing.assert_allclose(jacobian, np.asarray(columns).T, atol=1e-6 * scale)
