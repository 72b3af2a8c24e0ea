"""Single ReLU neurons (Lee, Sim and Ye): the arc-cosine kernel and the population
loss against Monte Carlo and finite differences, the magnitude-angle ODEs against the
full-parameter flow, and the `jaxflow neuron` command."""

import json

import equinox as eqx
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

import jaxflow as jf
from jaxflow._cli import main
from jaxflow._neurons import single_neurons


def _unit(key, d):
    g = jax.random.normal(key, (d,))
    return g / jnp.linalg.norm(g)


def _at_angle(v, e, theta):
    """A vector at angle `theta` from unit `v`, in the plane of `v` and `e`."""
    e = e - (e @ v) * v
    e = e / jnp.linalg.norm(e)
    return jnp.cos(theta) * v + jnp.sin(theta) * e


ANGLES = [0.0, 1e-7, 0.3, jnp.pi / 2, 2.5, jnp.pi - 1e-7, jnp.pi]


def test_kernel_matches_monte_carlo():
    d, n = 4, 1_000_000
    kv, ke, kx = jax.random.split(jax.random.key(0), 3)
    v, e = _unit(kv, d), _unit(ke, d)
    X = jax.random.normal(kx, (n, d))
    for theta in ANGLES:
        w = 1.7 * _at_angle(v, e, theta)
        sample = jax.nn.relu(X @ w) * jax.nn.relu(X @ (0.6 * v))
        mc, se = float(sample.mean()), float(sample.std() / n**0.5)
        K = float(jf.losses.arccos_kernel(w, 0.6 * v))
        assert abs(K - mc) < 5 * se + 1e-12, (theta, K, mc, se)
    # Closed values: K(w, w) = |w|^2 / 2, antiparallel 0, orthogonal |w||v| / (2 pi).
    assert float(jf.losses.arccos_kernel(v, v)) == pytest.approx(0.5, rel=1e-15)
    assert float(jf.losses.arccos_kernel(v, -v)) == pytest.approx(0.0, abs=1e-16)
    w = _at_angle(v, e, jnp.pi / 2)
    assert float(jf.losses.arccos_kernel(w, v)) == pytest.approx(1 / (2 * np.pi))


def test_kernel_gradient_is_finite_and_matches_finite_differences():
    d = 5
    kv, ke, kt = jax.random.split(jax.random.key(1), 3)
    v, e = 0.8 * _unit(kv, d), _unit(ke, d)
    grad = jax.grad(jf.losses.arccos_kernel, argnums=(0, 1))
    for theta in ANGLES:
        w = 1.3 * _at_angle(v / 0.8, e, theta)
        gw, gv = grad(w, v)
        assert bool(jnp.all(jnp.isfinite(gw)) & jnp.all(jnp.isfinite(gv)))
        for tangent in jax.random.normal(kt, (3, 2, d)):
            h = 1e-6
            fd = (
                jf.losses.arccos_kernel(w + h * tangent[0], v + h * tangent[1])
                - jf.losses.arccos_kernel(w - h * tangent[0], v - h * tangent[1])
            ) / (2 * h)
            ours = gw @ tangent[0] + gv @ tangent[1]
            assert abs(float(ours - fd)) < 1e-8, (theta, float(ours), float(fd))
    # Parallel: grad_w K = v / 2; antiparallel: 0.
    np.testing.assert_allclose(grad(2 * v, v)[0], v / 2, atol=1e-15)
    np.testing.assert_allclose(grad(-2 * v, v)[0], 0.0, atol=1e-15)


def _students():
    key = jax.random.key(2)
    chain = jf.models.NeuronChain(4, 3, scale=0.9, init="gaussian", key=key)
    net = jf.models.TwoLayerReLU(4, 5, scale=1.0, init="gaussian", key=key)
    return [chain, net]


def test_population_loss_and_gradient_match_monte_carlo_and_finite_differences():
    n = 1_000_000
    tkey, xkey = jax.random.split(jax.random.key(3))
    teacher = jf.models.TwoLayerReLU(4, 3, scale=1.0, init="gaussian", key=tkey)
    data = jf.datasets.GaussianTeacher(teacher)
    flow = jf.GradientFlow(jf.losses.population, data)
    sample = data.sample(xkey, n)
    empirical = jf.GradientFlow(jf.losses.half_square, sample)
    for student in _students():
        per_point = 0.5 * (student(sample.X) - sample.y) ** 2
        mc, se = float(per_point.mean()), float(per_point.std() / n**0.5)
        assert abs(float(flow(student)) - mc) < 5 * se
        # The gradient: finite differences of the closed form, and the large-n
        # empirical gradient (sampling error ~1e-3).
        x0, unravel = jax.flatten_util.ravel_pytree(eqx_params(student))
        g = jax.flatten_util.ravel_pytree(flow.gradient(student))[0]
        ge = jax.flatten_util.ravel_pytree(empirical.gradient(student))[0]
        assert float(jnp.linalg.norm(g - ge) / jnp.linalg.norm(g)) < 1e-2
        h = 1e-6
        for k in range(x0.size):
            step = jnp.zeros_like(x0).at[k].set(h)
            fd = (
                flow(combine(student, unravel(x0 + step)))
                - flow(combine(student, unravel(x0 - step)))
            ) / (2 * h)
            assert abs(float(fd - g[k])) < 1e-8


def eqx_params(model):
    return eqx.filter(model, eqx.is_inexact_array)


def combine(model, params):
    return eqx.combine(params, eqx.filter(model, eqx.is_inexact_array, inverse=True))


