"""Stationary points: polishing, and classification of planted cases (a global
minimum, a strict saddle, a strict local minimum, Boursier-Flammarion's spurious point)."""

import equinox as eqx
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

import jaxflow as jf


class Product(eqx.Module):
    """f(x) = a w x: the smallest deep linear net; (0, 0) is a strict saddle of the
    square loss on (x, y) = (1, 1)."""

    a: jax.Array
    w: jax.Array

    def __call__(self, x):
        return self.a * self.w * x[:, 0]


class Scalar(eqx.Module):
    theta: jax.Array


def _tilted_double_well(model, data):
    # Critical points: theta^3 - theta + 1/4 = 0, at -1.107 (global minimum), 0.270
    # (a maximum) and 0.838 (a strict local minimum).
    t = model.theta
    return t**4 / 4 - t**2 / 2 + t / 4


def test_global_minimum_of_an_interpolating_net():
    data = jf.datasets.boursier_flammarion()
    flow = jf.GradientFlow(jf.losses.square, data)
    net = jf.models.TwoLayerReLU(1, 3, bias=True, key=jax.random.key(0))
    W = jnp.array([[0.0], [1.0], [-1.0]])
    b = jnp.array([1.0, 0.8, -0.6])  # features: 1, x + 0.8, relu(-x - 0.6)
    Phi = jax.nn.relu(data.X @ W.T + b[None, :])
    v = jnp.linalg.solve(Phi, data.y)
    net = eqx.tree_at(lambda m: (m.W, m.b, m.v), net, (W, b, v))
    verdict = jf.classify(flow, net, min_loss=0.0)
    assert verdict.kind == "global minimum"
    assert verdict.loss < 1e-20 and verdict.grad_norm < 1e-10
    # Without the known minimum value, the same point is a minimum with no escape.
    assert jf.classify(flow, net).kind == "local minimum"


def test_strict_saddle_of_a_smooth_net():
    flow = jf.GradientFlow(jf.losses.square, jf.Dataset(jnp.ones((1, 1)), jnp.ones(1)))
    point = Product(jnp.array(0.0), jnp.array(0.0))
    verdict = jf.classify(flow, point, min_loss=0.0, escape_time=10.0)
    assert verdict.kind == "saddle"
    # L = (a w - 1)^2: Hessian [[0, -2], [-2, 0]] at the origin.
    np.testing.assert_allclose(verdict.eigenvalues, [-2.0, 2.0], atol=1e-12)
    e = verdict.escape
    assert e.kind == "negative curvature" and e.rate == pytest.approx(2.0)
    assert abs(float(e.direction.a)) == pytest.approx(2**-0.5)
    assert float(e.direction.a) * float(e.direction.w) > 0  # along a = w
    assert e.loss_decrease > 0.9 and e.status == "successful"  # re-solved to loss 0


def test_strict_local_minimum_and_global_minimum():
    flow = jf.GradientFlow(_tilted_double_well, None)
    roots = np.roots([1.0, 0.0, -1.0, 0.25])
    global_value = float(_tilted_double_well(Scalar(jnp.array(roots.min())), None))
    for start, kind, where in (
        (1.5, "local minimum", roots.max()),
        (-2.0, "global minimum", roots.min()),
    ):
        sol = jf.solve(flow, Scalar(jnp.array(start)), t1=50.0, rtol=1e-10)
        verdict = jf.classify(flow, sol.final, min_loss=global_value)
        assert verdict.kind == kind
        assert float(verdict.polished.model.theta) == pytest.approx(where, abs=1e-12)
        assert verdict.eigenvalues[0] > 0.5  # L'' = 3 theta^2 - 1
        # Polishing removed what the flow left: its end was 1e-6 away or closer.
        assert verdict.grad_norm < 1e-13 < verdict.polished.grad_norm_before
    # The maximum between the wells has negative curvature: not a minimum.
    middle = Scalar(jnp.array(float(np.sort(roots)[1])))
    assert jf.classify(flow, middle, min_loss=global_value).kind == "saddle"


def test_not_stationary():
    flow = jf.GradientFlow(_tilted_double_well, None)
    verdict = jf.classify(flow, Scalar(jnp.array(0.0)), polish_first=False)
    assert verdict.kind == "not stationary" and verdict.grad_norm == 0.25


