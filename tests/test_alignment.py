"""Alignment study (Min, Mallada, Vidal): theory quantities against hand-worked 2-D
cases, the two-phase metrics against finite differences, the study's summary. The
events it uses are tested in test_events."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxflow as jf


def _three_points():
    # x1 = (1, 0) and x2 = (cos 60°, sin 60°) labelled +1, x3 = (-1, 0) labelled -1.
    X = jnp.array([[1.0, 0.0], [0.5, math.sqrt(3) / 2], [-1.0, 0.0]])
    return jf.Dataset(X, jnp.array([1.0, 1.0, -1.0]))


def test_theory_three_points_by_hand():
    theory = jf.experiments.alignment_theory(_three_points())
    # Signed pairs: <x1, x2> = 1/2, <x1, -x3> = 1, <x2, -x3> = 1/2.
    assert float(theory.mu) == pytest.approx(0.5)
    np.testing.assert_allclose(theory.x_plus, [1.5, math.sqrt(3) / 2])
    np.testing.assert_allclose(theory.x_minus, [-1.0, 0.0])
    assert float(theory.X_min) == pytest.approx(1.0)
    assert float(theory.X_max) == pytest.approx(1.0)
    # S+ is the wedge of angles (-30°, 90°) around x+ at 30°: half-angle 60°.
    # S- is [150°, 270°) and x- is at 180°: 30° to its edge. The widest caps
    # cos(z, x+-) >= sqrt(1 - zeta1) inside them: half-angle 30°, zeta1 = sin^2 30°.
    assert float(theory.zeta1) == pytest.approx(0.25)
    assert float(theory.zeta) == pytest.approx(0.25)
    assert float(theory.xi) == pytest.approx(0.25)  # mu^2
    assert math.isnan(float(theory.zeta2))
    bound = 16 * math.log(3) / (0.25 * math.sqrt(0.5) * 1.0)
    assert float(theory.t1_bound) == pytest.approx(bound)
    assert float(theory.alpha) == pytest.approx(0.5**2 / 32)


def test_theory_with_initial_neurons():
    data = _three_points()
    # Neuron 0 (v > 0) at 174.3°, 5.7° from the wrong centre x- (180°); neuron 1
    # (v < 0) at -90°, 120° from x+ (30°): cos < 0, no constraint.
    net = eqx.tree_at(
        lambda m: (m.W, m.v),
        jf.models.TwoLayerReLU(2, 2, key=jax.random.key(0)),
        (jnp.array([[-1.0, 0.1], [0.0, -1.0]]), jnp.array([1.0, -1.0])),
    )
    theory = jf.experiments.alignment_theory(data, net)
    zeta2 = 1 - 1 / 1.01  # 1 - cos^2(5.7°)
    assert float(theory.zeta2) == pytest.approx(zeta2)
    assert float(theory.zeta) == pytest.approx(zeta2)  # below zeta1 = 0.25
    bound = 16 * math.log(3) / (zeta2 * math.sqrt(0.5))
    assert float(theory.t1_bound) == pytest.approx(bound)
    # eq. (28) with h = 2, n = 3, X_min = X_max = 1 and W_max = max ||w_j(0)|| = 1.005.
    assert float(theory.log_eps) == pytest.approx(0.5 * math.log(1.01))
    first = min(0.5, zeta2, 0.25) * math.sqrt(0.5) / (4 * math.sqrt(2) * 3)
    second = -0.5 * math.log(2) - 64 * 3 * math.log(3) / (zeta2 * math.sqrt(0.5))
    assert float(theory.log_eps_max) == pytest.approx(min(math.log(first), second))


def test_theory_toys():
    c = 0.1
    theory = jf.experiments.alignment_theory(jf.datasets.two_points(c))
    assert float(theory.mu) == pytest.approx(math.sin(c))
    # No negative points: only the cap around x+ constrains zeta1. Its edges are the
    # hyperplanes x_i^perp, at angle pi/2 - angle(x+, x_i) from x+: the sine of the
    # half-angle is min_i cos(x+, x_i).
    x1, x2 = np.array([1.0, 0.0]), np.array([math.sin(c), math.cos(c)])
    xp = x1 + x2
    expected = min(x @ xp / np.linalg.norm(xp) for x in (x1, x2)) ** 2
    assert float(theory.zeta1) == pytest.approx(expected)
    orth = jf.experiments.alignment_theory(jf.datasets.orthogonal())
    assert float(orth.mu) == pytest.approx(0.0, abs=1e-15)
    assert float(orth.t1_bound) == math.inf  # mu = 0: Theorem 1 does not apply


def _in_cone(Z, X, y, sign):
    """Z's rows in S_+ (sign 1) or S_- (sign -1): active exactly on that class."""
    return np.all((Z @ X.T > 0) == (y[None, :] == sign), axis=1)


