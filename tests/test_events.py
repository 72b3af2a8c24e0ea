"""Events (`jaxflow.events`): their validation, event times located on the trajectory
and against a brute-force search on a fine grid, terminal events ending a solve."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxflow as jf

from helpers import DATA, EVENTS, FLOW, KEYS, T1, TS, WIDTH, D, init


def test_event_validation():
    with pytest.raises(ValueError, match="`delta` must be in"):
        jf.events.Aligned(0.0)
    with pytest.raises(ValueError, match="`fraction` must be in"):
        jf.events.LossFraction(1.5)
    with pytest.raises(ValueError, match="`factor` must be > 1"):
        jf.events.NormGrowth(1.0)


@pytest.mark.slow  # (70 s; the README command stays under 10 minutes; CI runs it)
def test_event_times_are_located_on_the_trajectory():
    net = init(KEYS[0])
    sol = jf.solve(FLOW, net, t1=T1, ts=TS, rtol=1e-10, events=EVENTS)
    t_loss = float(sol.event_times["loss"])
    t_aligned = np.asarray(sol.event_times["aligned"])
    assert 0 < t_loss < T1 and np.sum(np.isfinite(t_aligned)) >= 2
    assert sol.status_name == "successful"  # non-terminal events do not stop it
    # Re-solve and save exactly at the located times: the conditions hold there.
    found = np.sort(np.concatenate([[t_loss], t_aligned[np.isfinite(t_aligned)]]))
    check = jf.solve(FLOW, net, t1=T1, ts=found, rtol=1e-10)
    loss_at = np.asarray(check.metrics["loss"])[np.searchsorted(found, t_loss)]
    assert abs(loss_at / 0.05 - 1) < 1e-7
    for j in np.flatnonzero(np.isfinite(t_aligned)):
        k = np.searchsorted(found, t_aligned[j])
        assert abs(float(check.metrics["cos_plus"][k, j]) - 0.9) < 1e-7

    # A terminal event: steady state of the square loss from a larger init.
    flow = jf.GradientFlow(jf.losses.square, DATA)
    net = jf.models.TwoLayerReLU(D, WIDTH, scale=0.3, key=KEYS[0])
    steady = {"steady": jf.events.SteadyState(1e-2)}
    sol = jf.solve(flow, net, t1=T1, ts=TS, rtol=1e-10, events=steady)
    t_steady = float(sol.event_times["steady"])
    assert sol.status_name == "event_occurred" and bool(sol.succeeded)
    assert float(sol.t_final) == t_steady < T1
    later = np.asarray(sol.ts) > t_steady
    assert later.any() and np.all(np.isnan(sol.metrics["loss"][later]))
    assert np.all(np.isfinite(sol.metrics["loss"][~later]))
    g0 = float(jf.metrics.grad_norm(net, flow))
    at = jf.solve(flow, net, t1=t_steady, ts=jnp.array([t_steady]), rtol=1e-10)
    assert abs(float(at.metrics["grad_norm"][0]) / (1e-2 * g0) - 1) < 1e-6
    # The same level given as an absolute floor, under a relative level far below it.
    floor = {"steady": jf.events.SteadyState(1e-12, atol=1e-2 * g0)}
    sol = jf.solve(flow, net, t1=T1, ts=TS, rtol=1e-10, events=floor)
    assert abs(float(sol.event_times["steady"]) / t_steady - 1) < 1e-8


def _cos_own(model, flow):
    return jf.metrics.cos_own(model, flow)


def _in_cones(model, flow):
    return jf.events.in_cones(model, flow)


def _all_in_own(model, flow):
    return jnp.all(jf.events.in_own_cones(model, flow))


def _norm_W(model, flow):
    del flow
    return jnp.sqrt(jnp.sum(model.W**2))


def _first(grid, hit):
    """First grid time where `hit` (times along axis 0), nan where never."""
    hit = np.asarray(hit)
    first = np.argmax(hit, axis=0)
    return np.where(hit.any(axis=0), grid[first], np.nan), first


@pytest.mark.parametrize("kinks", ["plain", "min-norm"])
def test_event_times_match_fine_grid(kinks):
    dkey, mkey = jax.random.split(jax.random.key(4))
    data = jf.datasets.separable(dkey, 12, 4, 0.2)
    flow = jf.GradientFlow(jf.losses.exponential, data)
    net = jf.models.TwoLayerReLU(4, 6, scale=1e-3, key=mkey)
    t1, delta = 30.0, 1e-2
    grid = jnp.linspace(0.0, t1, 6001)
    metrics = {
        "loss": jf.metrics.loss,
        "cos_own": _cos_own,
        "in_cones": _in_cones,
        "all_in_own": _all_in_own,
        "norm": _norm_W,
    }
    sol = jf.solve(
        flow,
        net,
        t1=t1,
        ts=grid,
        rtol=1e-10,
        metrics=metrics,
        events=jf.experiments.alignment_events(delta),
        kinks=kinks,
    )
    assert sol.status_name == "successful"
    g, m = np.asarray(grid), {k: np.asarray(v) for k, v in sol.metrics.items()}
    h = g[1] - g[0]
    brute = {
        "aligned": _first(g, m["cos_own"] >= 1 - delta),
        "in_cone": _first(g, m["in_cones"]),
        "t1": _first(g, m["all_in_own"]),
        "t2": _first(g, m["loss"] <= 0.5 * m["loss"][0]),
        "norm_growth": _first(g, m["norm"] >= 2.0 * m["norm"][0]),
    }
    for name, (at, _) in brute.items():
        located = np.asarray(sol.event_times[name])
        assert np.array_equal(np.isnan(located), np.isnan(at)), name
        # The grid's first hit is at or after the event, by less than one spacing.
        ok = ~np.isnan(at)
        assert np.all(located[ok] <= at[ok] + 1e-9), (name, located, at)
        assert np.all(located[ok] > at[ok] - h - 1e-9), (name, located, at)
    # Something happened: the test would be empty otherwise.
    assert np.isfinite(np.asarray(sol.event_times["t1"]))
    assert np.isfinite(np.asarray(sol.event_times["t2"]))
    assert np.sum(np.isfinite(np.asarray(sol.event_times["aligned"]))) >= 3


def test_in_cone_component_equals_full_value():
    dkey, mkey = jax.random.split(jax.random.key(6))
    data = jf.datasets.separable(dkey, 15, 3, 0.2)
    flow = jf.GradientFlow(jf.losses.exponential, data)
    net = jf.models.TwoLayerReLU(3, 40, scale=1.0, key=mkey)
    event = jf.events.InCone()
    full = np.asarray(jf.events._events.as_value(event(0.0, net, flow, None)))
    parts = [float(event.component(0.0, net, flow, None, k)) for k in range(40)]
    np.testing.assert_array_equal(full, parts)
    assert set(full) == {-1.0, 1.0}  # both cases present at this size
