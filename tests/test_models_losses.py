import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxflow as jf


def test_two_layer_relu_formula_on_sample_and_matrix():
    net = jf.models.TwoLayerReLU(3, 4, scale=1.0, bias=True, key=jax.random.key(0))
    X = jax.random.normal(jax.random.key(1), (5, 3))
    W, v, b = map(np.asarray, (net.W, net.v, net.b))
    expected = np.maximum(np.asarray(X) @ W.T + b, 0.0) @ v
    assert np.allclose(net(X), expected, rtol=1e-14)
    assert np.allclose(jax.vmap(net)(X), expected, rtol=1e-14)
    assert net(X[0]).shape == ()


def test_relu_derivative_at_kink_is_zero():
    net = jf.models.TwoLayerReLU(2, 1, scale=1.0, key=jax.random.key(0))
    x = jnp.array([net.W[0, 1], -net.W[0, 0]])  # <w, x> = 0 exactly
    grad = jax.grad(lambda m: m(x))(net)
    assert np.all(grad.W == 0) and np.all(grad.v == 0)


@pytest.mark.parametrize("bias", [False, True])
def test_balanced_init(bias):
    net = jf.models.TwoLayerReLU(50, 2000, scale=0.1, bias=bias, key=jax.random.key(0))
    assert np.allclose(net.conserved(), 0.0, atol=1e-15)
    signs = np.sign(net.v)
    assert 0.45 < np.mean(signs > 0) < 0.55
    # W0 ~ N(0, 1/d): entries of W have std scale / sqrt(d).
    assert np.isclose(np.std(net.W), 0.1 / np.sqrt(50), rtol=0.02)
    assert (net.b is not None) == bias


def test_init_variants():
    key = jax.random.key(0)
    width = jf.models.TwoLayerReLU(4, 4000, scale=0.3, fan="width", bias=True, key=key)
    assert np.isclose(np.std(width.W), 0.3 / np.sqrt(4000), rtol=0.03)
    assert np.isclose(np.std(width.b), 0.3 / np.sqrt(4000), rtol=0.05)
    gauss = jf.models.TwoLayerReLU(30, 3000, scale=0.5, init="gaussian", key=key)
    assert np.isclose(np.std(gauss.W), 0.5, rtol=0.02)
    assert np.isclose(np.std(gauss.v), 0.5, rtol=0.05)
    assert not np.allclose(gauss.conserved(), 0.0, atol=1e-3)
    # Boursier and Flammarion's 'unbalanced' init (their code: hidden weights, biases
    # and output weights each N(0, scale^2/width), drawn alone), as `jaxflow spurious
    # --init gaussian` builds it.
    m, lam = 4000, 0.3
    unbalanced = jf.models.TwoLayerReLU(
        1, m, scale=lam, init="gaussian", fan="width", bias=True, key=key
    )
    for x in (unbalanced.W, unbalanced.b, unbalanced.v):
        assert np.isclose(np.std(x), lam / np.sqrt(m), rtol=0.05)
    assert abs(np.corrcoef(np.abs(unbalanced.v), np.abs(unbalanced.b))[0, 1]) < 0.05


def test_two_layer_relu_errors():
    key = jax.random.key(0)
    with pytest.raises(
        ValueError, match="`init` must be 'balanced' or 'gaussian', got 'xavier'"
    ):
        jf.models.TwoLayerReLU(2, 3, init="xavier", key=key)
    with pytest.raises(ValueError, match="`width` must be a positive int, got 0"):
        jf.models.TwoLayerReLU(2, 0, key=key)
    with pytest.raises(ValueError, match="`scale` must be > 0, got -1"):
        jf.models.TwoLayerReLU(2, 3, scale=-1.0, key=key)
    with pytest.raises(ValueError, match="`fan` must be one of"):
        jf.models.TwoLayerReLU(2, 3, fan="out", key=key)


def test_losses_match_their_formulas():
    key = jax.random.key(3)
    X = jax.random.normal(key, (7, 3))
    y = jnp.where(jax.random.bernoulli(key, 0.5, (7,)), 1.0, -1.0)
    data = jf.Dataset(X, y)
    model = jf.models.Linear(3, key=jax.random.key(4))
    f, yy = np.asarray(model(X)), np.asarray(y)
    assert np.isclose(jf.losses.exponential(model, data), np.mean(np.exp(-yy * f)))
    assert np.isclose(
        jf.losses.logistic(model, data), np.mean(np.log1p(np.exp(-yy * f)))
    )
    assert np.isclose(jf.losses.square(model, data), np.mean((f - yy) ** 2))
    total = jf.losses.Square(reduction="sum")(model, data)
    assert np.isclose(total, 7 * jf.losses.square(model, data))
    with pytest.raises(
        ValueError, match="`reduction` must be 'mean' or 'sum', got 'max'"
    ):
        jf.losses.Exponential(reduction="max")


def test_logistic_is_stable_at_large_margins():
    data = jf.Dataset(jnp.array([[1.0], [1.0]]), jnp.array([1.0, -1.0]))
    big = jf.models.Linear(1, key=None)
    big = jax.tree.map(lambda w: w + 1e4, big)
    value = jf.losses.logistic(big, data)
    assert np.isclose(value, 1e4 / 2)  # softplus(-1e4)/2 + softplus(1e4)/2
    assert np.all(np.isfinite(jax.grad(jf.losses.logistic)(big, data).w))
