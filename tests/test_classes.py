"""Class outputs: integer labels, `cross_entropy`, squared losses on vector outputs,
`MLP(out=k, out_bias=True)`, `metrics.accuracy`; checked against NumPy / SciPy."""

import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import log_softmax

import jaxflow as jf
from jaxflow._predict import predict

from helpers import relative_error, scipy_flow


@pytest.fixture(scope="module")
def problem():
    """30 points in 3 Gaussian clusters in R^4, integer labels, cross-entropy, and a
    3-output MLP with an output bias."""
    ckey, xkey = jax.random.split(jax.random.key(0))
    labels = jnp.arange(30) % 3
    X = 2.0 * jax.random.normal(ckey, (3, 4))[labels]
    data = jf.Dataset(X + 0.5 * jax.random.normal(xkey, (30, 4)), labels)
    flow = jf.GradientFlow(jf.losses.cross_entropy, data)
    net = jf.models.MLP(4, 6, scale=1.0, out=3, out_bias=True, key=jax.random.key(2))
    return flow, net


def test_losses_on_vector_outputs_match_their_formulas():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(7, 4)) * 3
    labels = rng.integers(0, 4, size=7)
    expected = -np.mean(log_softmax(logits, axis=1)[np.arange(7), labels])
    got = jf.losses.cross_entropy.of_predictions(jnp.asarray(logits), labels)
    assert abs(float(got) - expected) < 1e-14
    summed = jf.losses.CrossEntropy(reduction="sum")
    assert (
        abs(float(summed.of_predictions(jnp.asarray(logits), labels)) - 7 * expected)
        < 1e-13
    )
    # Large logits: a log-sum-exp, no overflow.
    assert np.isfinite(
        float(jf.losses.cross_entropy.of_predictions(1e4 * jnp.asarray(logits), labels))
    )
    targets = rng.normal(size=(7, 4))
    sq = np.mean(np.sum((logits - targets) ** 2, axis=1))
    assert (
        abs(float(jf.losses.square.of_predictions(jnp.asarray(logits), targets)) - sq)
        < 1e-13
    )
    onehot = np.eye(4)[labels]
    half = 0.5 * np.mean(np.sum((logits - onehot) ** 2, axis=1))
    assert (
        abs(
            float(jf.losses.half_square.of_predictions(jnp.asarray(logits), labels))
            - half
        )
        < 1e-13
    )


def test_class_labels_are_checked(problem):
    X = jnp.ones((4, 2))
    with pytest.raises(
        ValueError,
        match=r"must be in \{0, ..., 2\} \(`classes` = 3\), got \[-1, 0, 1\]",
    ):
        jf.Dataset(X, jnp.array([0, 1, -1, 0]), classes=3)
    with pytest.raises(
        ValueError, match=r"must be in \{0, ..., 1\} \(`classes` = 2\), got \[0, 1, 5\]"
    ):
        jf.Dataset(X, jnp.array([0, 1, 5, 0]), classes=2)
    with pytest.raises(ValueError, match="`classes` must be a positive int, got 2.0"):
        jf.Dataset(X, jnp.array([0, 1, 1, 0]), classes=2.0)
    with pytest.raises(ValueError, match="`classes` is for integer class labels"):
        jf.Dataset(X, jnp.ones(4), classes=2)
    with pytest.raises(
        ValueError, match=r"shape \(n,\) \(class labels\), got shape \(4, 1\)"
    ):
        jf.Dataset(X, jnp.zeros((4, 1), int))
    assert jf.Dataset(X, jnp.array([0, 3, 1, 0])).classes == 4
    # Traced integers are labels only with `classes`; +-1 integers are numbers.
    assert (
        jax.jit(lambda y: jf.Dataset(X, y, classes=2).y)(
            jnp.array([0, 1, 1, 0])
        ).dtype.kind
        == "i"
    )
    assert (
        jax.jit(lambda y: jf.Dataset(X, y).y)(jnp.array([0, 1, 1, 0])).dtype.kind == "f"
    )
    signs = jf.Dataset(X, jnp.array([1, -1, 1, -1]))
    assert signs.classes is None and signs.y.dtype.kind == "f"
    jf.GradientFlow(jf.losses.logistic, signs)  # accepted, as before

    flow, _ = problem
    data = flow.data
    with pytest.raises(ValueError, match=r"CrossEntropy needs integer class labels"):
        jf.GradientFlow(
            jf.losses.cross_entropy, jf.Dataset(data.X, data.y.astype(float))
        )
    with pytest.raises(
        ValueError, match=r"Logistic needs labels y in \{\+1, -1\}.*cross_entropy"
    ):
        jf.GradientFlow(jf.losses.logistic, data)
    two = jf.models.MLP(4, 6, scale=1.0, out=2, key=jax.random.key(0))
    with pytest.raises(
        ValueError,
        match=r"the data have 3 classes \(labels 0 to 2\) but the model MLP has 2 output",
    ):
        flow(two)
    scalar = jf.models.MLP(4, 6, scale=1.0, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"the data have 3 classes .* has 1 output"):
        flow(scalar)
    with pytest.raises(
        ValueError, match=r"Square: needs predictions and targets of one shape"
    ):
        jf.losses.square.of_predictions(jnp.ones(4), jnp.ones((4, 2)))


