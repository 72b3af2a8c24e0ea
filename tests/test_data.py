import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxflow as jf


def test_dataset_validates_shapes():
    with pytest.raises(
        ValueError, match=r"`X` must have shape \(n, d\), got shape \(3,\)"
    ):
        jf.Dataset(jnp.ones(3), jnp.ones(3))
    with pytest.raises(ValueError, match=r"`X` has 3 rows but `y` has 2"):
        jf.Dataset(jnp.ones((3, 2)), jnp.ones(2))
    with pytest.raises(ValueError, match=r"`y` .* must have shape \(n,\) or \(n, k\)"):
        jf.Dataset(jnp.ones((3, 2)), jnp.ones((3, 1, 1)))
    assert jf.Dataset(jnp.ones((3, 2)), jnp.ones((3, 4))).y.shape == (3, 4)
    with pytest.raises(ValueError, match="empty"):
        jf.Dataset(jnp.ones((0, 2)), jnp.ones(0))


def test_dataset_rejects_nonfinite_and_names_the_entry():
    X = np.ones((4, 2))
    X[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"`X` must be finite.*index \(2, 1\)"):
        jf.Dataset(X, np.ones(4))
    with pytest.raises(ValueError, match="`y` must be finite"):
        jf.Dataset(np.ones((2, 2)), np.array([1.0, np.inf]))


def test_dataset_checks_fire_under_jit():
    make = jax.jit(lambda X: jf.Dataset(X, jnp.ones(2)).X)
    assert make(jnp.ones((2, 2))).shape == (2, 2)
    with pytest.raises(Exception, match="must be finite"):
        make(jnp.array([[1.0, jnp.nan], [0.0, 1.0]]))


def test_labels_checked_for_classification_losses():
    data = jf.Dataset(jnp.ones((3, 2)), jnp.array([1.0, 0.0, -1.0]))
    with pytest.raises(ValueError, match=r"Exponential needs labels y in \{\+1, -1\}"):
        jf.GradientFlow(jf.losses.exponential, data)
    with pytest.raises(ValueError, match="Logistic needs labels"):
        jf.GradientFlow(jf.losses.logistic, data)
    jf.GradientFlow(jf.losses.square, data)  # any real targets
    with pytest.raises(ValueError, match="`loss` must be a callable"):
        jf.GradientFlow("square", data)


def test_centres_and_separation_by_hand():
    # Signed points at angles 0 and 60 degrees: mu = cos 60 = 0.5.
    X = jnp.array([[1.0, 0.0], [-0.5, -jnp.sqrt(3) / 2], [2.0, 0.0]])
    data = jf.Dataset(X, jnp.array([1.0, -1.0, 1.0]))
    assert np.allclose(data.x_plus, [3.0, 0.0])
    assert np.allclose(data.x_minus, [-0.5, -np.sqrt(3) / 2])
    assert np.isclose(data.separation(), 0.5)


@pytest.mark.parametrize("mu", [0.05, 0.3, 0.9])
def test_separable_reaches_requested_separation(mu):
    for seed in range(3):
        data = jf.datasets.separable(
            jax.random.key(seed), 200, 7, mu, radius=(0.5, 2.0)
        )
        assert data.X.shape == (200, 7)
        assert set(np.unique(data.y)) == {-1.0, 1.0}
        achieved = float(data.separation())
        assert mu <= achieved < mu + 0.2 * (1 - mu)
        norms = np.linalg.norm(data.X, axis=1)
        assert norms.min() >= 0.5 - 1e-12 and norms.max() <= 2.0 + 1e-12


@pytest.mark.parametrize("n, d", [(2, 2), (16, 20), (300, 5)])
def test_separable_exact_separation(n, d):
    for mu in (0.05, 0.5, 0.9):
        data = jf.datasets.separable(jax.random.key(n), n, d, mu, exact=True)
        assert float(data.separation()) == pytest.approx(mu, abs=1e-12)
        assert set(np.unique(data.y)) == {-1.0, 1.0}
    # Without `exact`, few points in many dimensions stay well inside the cap.
    loose = jf.datasets.separable(jax.random.key(16), 16, 20, 0.05)
    assert float(loose.separation()) > 0.2


def test_separable_rejects_bad_arguments():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"`mu` must be in \(0, 1\), got 1.5"):
        jf.datasets.separable(key, 10, 3, 1.5)
    with pytest.raises(ValueError, match="`d` must be an int >= 2, got 1"):
        jf.datasets.separable(key, 10, 1, 0.5)


def test_toys_as_in_papers():
    two = jf.datasets.two_points(0.1)
    assert np.isclose(two.separation(), np.sin(0.1))
    assert np.isclose(jf.datasets.orthogonal().separation(), 0.0)
    circle = jf.datasets.circle_clusters(jax.random.key(0), 5, 7)
    angles = np.degrees(np.arctan2(circle.X[:, 1], circle.X[:, 0]))
    assert np.all(np.abs(angles[:5]) <= 15) and np.all(
        (angles[5:] >= 135) & (angles[5:] <= 160)
    )
    assert np.allclose(np.linalg.norm(circle.X, axis=1), 1.0)


def test_boursier_flammarion_least_squares_point():
    data = jf.datasets.boursier_flammarion()
    A = np.column_stack([np.asarray(data.X[:, 0]), np.ones(3)])
    beta, *_ = np.linalg.lstsq(A, np.asarray(data.y), rcond=None)
    assert np.allclose(beta, [-0.061538, 0.643590], atol=1e-6)
    assert np.isclose(np.mean((A @ beta - data.y) ** 2), 0.175043, atol=1e-6)
    knots = jf.datasets.boursier_flammarion("knots", key=jax.random.key(0))
    assert knots.X.shape == (40, 1)
    assert np.all(knots.y >= 0) and np.all(knots.y <= 1)
    with pytest.raises(ValueError, match="needs a `key`"):
        jf.datasets.boursier_flammarion("knots")
