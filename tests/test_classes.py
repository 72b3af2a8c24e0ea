"""Class outputs: integer labels, `cross_entropy`, squared losses on vector outputs,
`MLP(out=k, out_bias=True)`, `metrics.accuracy`; checked against NumPy / SciPy."""

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