def test_mlp_with_outputs():
    key = jax.random.key(0)
    net = jf.models.MLP(3, (6, 5), scale=1.0, out=4, out_bias=True, key=key)
    X = jax.random.normal(jax.random.key(1), (8, 3))
    h = np.maximum(
        np.asarray(X) @ np.asarray(net.weights[0]).T + np.asarray(net.biases[0]), 0
    )
    h = np.maximum(h @ np.asarray(net.weights[1]).T + np.asarray(net.biases[1]), 0)
    c = 0.1 * np.arange(4.0)
    net = eqx.tree_at(lambda m: m.c, net, jnp.asarray(c))
    assert np.allclose(net(X), h @ np.asarray(net.v).T + c, rtol=1e-14)
    assert net(X[0]).shape == (4,) and net.v.shape == (4, 5)
    # Balanced: every hidden neuron's incoming and outgoing norms agree.
    assert np.allclose(net.conserved(), 0.0, atol=1e-13)
    assert jf.models.MLP(3, 6, scale=1.0, key=key)(X).shape == (8,)
    assert jf.models.MLP(3, 6, scale=1.0, out=1, key=key)(X).shape == (8, 1)
    with pytest.raises(
        ValueError,
        match=r"`out` must be None \(a scalar output\) or a positive int .* got 0",
    ):
        jf.models.MLP(3, 6, scale=1.0, out=0, key=key)


def test_accuracy_against_numpy(problem):
    flow, net = problem
    labels = np.asarray(flow.data.y)
    for model in (net, eqx.nn.MLP(4, 3, 8, 1, key=jax.random.key(4))):
        logits = np.asarray(eqx.filter_jit(predict)(model, flow.data.X))
        expected = np.mean(np.argmax(logits, axis=1) == labels)
        assert float(eqx.filter_jit(jf.metrics.accuracy)(model, flow)) == expected
    # One output, labels +-1: the sign.
    signed = jf.GradientFlow(
        jf.losses.logistic, jf.Dataset(flow.data.X, jnp.sign(flow.data.X[:, 0]))
    )
    scalar = jf.models.MLP(4, 6, scale=1.0, key=jax.random.key(1))
    expected = np.mean(
        np.sign(np.asarray(scalar(signed.data.X))) == np.asarray(signed.data.y)
    )
    assert float(jf.metrics.accuracy(scalar, signed)) == expected


@pytest.mark.slow  # (`pytest -m slow`; CI runs it)
def test_class_flow_matches_scipy(problem):
    """The flow of the cross-entropy of a 3-output MLP with output bias, to t = 1 in
    plain mode (no pair on a kink on the way), against SciPy's DOP853; the hidden
    neurons' conserved quantities hold with several outputs and an output bias."""
    flow, net = problem
    sol = jf.solve(flow, net, t1=1.0, rtol=1e-10, kinks="plain")
    assert sol.status_name == "successful"
    assert relative_error(sol.final, scipy_flow(flow, net, 1.0)) < 1e-7
    assert np.max(np.abs(sol.final.conserved() - net.conserved())) < 1e-8
    assert float(jnp.max(jnp.abs(sol.final.c - net.c))) > 1e-3  # the bias moved
    assert sol.metrics["accuracy"].shape == sol.metrics["loss"].shape