def test_theory_xi_and_zeta1_by_monte_carlo():
    # Lemma 9's xi: sup |cos(x1, x2)| over x1 in the cone of the y_i x_i and x2
    # outside S+ and S- is sqrt(1 - xi); Lemma 8's zeta1: the cap
    # cos(z, x+-) >= sqrt(1 - zeta1) lies in S+- and no wider one does. Sampled.
    data = jf.datasets.separable(jax.random.key(3), 6, 3, 0.4)
    theory = jf.experiments.alignment_theory(data)
    X, y = np.asarray(data.X), np.asarray(data.y)
    rng = np.random.default_rng(0)
    G = y[:, None] * X
    x1 = np.concatenate([G, rng.exponential(size=(200, 6)) @ G])
    x1 /= np.linalg.norm(x1, axis=1, keepdims=True)
    x2 = rng.normal(size=(400_000, 3))
    x2 /= np.linalg.norm(x2, axis=1, keepdims=True)
    outside = ~_in_cone(x2, X, y, 1) & ~_in_cone(x2, X, y, -1)
    x2 = x2[outside]
    sup = max(np.abs(x2 @ x1[k : k + 16].T).max() for k in range(0, len(x1), 16))
    edge = math.sqrt(1 - float(theory.xi))
    assert sup <= edge + 1e-12
    assert sup >= edge - 5e-3
    widest = []
    for centre, sign in ((data.x_plus, 1), (data.x_minus, -1)):
        c = np.asarray(centre) / np.linalg.norm(centre)
        z = rng.normal(size=(400_000, 3))
        z /= np.linalg.norm(z, axis=1, keepdims=True)
        inside, cos = _in_cone(z, X, y, sign), z @ c
        # The widest cap inside, found by sampling: just inside the nearest point
        # outside.
        widest.append(1 - cos[~inside].max() ** 2)
    assert float(theory.zeta1) == pytest.approx(min(widest), rel=2e-2)


def test_theory_rejects_bad_data():
    with pytest.raises(ValueError, match="`data` must be a jaxflow.Dataset"):
        jf.experiments.alignment_theory(np.ones((3, 2)))


def test_two_phase_metrics_are_derivatives():
    dkey, mkey = jax.random.split(jax.random.key(5))
    data = jf.datasets.separable(dkey, 10, 3, 0.3)
    flow = jf.GradientFlow(jf.losses.exponential, data)
    net = jf.models.TwoLayerReLU(3, 4, scale=0.3, key=mkey)
    # norm_change = d/dt ||W||_F^2 along the flow: a centred difference of the solve.
    t, h = 1.0, 1e-4
    ts = jnp.array([t - h, t, t + h])
    metrics = {
        "norm_sq": lambda m, f: jnp.sum(m.W**2),
        "norm_change": jf.metrics.norm_change,
        "direction_change": jf.metrics.direction_change,
    }
    sol = jf.solve(flow, net, t1=t + h, ts=ts, rtol=1e-12, metrics=metrics)
    sq = np.asarray(sol.metrics["norm_sq"])
    numeric = (sq[2] - sq[0]) / (2 * h)
    assert float(sol.metrics["norm_change"][1]) == pytest.approx(numeric, rel=1e-5)
    # direction_change: sum_j of the angular speed |d/dt (w_j/|w_j|)|.
    ys = sol.ys
    u = np.asarray(ys.W / jnp.linalg.norm(ys.W, axis=-1, keepdims=True))
    speed = np.linalg.norm((u[2] - u[0]) / (2 * h), axis=-1).sum()
    assert float(sol.metrics["direction_change"][1]) == pytest.approx(speed, rel=1e-5)


def test_sliding_neuron_counts_as_dead():
    # Two positive points: a neuron with v_j < 0 active on x_2 alone is pushed onto the
    # kink <w_j, x_2> = 0 and slides there (min-norm); it sits on the kink only to
    # rounding, so the cone test must count that pair as inactive.
    data = jf.datasets.two_points(0.1)
    flow = jf.GradientFlow(jf.losses.exponential, data)
    x2 = data.X[1]
    edge = jnp.array([-x2[1], x2[0]])  # <edge, x_2> = 0, <edge, x_1> < 0
    W = 1e-6 * (
        edge[None, :] + jnp.array([0.3, 1e-9, 1e-13, -0.1])[:, None] * x2[None, :]
    )
    net = jf.models.TwoLayerReLU(2, 4, key=jax.random.key(0))
    net = eqx.tree_at(lambda m: (m.W, m.v), net, (W, -jnp.ones(4) * 1e-6))
    z = np.asarray(net.preactivations(data.X))
    assert (z[0] < 0).all() and (z[1, :3] > 0).all()  # active on x_2, but the third
    own = np.asarray(jf.events.in_own_cones(net, flow))  # only to rounding
    np.testing.assert_array_equal(own, [False, False, True, True])

    def init(k):
        return jf.models.TwoLayerReLU(2, 20, scale=1e-6, key=k)

    keys = jax.random.split(jax.random.key(11), 2)
    ens = jf.solve_ensemble(
        flow, init, keys, t1=60.0, ts=jnp.array([0.0, 60.0]), rtol=1e-8,
        events=jf.experiments.alignment_events(1e-3), kinks="min-norm",
    )  # fmt: skip
    s = jf.experiments.alignment_summary(
        ens, jf.experiments.alignment_theory(data), data
    )
    # Every seed reaches Theorem 1's event; its dead neurons (v_j < 0 here, all
    # pushed to S_dead by two positive points) are left out of tau_max, so it is the
    # last alignment time of the living neurons, after t1.
    assert s["times"]["t1"]["reached"] == 2
    assert s["times"]["tau_max"]["reached"] == 2
    for row in s["seeds"]:
        assert row["dead_at_end"] >= sum(np.asarray(ens.final.v[row["seed"]]) < 0)
        assert row["tau_max"] > row["t1"]