def test_classify_rejects_bad_arguments():
    flow = jf.GradientFlow(_tilted_double_well, None)
    with pytest.raises(ValueError, match="`gtol` must be a positive number, got -1"):
        jf.classify(flow, Scalar(jnp.array(0.0)), gtol=-1)


@pytest.mark.slow  # (`pytest -m slow`; CI runs it)
def test_boursier_flammarion_spurious_saddle():
    data = jf.datasets.boursier_flammarion()
    flow = jf.GradientFlow(jf.losses.square, data)
    net = jf.models.TwoLayerReLU(
        1, 20, scale=1e-3, bias=True, fan="width", key=jax.random.key(0)
    )
    sol = jf.solve(flow, net, t1=5000.0, ts=jnp.array([5000.0]), rtol=1e-9)
    verdict = jf.classify(flow, sol.final, min_loss=0.0)
    assert verdict.kind == "saddle"
    assert verdict.loss == pytest.approx(0.175043, abs=5e-7)
    # On the data the net is the least-squares line: beta = (-0.061538, 0.643590).
    fit = np.asarray(verdict.polished.model(data.X))
    line = -0.061538 * np.asarray(data.X[:, 0]) + 0.643590
    np.testing.assert_allclose(fit, line, atol=2e-6)
    assert verdict.polished.grad_norm_after < 1e-14 < verdict.polished.grad_norm_before
    assert verdict.polished.pattern_kept
    # No negative curvature on the pattern: the escape is a new neuron in a cone no
    # living neuron occupies, active on one point, and the re-solve lowers the loss.
    assert verdict.eigenvalues[0] > -1e-10
    e = verdict.escape
    assert e.kind == "empty cone" and len(e.active) == 1
    assert e.loss_decrease > 1e-3 and e.status == "successful"
    living = np.abs(np.asarray(verdict.polished.model.v)) > 1e-2
    active = np.asarray(verdict.polished.model.preactivations(data.X) > 0)
    assert not any(
        (active[:, j] == np.isin(np.arange(3), e.active)).all()
        for j in np.flatnonzero(living)
    )


def test_lanczos_matches_the_exact_hessian():
    data = jf.datasets.boursier_flammarion()
    flow = jf.GradientFlow(jf.losses.square, data)
    net = jf.models.TwoLayerReLU(1, 30, scale=1.0, bias=True, key=jax.random.key(3))
    exact, _ = jf.hessian_eigenvalues(flow, net, k=3)
    lanczos, vector = jf.hessian_eigenvalues(flow, net, k=3, exact_max=0)
    assert exact[0] < -1e-3  # a generic point: some negative curvature
    np.testing.assert_allclose(lanczos[0], exact[0], rtol=1e-8)
    # The lowest eigenvalue is repeated here; the vector is one of its eigenvectors.
    x0, unravel = jax.flatten_util.ravel_pytree(eqx.filter(net, eqx.is_inexact_array))
    active = net.preactivations(data.X) > 0

    def loss(x):
        params = eqx.combine(
            unravel(x), eqx.filter(net, eqx.is_inexact_array, inverse=True)
        )
        return jf.restricted_loss(flow, params, active)

    Hv = jax.jvp(jax.grad(loss), (x0,), (jnp.asarray(vector),))[1]
    np.testing.assert_allclose(Hv, exact[0] * vector, atol=1e-7)


@pytest.mark.slow  # (`pytest -m slow`; CI runs it)
def test_polish_holds_a_living_neuron_on_its_kink():
    # lambda = 1: the flow stops (gradient 1.5e-7) with a living neuron sliding on the
    # kink of x_3. Newton on the pattern alone cannot converge there (neither side's
    # gradient vanishes); with the pair held on its kink by a multiplier it does.
    data = jf.datasets.boursier_flammarion()
    flow = jf.GradientFlow(jf.losses.square, data)
    key = jax.random.split(jax.random.key(10 * 7919), 8)[1]
    net = jf.models.TwoLayerReLU(1, 10, scale=1.0, bias=True, fan="width", key=key)
    sol = jf.solve(
        flow, net, t1=1e4, ts=jnp.array([1e4]), rtol=1e-9,
        events={"stationary": jf.events.SteadyState(1e-7)},
    )  # fmt: skip
    end = sol.final
    U = np.concatenate([np.asarray(end.W), np.asarray(end.b)[:, None]], axis=1)
    X = np.concatenate([np.asarray(data.X), np.ones((3, 1))], axis=1)
    z = X @ U.T / np.outer(np.linalg.norm(X, axis=1), np.linalg.norm(U, axis=1))
    alive = (z > 1e-10).any(axis=0)
    assert ((np.abs(z) < 1e-10) & alive[None, :]).any()
    verdict = jf.classify(flow, end, min_loss=0.0)
    p = verdict.polished
    assert p.pattern_kept and p.grad_norm_before > 1e-8 and p.grad_norm_after < 1e-14
    assert verdict.kind == "saddle"
    assert verdict.loss == pytest.approx(0.175043, abs=5e-7)