def test_chain_is_one_neuron_with_its_output_weight():
    X = jax.random.normal(jax.random.key(4), (50, 3))
    for seed in range(6):
        chain = jf.models.NeuronChain(
            3, 4, scale=1.0, init="gaussian", key=jax.random.key(seed)
        )
        c, W = single_neurons(chain)
        np.testing.assert_allclose(
            chain(X), c[0] * jax.nn.relu(X @ W[0]), rtol=1e-14, atol=1e-15
        )
    balanced = jf.models.NeuronChain(3, 4, scale=0.1, key=jax.random.key(0))
    assert float(jf.metrics.magnitude(balanced, None)) == pytest.approx(1e-4)
    np.testing.assert_allclose(balanced.conserved(), 0.0, atol=1e-17)


@pytest.mark.parametrize(
    "depth",
    [
        1,
        2,
        pytest.param(3, marks=pytest.mark.slow),
        pytest.param(4, marks=pytest.mark.slow),
    ],
)
def test_magnitude_angle_odes_match_the_full_flow(depth):
    flow = jf.experiments.teacher_flow(jax.random.key(0), 5)
    net = jf.models.NeuronChain(5, depth, scale=0.5, key=jax.random.key(1))
    ts = jnp.array([0.5, 2.0, 10.0, 50.0])
    sol = jf.solve(
        flow, net, t1=50.0, ts=ts, rtol=1e-12,
        metrics={"r": jf.metrics.magnitude, "phi": jf.metrics.teacher_angle},
    )  # fmt: skip
    assert sol.status_name == "successful"
    r, phi = jf.experiments.magnitude_angle(
        depth,
        float(jf.metrics.magnitude(net, flow)),
        float(jf.metrics.teacher_angle(net, flow)),
        ts,
    )
    np.testing.assert_allclose(sol.metrics["r"], r, rtol=1e-9)
    np.testing.assert_allclose(sol.metrics["phi"], phi, rtol=1e-9)
    assert r[-1] > 0.99 and phi[-1] > np.pi - 1e-2  # it learns the teacher


@pytest.mark.slow
def test_cli_neuron_writes_summary_times_and_figure(tmp_path):
    out = tmp_path / "neuron"
    code = main(
        ["neuron", "--depths", "1", "3", "--scales", "1e-2", "1", "--seeds", "3",
         "--d", "4", "--ns", "200", "2000", "--draws", "2", "--lrs", "0.1", "0.05",
         "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    rows = summary["depths"]["3"]["rows"]
    assert [r["loss_reached"] for r in rows] == [3, 3]
    # Depth 3 is slower from the small init; GD's error is first order in its step.
    assert rows[0]["loss_time_median"] > 3 * rows[1]["loss_time_median"]
    assert 0.8 < summary["gd"]["slope"] < 1.2
    assert summary["finite_sample"]["slope"] < 0
    lines = (out / "times.csv").read_text().splitlines()
    assert len(lines) == 1 + 2 * 2 * 3
    assert (out / "neuron.png").stat().st_size > 10_000


def test_bad_inputs_name_the_value():
    with pytest.raises(ValueError, match="NeuronChain.*depth.*got 0"):
        jf.models.NeuronChain(3, 0, key=jax.random.key(0))
    with pytest.raises(ValueError, match="NeuronChain.*init.*got 'ortho'"):
        jf.models.NeuronChain(3, 2, init="ortho", key=jax.random.key(0))
    biased = jf.models.TwoLayerReLU(3, 2, bias=True, key=jax.random.key(0))
    with pytest.raises(ValueError, match="without bias, got TwoLayerReLU with bias"):
        jf.datasets.GaussianTeacher(biased)
    teacher = jf.models.NeuronChain(3, 1, key=jax.random.key(0))
    with pytest.raises(ValueError, match="GaussianTeacher, got Dataset"):
        jf.losses.population(teacher, jf.datasets.boursier_flammarion())
    with pytest.raises(ValueError, match="`n` must be a positive int, got 0"):
        jf.datasets.GaussianTeacher(teacher).sample(jax.random.key(0), 0)


def _effective(model, flow):
    return model.v[0] * jnp.linalg.norm(model.W[0])


def _phi(model, flow):
    """pi - angle(w, v*), by arccos: phi stays away from 0 here."""
    w, v = model.W[0], flow.data.teacher.end_to_end()
    return jnp.pi - jnp.arccos(w @ v / (jnp.linalg.norm(w) * jnp.linalg.norm(v)))


def test_width_one_two_layer_net_is_the_depth_two_neuron():
    # TwoLayerReLU at m = 1 with v > 0 against the reduced ODEs, derived separately.
    flow = jf.experiments.teacher_flow(jax.random.key(0), 5)
    net = jf.models.TwoLayerReLU(5, 1, scale=0.3, key=jax.random.key(1))
    net = eqx.tree_at(lambda n: n.v, net, jnp.abs(net.v))
    ts = jnp.array([1.0, 5.0, 20.0])
    metrics = {"r": _effective, "phi": _phi}
    sol = jf.solve(flow, net, t1=20.0, ts=ts, rtol=1e-12, metrics=metrics)
    assert sol.status_name == "successful"
    r, phi = jf.experiments.magnitude_angle(
        2, float(_effective(net, flow)), float(_phi(net, flow)), ts
    )
    np.testing.assert_allclose(sol.metrics["r"], r, rtol=1e-8)
    np.testing.assert_allclose(sol.metrics["phi"], phi, rtol=1e-8)
    assert phi[0] < 3.0 and phi[-1] > np.pi - 1e-3  # it learns the teacher