@pytest.mark.slow  # (`pytest -m slow`; CI runs it)
def test_times_in_both_units_agree_with_a_sum_loss_run():
    # The theorem's unit is sum-loss time: the sum loss's flow is the mean loss's at
    # n times the speed. A sum-loss run's times, converted, must equal a mean-loss
    # run's, and its sum-loss times must be those times over n.
    data = jf.datasets.separable(jax.random.key(3), 8, 3, 0.3)
    theory = jf.experiments.alignment_theory(data)
    keys = jax.random.split(jax.random.key(4), 2)

    def summary(loss, t1, reduction):
        ens = jf.solve_ensemble(
            jf.GradientFlow(loss, data),
            lambda k: jf.models.TwoLayerReLU(3, 6, scale=1e-4, key=k),
            keys, t1=t1, ts=jnp.array([0.0, t1]), rtol=1e-10,
            events=jf.experiments.alignment_events(1e-3),
        )  # fmt: skip
        return jf.experiments.alignment_summary(ens, theory, data, reduction=reduction)

    mean = summary(jf.losses.exponential, 40.0, "mean")
    total = summary(jf.losses.Exponential(reduction="sum"), 40.0 / data.n, "sum")
    assert "sum-loss" in mean["time_units"]["times_sum_loss"]
    for name in ("t1", "t2", "tau_max"):
        a, b = mean["times"][name], total["times"][name]
        assert a["reached"] == b["reached"] == 2, name
        assert b["median"] == pytest.approx(a["median"], rel=1e-6), name
        c = mean["times_sum_loss"][name]
        assert c["median"] == pytest.approx(a["median"] / data.n, rel=1e-12), name
    for row in mean["seeds"]:
        assert row["sum_loss"]["t1"] == pytest.approx(row["t1"] / data.n, rel=1e-12)
        bound = row["t1_bound"]
        if bound is not None:
            assert row["t1_over_bound"] == pytest.approx(row["t1"] / data.n / bound)
    with pytest.raises(ValueError, match="`reduction`.*'total'"):
        jf.experiments.alignment_summary(None, theory, reduction="total")


def test_input_scale_is_init_scale_and_time():
    # f is positively homogeneous of degree 1 in x and 2 in (W, v): f(c x; θ) =
    # f(x; √c θ), so the flow on c·x from θ0 is θ(t) = θ̃(c t)/√c, θ̃ the flow on x
    # from √c θ0. Hence ||W(t)||² = ||W̃(c t)||²/c, and the losses agree: L_c(θ(t)) =
    # L(θ̃(c t)). (Min et al.'s MNIST pixel scale enters only through this.)
    c = 3.2457
    X = jax.random.normal(jax.random.key(1), (5, 3))
    y = jnp.array([1.0, -1.0, 1.0, 1.0, -1.0])
    model = jf.models.TwoLayerReLU(
        3, 4, scale=0.5, init="gaussian", key=jax.random.key(2)
    )
    scaled = jax.tree.map(lambda a: math.sqrt(c) * a, model)
    ts = jnp.linspace(0.0, 4.0, 9)
    metrics = {
        "norm": jf.metrics.spectral_norm_sq,
        "frobenius": lambda m, f: jnp.sum(m.W**2),
        "loss": jf.metrics.loss,
    }
    # kinks="plain": the identity is the flow's, whatever the kink rule; plain compiles
    # in seconds, the min-norm rule in tens of seconds.
    options = dict(
        rtol=1e-10, metrics=metrics, save_models=False, throw=True, kinks="plain"
    )
    on_cx = jf.solve(
        jf.GradientFlow(jf.losses.exponential, jf.Dataset(c * X, y)),
        model, t1=4.0, ts=ts, **options,
    )  # fmt: skip
    on_x = jf.solve(
        jf.GradientFlow(jf.losses.exponential, jf.Dataset(X, y)),
        scaled, t1=4.0 * c, ts=c * ts, **options,
    )  # fmt: skip
    a, b = on_cx.metrics, on_x.metrics
    assert float(a["loss"][-1]) < 0.5 * float(a["loss"][0])  # it trained
    np.testing.assert_allclose(a["norm"], b["norm"] / c, rtol=1e-6)
    np.testing.assert_allclose(a["frobenius"], b["frobenius"] / c, rtol=1e-6)
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-6)
