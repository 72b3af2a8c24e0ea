"""Models that act on one sample (equinox's convention) are vmapped over the data's
rows; models that act on the data matrix are called on it."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import jaxflow as jf
from jaxflow._predict import predict

from helpers import flat, relative_error, scipy_flow


N, D = 12, 4
X = jax.random.normal(jax.random.key(0), (N, D))


class Quadratic(eqx.Module):
    """$f(x) = x^\\top A x + \\langle c, x\\rangle$: one sample only (its matmuls
    do not broadcast over rows)."""

    A: jax.Array
    c: jax.Array

    def __call__(self, x):
        return x @ self.A @ x + self.c @ x


class TwoOutputsPerRow(eqx.Module):
    """A matrix model that gives two outputs a row, `(n, d) -> (n, 2)`."""

    W: jax.Array

    def __call__(self, X):
        return X @ self.W


class ColumnOutput(eqx.Module):
    """A matrix model that returns a column, `(n, d) -> (n, 1)`."""

    w: jax.Array

    def __call__(self, X):
        return jnp.tanh(X @ self.w)[:, None]


def _models():
    """name -> (model, whether a loop calls it on a one-row matrix, not a sample)."""
    k1, k2, k3, k4 = jax.random.split(jax.random.key(1), 4)
    return {
        "mlp-scalar": (
            eqx.nn.MLP(D, "scalar", 8, 2, activation=jnp.tanh, key=k1),
            False,
        ),
        "mlp-1": (eqx.nn.MLP(D, 1, 8, 2, activation=jnp.tanh, key=k2), False),
        "two-layer-relu": (
            jf.models.TwoLayerReLU(D, 6, scale=1.0, bias=True, key=k3),
            False,
        ),
        "quadratic": (
            Quadratic(jax.random.normal(k4, (D, D)), jnp.arange(D, dtype=float)),
            False,
        ),
        "column": (ColumnOutput(jnp.linspace(-1.0, 1.0, D)), True),
    }


@pytest.mark.parametrize("name", list(_models()))
def test_predict_matches_a_loop_over_rows(name):
    model, on_matrix = _models()[name]
    loop = np.array([np.asarray(model(x[None] if on_matrix else x)).item() for x in X])
    got = predict(model, X)
    assert got.shape == (N,)
    assert np.allclose(got, loop, rtol=1e-14, atol=1e-14)
    jitted = eqx.filter_jit(predict)(model, X)
    assert np.allclose(jitted, loop, rtol=1e-14, atol=1e-14)


def test_predict_gradient_and_vmap_over_models():
    keys = jax.random.split(jax.random.key(2), 3)
    models = eqx.filter_vmap(lambda k: eqx.nn.MLP(D, "scalar", 8, 2, key=k))(keys)
    batched = eqx.filter_vmap(predict, in_axes=(eqx.if_array(0), None))(models, X)
    for s in range(3):
        one = jax.tree.map(lambda a: a[s] if eqx.is_array(a) else a, models)
        assert np.allclose(batched[s], jax.vmap(one)(X), rtol=1e-14)
    one = jax.tree.map(lambda a: a[0] if eqx.is_array(a) else a, models)
    grad = eqx.filter_grad(lambda m: jnp.sum(predict(m, X) ** 2))(one)
    loop = eqx.filter_grad(lambda m: sum(m(x) ** 2 for x in X))(one)
    assert relative_error(grad, loop) < 1e-13


class BothConventions(eqx.Module):
    """Acts on a sample and on a matrix, marking which it was given (+1 for a
    matrix)."""

    w: jax.Array

    def __call__(self, x):
        return x @ self.w + (1.0 if x.ndim == 2 else 0.0)


def test_data_matrix_convention_wins_when_both_fit():
    # n == d: both conventions give valid shapes; the data matrix is tried first.
    square = X[:D]
    model = BothConventions(jnp.arange(D, dtype=float))
    assert np.allclose(predict(model, square), square @ model.w + 1.0, rtol=1e-14)
    assert np.allclose(predict(model, X), X @ model.w + 1.0, rtol=1e-14)
    # An equinox MLP on a square X still fails on the matrix (its last layer asserts
    # one output), so it is vmapped.
    mlp = eqx.nn.MLP(D, "scalar", D, 1, key=jax.random.key(4))
    assert np.allclose(predict(mlp, square), jax.vmap(mlp)(square), rtol=1e-14)


def test_multi_output_models_predict_rows_of_outputs():
    model = eqx.nn.MLP(D, 3, 8, 2, key=jax.random.key(5))
    expected = np.stack([np.asarray(model(x)) for x in X])
    assert np.allclose(predict(model, X), expected, rtol=1e-14)
    assert np.allclose(eqx.filter_jit(predict)(model, X), expected, rtol=1e-14)
    matrix = TwoOutputsPerRow(jnp.ones((D, 2)))
    assert np.allclose(predict(matrix, X), np.asarray(X) @ np.ones((D, 2)), rtol=1e-14)
    with pytest.raises(ValueError, match="shape \\(n, d\\)"):
        predict(matrix, X[0])
    # A scalar-output loss on them names both shapes.
    data = jf.Dataset(X, jnp.sign(X[:, 0]))
    with pytest.raises(ValueError, match=f"predictions of shape \\({N}, 3\\)"):
        jf.GradientFlow(jf.losses.logistic, data)(model)


def test_model_fitting_no_convention_names_the_shapes():
    cube = eqx.nn.Lambda(lambda x: jnp.ones(x.shape[:-1] + (2, 2)))
    with pytest.raises(ValueError) as info:
        predict(cube, X)
    text = str(info.value)
    for piece in (
        "Lambda",
        f"({N}, {D})",
        f"({D},)",
        "output shape (2, 2)",
        "acts neither",
    ):
        assert piece in text, (piece, text)


def test_logistic_flow_of_a_per_sample_mlp_matches_scipy():
    dkey, mkey = jax.random.split(jax.random.key(6))
    flow = jf.GradientFlow(jf.losses.logistic, jf.datasets.separable(dkey, 40, 5, 0.3))
    model = eqx.nn.MLP(5, "scalar", 8, 2, activation=jnp.tanh, key=mkey)
    sol = jf.solve(flow, model, t1=5.0, rtol=1e-10, kinks="plain")
    assert sol.status_name == "successful"
    expected = flat(eqx.filter(scipy_flow(flow, model, 5.0), eqx.is_inexact_array))
    got = ravel_pytree(eqx.filter(sol.final, eqx.is_inexact_array))[0]
    error = np.max(np.abs(np.asarray(got) - expected)) / np.max(np.abs(expected))
    assert error < 1e-7, error
    loss = np.asarray(sol.metrics["loss"])
    assert loss[-1] < loss[0] and np.all(np.diff(loss) <= 1e-14)


def test_square_flow_of_a_per_sample_mlp_with_one_output():
    dkey, mkey = jax.random.split(jax.random.key(7))
    Xs = jax.random.normal(dkey, (30, 3))
    flow = jf.GradientFlow(jf.losses.square, jf.Dataset(Xs, jnp.sin(Xs[:, 0])))
    model = eqx.nn.MLP(3, 1, 8, 2, activation=jnp.tanh, key=mkey)
    sol = jf.solve(flow, model, t1=2.0, rtol=1e-8, kinks="plain")
    assert sol.status_name == "successful"
    loss = np.asarray(sol.metrics["loss"])
    assert loss[-1] < 0.9 * loss[0] and np.all(np.diff(loss) <= 1e-12)
    assert sol.final.layers[-1].weight.shape == (1, 8)