def test_best_new_neuron_beats_a_dense_search():
    # G(u) = sum_i r_i relu(<u, (x_i, 1)>) over unit u in R^3: the cone-by-cone
    # maximiser must be at least as good as 200,000 random directions.
    dkey, mkey, skey = jax.random.split(jax.random.key(4), 3)
    data = jf.Dataset(jax.random.normal(dkey, (7, 2)), jnp.linspace(-1.0, 1.0, 7))
    flow = jf.GradientFlow(jf.losses.square, data)
    net = jf.models.TwoLayerReLU(2, 5, scale=0.5, bias=True, key=mkey)
    u, G, active = jf.best_new_neuron(flow, net)
    assert np.linalg.norm(u) == pytest.approx(1.0)
    X = np.concatenate([np.asarray(data.X), np.ones((7, 1))], axis=1)
    r = 2.0 * (np.asarray(net(data.X)) - np.asarray(data.y)) / 7  # dL/df, mean square
    assert G == pytest.approx(np.maximum(X @ u, 0) @ r)
    np.testing.assert_array_equal(active, X @ u > 0)
    U = np.array(jax.random.normal(skey, (200_000, 3)))
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    dense = np.abs(np.maximum(U @ X.T, 0) @ r).max()
    assert abs(G) >= dense - 1e-12  # and |G| is attained at the unit vector u


def test_hessian_on_living_neurons_equals_the_full_hessian():
    # Neurons active on no point are a zero block of the Hessian on the pattern: the
    # eigenvalues over the living neurons, with those zeros added, are the full ones.
    data = jf.datasets.boursier_flammarion()
    flow = jf.GradientFlow(jf.losses.square, data)
    net = jf.models.TwoLayerReLU(1, 30, scale=1.0, bias=True, key=jax.random.key(3))
    active = net.preactivations(data.X) > 0
    assert 0 < int(jnp.sum(~jnp.any(active, axis=0))) < 30  # some neurons dead
    params, static = eqx.partition(net, eqx.is_inexact_array)
    x0, unravel = jax.flatten_util.ravel_pytree(params)
    H = jax.hessian(
        lambda x: jf.restricted_loss(flow, eqx.combine(unravel(x), static), active)
    )(x0)
    full = np.linalg.eigvalsh(np.asarray(H))
    ours, _ = jf.hessian_eigenvalues(flow, net, k=40)
    np.testing.assert_allclose(ours, full[:40], atol=1e-12)


def test_the_fraction_spurious_is_given_among_all_and_among_settled_seeds():
    # Seeds whose flow has not settled are neither spurious nor global: the summary
    # gives the fraction both ways (Boursier and Flammarion's phase diagram).
    from types import SimpleNamespace

    data = jf.datasets.boursier_flammarion()
    _, mse = jf.experiments.least_squares(data)

    def verdict(kind, loss):
        return SimpleNamespace(kind=kind, loss=loss, grad_norm=1e-14, as_dict=dict)

    verdicts = [
        verdict("saddle", mse),
        verdict("not stationary", 0.1),
        verdict("global minimum", 0.0),
        verdict("not stationary", 0.2),
        None,  # failed
    ]
    n = len(verdicts)
    ens = SimpleNamespace(
        seeds=np.arange(n),
        status_name=np.array(["successful"] * n),
        t_final=np.ones(n),
        stats={k: np.ones(n, int) for k in ("num_steps", "num_rejected_steps",
                                            "num_accepted_steps")},
        rtol=1e-9,
    )  # fmt: skip
    s = jf.experiments.spurious_summary(ens, verdicts, data, 0.0)
    assert (s["spurious"], s["of"], s["settled"]) == (1, 5, 2)
    assert s["spurious_of_settled"] == 0.5
    assert s["counts"] == {"saddle": 1, "not stationary": 2, "global minimum": 1,
                           "failed": 1}  # fmt: skip