def _on_one_kink(flow, net):
    """`net` with one pair (i, j) moved onto neuron j's kink (its bias set so that
    z_ij = 0), chosen so that the least-norm multiplier is inside (0, 1); and the
    closed-form least-norm gradient there, in NumPy."""
    X, y = np.asarray(flow.data.X), np.asarray(flow.data.y)
    W, b = np.asarray(net.weights[0]), np.asarray(net.biases[0])
    V = np.asarray(net.v).reshape(-1, W.shape[0])  # (k, h); k = 1 for a scalar output
    c = 0.0 if net.c is None else np.asarray(net.c)
    Xt = np.concatenate([X, np.ones((len(X), 1))], axis=1)
    for j, i in itertools.product(range(W.shape[0]), range(len(X))):
        b_i = b.copy()
        b_i[j] = -X[i] @ W[j]
        Z = X @ W.T + b_i
        kinked = np.zeros(Z.shape, bool)
        kinked[i, j] = True
        H = np.where(kinked, 0.0, np.maximum(Z, 0.0))
        F = H @ V.T + c
        if net.v.ndim == 1:  # logistic on ±1 labels: d/df log(1 + e^{-yf})
            R = (-y / (1 + np.exp(y * F[:, 0])))[:, None] / len(X)
        else:  # softmax cross-entropy on integer labels
            P = np.exp(F - F.max(axis=1, keepdims=True))
            R = (P / P.sum(axis=1, keepdims=True) - np.eye(V.shape[0])[y]) / len(X)
        C = R @ V  # (n, h): <v_j, r_i>
        G = np.where((Z > 0) & ~kinked, C, 0.0).T @ Xt  # (h, d + 1)
        a = C[i, j] * Xt[i]
        s = -(G[j] @ a) / (a @ a)
        if 0.05 < s < 0.95:
            G[j] += s * a
            gV = (R.T @ H).reshape(np.shape(net.v))
            gc = R.sum(axis=0).reshape(np.shape(net.c))
            model = eqx.tree_at(lambda m: m.biases[0], net, jnp.asarray(b_i))
            return model, (G, gV, gc)
    raise AssertionError("no pair with an inner least-norm multiplier")


@pytest.mark.slow
@pytest.mark.parametrize("out", [None, 3])
def test_one_hidden_layer_mlp_takes_the_two_layer_rule(problem, out):
    """A one-hidden-layer ReLU `MLP` (any number of outputs, an output bias) takes the
    two-layer minimum-norm rule, whose jumps are <v_j, r_i> x_i with vector outputs:
    at a pair on its kink its velocity is the closed-form least-norm element; two
    hidden layers, or a leaky ReLU, take the general one."""
    from jaxflow._kinks import min_norm_gradient, treatment

    flow, net = problem
    if out is None:  # a scalar output: logistic loss on ±1 labels
        y = jnp.where(flow.data.y == 0, 1.0, -1.0)
        flow = jf.GradientFlow(jf.losses.logistic, jf.Dataset(flow.data.X, y))
        net = jf.models.MLP(4, 6, scale=1.0, out_bias=True, key=jax.random.key(2))
    assert treatment(flow, net) == "min-norm"
    model, (G, gV, gc) = _on_one_kink(flow, net)
    velocity = min_norm_gradient(flow, model)
    H = np.concatenate([velocity.weights[0], velocity.biases[0][:, None]], axis=1)
    assert np.max(np.abs(H - G)) < 1e-12 * np.max(np.abs(G))
    assert np.max(np.abs(np.asarray(velocity.v) - gV)) < 1e-12 * np.max(np.abs(gV))
    assert np.max(np.abs(np.asarray(velocity.c) - gc)) < 1e-12 * np.max(np.abs(gc))
    # Neither one-sided gradient is it (the test could fail).
    assert relative_error(flow.gradient(model), velocity) > 1e-4
    key = jax.random.key(0)
    deep = jf.models.MLP(4, (6, 6), scale=1.0, out=3, key=key)
    leaky = jf.models.MLP(4, 6, scale=1.0, out=3, activation="leaky_relu", key=key)
    flow3 = problem[0]
    assert [treatment(flow3, m) for m in (deep, leaky)] == ["general", "general"]


@pytest.mark.slow
def test_class_flow_through_kinks_matches_gd(problem):
    """The default mode on a 3-output MLP with an output bias (the two-layer rule),
    through crossings and a slide to t = 10, against GD, an independent reference:
    GD's distance to it shrinks in proportion to the learning rate (by 8 from lr
    2e-3 to 2.5e-4; GD's first-order error, not Richardson-extrapolable through
    kinks). A flow off by 1e-5 would show as a ratio off 1/8 by a fifth."""
    flow, net = problem
    net = jf.models.MLP(4, 6, scale=0.3, out=3, out_bias=True, key=jax.random.key(5))
    sol = jf.solve(flow, net, t1=10.0, rtol=1e-10, ts=[10.0])
    assert sol.status_name == "successful"
    assert int(sol.stats["num_crossings"]) >= 10
    assert int(sol.stats["num_slides"]) >= 1
    coarse, fine = (
        relative_error(sol.final, jf.gradient_descent(flow, net, lr=lr, steps=n).final)
        for lr, n in ((2e-3, 5000), (2.5e-4, 40000))
    )
    assert 0.11 < fine / coarse < 0.145, (coarse, fine)
    assert np.max(np.abs(sol.final.conserved() - net.conserved())) < 1e-8
