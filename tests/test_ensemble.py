import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxflow as jf
import jaxflow._ensemble
from jaxflow._cli import main
from jaxflow._roots import chunk, when

from helpers import EVENTS, FLOW, KEYS, T1, TS, WIDTH, D, init, relative_error


def solve_ensemble(**kwargs):
    kwargs = {"t1": T1, "ts": TS, "rtol": 1e-10, "events": EVENTS} | kwargs
    return jf.solve_ensemble(FLOW, init, KEYS, **kwargs)


@pytest.mark.slow  # (54 s; the README command stays under 10 minutes; CI runs it)
def test_chunks_and_segments_match_single_solves():
    ens = solve_ensemble(batch_size=2, segments=6)
    assert ens.metrics["loss"].shape == (5, 12)
    assert ens.metrics["cos_plus"].shape == (5, 12, WIDTH)
    assert ens.event_times["aligned"].shape == (5, WIDTH)
    assert ens.final.W.shape == (5, WIDTH, D)
    assert list(ens.status_name) == ["successful"] * 5
    # Segments do not change the trajectory: the same steps as one segment, bitwise.
    whole = solve_ensemble(batch_size=2, segments=1)
    for name in ("loss", "cos_plus", "grad_norm"):
        assert np.array_equal(ens.metrics[name], whole.metrics[name]), name
    assert np.array_equal(ens.final.W, whole.final.W)
    assert np.array_equal(ens.stats["num_steps"], whole.stats["num_steps"])
    assert np.array_equal(ens.event_times["loss"], whole.event_times["loss"])
    # Each seed has the bits of jf.solve on it alone.
    for i in (0, 3):
        sol = jf.solve(FLOW, init(KEYS[i]), t1=T1, ts=TS, rtol=1e-10, events=EVENTS)
        assert_same_bits(ens, i, sol)
    # Seeds differ.
    assert not np.allclose(ens.metrics["loss"][0], ens.metrics["loss"][1])


def assert_same_bits(ens, i, sol):
    """Seed `i` of `ens` is bitwise `sol`: parameters, metrics, events, steps."""
    for a, b in zip(jax.tree.leaves(ens.final), jax.tree.leaves(sol.final)):
        assert np.array_equal(np.asarray(a)[i], np.asarray(b)), "final"
    assert set(ens.metrics) == set(sol.metrics)
    for name, value in sol.metrics.items():
        assert np.array_equal(ens.metrics[name][i], value, equal_nan=True), name
    for name, value in sol.event_times.items():
        assert np.array_equal(ens.event_times[name][i], value, equal_nan=True), name
    for name, value in sol.stats.items():
        assert int(ens.stats[name][i]) == int(value), name
    assert float(ens.t_final[i]) == float(sol.t_final)
    assert ens.status_name[i] == sol.status_name


@pytest.mark.slow  # (`pytest -m slow`; CI runs it)
@pytest.mark.parametrize("kinks", ["plain", "min-norm"])
def test_a_seed_gets_the_bits_of_its_solve_alone(kinks):
    # Whatever its batch-mates, the batch size or the order of the seeds.
    keys = jax.random.split(jax.random.key(4), 16)
    kw = dict(t1=T1, ts=TS, rtol=1e-8, events=EVENTS, kinks=kinks)
    alone = [jf.solve(FLOW, init(k), save_models=False, **kw) for k in keys]
    order = np.random.default_rng(0).permutation(16)
    for batch_size, perm in [(1, order), (2, order), (4, np.arange(16)), (16, order)]:
        ens = jf.solve_ensemble(FLOW, init, keys[perm], batch_size=batch_size, **kw)
        for i, seed in enumerate(perm):
            assert_same_bits(ens, i, alone[seed])
    # Vectorized (vmapped): not bitwise (a batch's kernels round otherwise), but as
    # close to each seed's solve alone as that solve is to the flow (an rtol 1e-12
    # reference; plain chatters through kinks, so its error is the larger).
    ens = jf.solve_ensemble(FLOW, init, keys, batch_size=16, vectorize=True, **kw)
    for i in (0, 5, 11):
        tight = jf.solve(FLOW, init(keys[i]), **(kw | dict(rtol=1e-12)))
        error = relative_error(alone[i].final, tight.final)
        mine = jax.tree.map(lambda x: x[i], ens.final)
        assert relative_error(mine, alone[i].final) < 10 * error + 1e-12, i
        assert ens.status_name[i] == alone[i].status_name


@pytest.mark.slow  # (42 s; the README command stays under 10 minutes; CI runs it)
def test_metrics_deferred_after_the_loop_equal_metrics_in_the_loop(monkeypatch):
    # Small chunks store the parameters at `ts` and evaluate the metrics after the
    # time loop; large ones evaluate them inside it. Same trajectory, same metrics,
    # including nan after a terminal event.
    events = EVENTS | {"low": jf.events.LossBelow(0.02)}
    kw = dict(t1=T1, ts=TS, rtol=1e-10, events=events, batch_size=4, segments=2)
    deferred = jf.solve_ensemble(FLOW, init, KEYS[:3], **kw)
    monkeypatch.setattr(jaxflow._ensemble, "_DEFER_BYTES", 0)
    in_loop = jf.solve_ensemble(FLOW, init, KEYS[:3], **kw)
    assert list(deferred.status_name) == list(in_loop.status_name)
    assert "event_occurred" in list(deferred.status_name)
    assert np.isnan(deferred.metrics["loss"]).any()
    assert set(deferred.metrics) == set(in_loop.metrics)
    for name, value in deferred.metrics.items():
        assert np.allclose(value, in_loop.metrics[name], rtol=1e-12, equal_nan=True)
    assert np.array_equal(deferred.final.W, in_loop.final.W)


@pytest.mark.slow  # (`pytest -m slow`; CI runs it)
def test_terminal_seeds_leave_failures_are_kept_per_seed_data(tmp_path):
    # Data resampled per seed; one seed's init is nan.
    def flow(key):
        return jf.GradientFlow(
            jf.losses.exponential, jf.datasets.separable(key, 16, D, 0.3)
        )

    def bad_init(key):
        net = init(key)
        poison = jnp.where(jax.random.key_data(key)[0] == key_zero, jnp.nan, 1.0)
        return jax.tree.map(lambda x: x * poison, net)

    keys = jax.random.split(jax.random.key(5), 4)
    model_keys = jax.vmap(jax.random.split, out_axes=1)(keys)[1]
    key_zero = jax.random.key_data(model_keys[2])[0]
    events = {"low": jf.events.LossBelow(0.05)}
    ens = jf.solve_ensemble(
        flow,
        bad_init,
        keys,
        t1=T1,
        ts=TS,
        rtol=1e-10,
        events=events,
        batch_size=4,
        segments=4,
        checkpoint_dir=tmp_path / "run",
    )
    names = list(ens.status_name)
    assert names[2] in ("nonfinite", "nonfinite_gradient", "max_steps_reached")
    assert [n for i, n in enumerate(names) if i != 2] == ["event_occurred"] * 3
    assert ens.messages[2].startswith(names[2] + ": ")
    # The others are unaffected: seed 0 equals its own solve on its own data.
    data_key, model_key = jax.random.split(keys[0])
    sol = jf.solve(
        flow(data_key), init(model_key), t1=T1, ts=TS, rtol=1e-10, events=events
    )
    assert abs(float(ens.t_final[0]) / float(sol.t_final) - 1) < 1e-8
    assert float(ens.t_final[0]) < T1
    # ... and saved: the run directory reads back the same, the failure included.
    back = jf.load_ensemble(tmp_path / "run", like=init(KEYS[0]))
    assert list(back.status_name) == names
    assert np.array_equal(back.final.W, ens.final.W, equal_nan=True)
    assert np.array_equal(back.metrics["loss"], ens.metrics["loss"], equal_nan=True)
    # Every metric and statistic, those that share a name (num_crossings) included.
    assert "num_crossings" in ens.metrics and "num_crossings" in ens.stats
    assert back.metrics.keys() == ens.metrics.keys()
    assert back.stats.keys() == ens.stats.keys()
    for name, x in ens.metrics.items():
        assert np.array_equal(back.metrics[name], x, equal_nan=True), name
    for name, x in ens.stats.items():
        assert np.array_equal(back.stats[name], x), name
    table = ens.summary()
    assert list(table["status"]) == names and "t_low" in table
    xr = ens.to_xarray()
    assert xr["cos_plus"].dims == ("seed", "time", "neuron")


KILLED_RUN = """
import os, signal, sys
import jax, jax.numpy as jnp, numpy as np
import jaxflow as jf

data = jf.datasets.separable(jax.random.key(0), 16, 4, 0.3)
flow = jf.GradientFlow(jf.losses.exponential, data)
keys = jax.random.split(jax.random.key(1), 6)


def init(key):
    return jf.models.TwoLayerReLU(4, 6, scale=1e-3, key=key)


def callback(segment, stop):
    if segment == int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)  # as if the machine went down


ens = jf.solve_ensemble(
    flow, init, keys, t1=40.0, rtol=1e-10, batch_size=4, segments=6,
    events={"steady": jf.events.SteadyState(0.05)},
    checkpoint_dir=sys.argv[1], callback=callback,
)
np.savez(sys.argv[1] + "/out.npz", loss=ens.metrics["loss"], W=ens.final.W,
         t=ens.t_final, steps=ens.stats["num_steps"])
"""


@pytest.mark.slow  # (67 s; the README command stays under 10 minutes; CI runs it)
def test_checkpoint_resumes_a_killed_run_bitwise(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(KILLED_RUN)

    def run(directory, kill_at):
        return subprocess.run(
            [sys.executable, str(script), str(directory), str(kill_at)],
            capture_output=True,
            text=True,
            timeout=600,
        )

    killed = run(tmp_path / "a", 2)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (tmp_path / "a" / "checkpoint.npz").is_file()
    assert not (tmp_path / "a" / "ensemble.nc").exists()
    assert "3 of 6 segments done, lock left by process" in jf._rundir.show(
        tmp_path / "a"
    )
    resumed = run(tmp_path / "a", -1)
    assert resumed.returncode == 0, resumed.stderr
    straight = run(tmp_path / "b", -1)
    assert straight.returncode == 0, straight.stderr
    a, b = np.load(tmp_path / "a" / "out.npz"), np.load(tmp_path / "b" / "out.npz")
    for name in ("loss", "W", "t", "steps"):
        assert np.array_equal(a[name], b[name], equal_nan=True), name
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["seeds"] == 6 and "jax" in config["versions"]
    assert len(config["keys"]) == 6


SHARDED_RUN = """
import jax, jax.numpy as jnp, numpy as np
import jaxflow as jf

assert len(jax.devices()) == 4, jax.devices()
data = jf.datasets.separable(jax.random.key(0), 16, 4, 0.3)
flow = jf.GradientFlow(jf.losses.exponential, data)
keys = jax.random.split(jax.random.key(1), 6)
init = lambda key: jf.models.TwoLayerReLU(4, 6, scale=1e-3, key=key)
ts = jnp.linspace(0.0, 20.0, 5)
kw = dict(t1=20.0, ts=ts, rtol=1e-10, segments=3)
same = []
for kinks in ("min-norm", "plain"):
    four = jf.solve_ensemble(flow, init, keys, batch_size=8, kinks=kinks, **kw)
    for i, key in enumerate(keys):
        sol = jf.solve(flow, init(key), t1=20.0, ts=ts, rtol=1e-10, kinks=kinks)
        same.append(
            np.array_equal(four.final.W[i], sol.final.W)
            and np.array_equal(four.final.v[i], sol.final.v)
            and np.array_equal(four.metrics["loss"][i], sol.metrics["loss"])
            and int(four.stats["num_steps"][i]) == int(sol.stats["num_steps"])
        )
print(f"RESULT {all(same)} {list(four.status_name)}")
"""


@pytest.mark.slow  # (the README command stays under 10 minutes; CI runs it)
def test_seeds_sharded_over_four_cpu_devices_get_the_bits_of_their_solves():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    out = subprocess.run(
        [sys.executable, "-c", SHARDED_RUN],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT"))
    _, same, names = line.split(maxsplit=2)
    # Each seed, on whichever of the four devices, has the bits of jf.solve alone.
    assert same == "True", line
    assert "'successful'" in names and "max_steps" not in names


def test_host_devices_on_request():
    """JAXFLOW_HOST_DEVICES gives JAX that many CPU devices ('auto': one per core), so
    ensembles split over the cores; unset, JAX's default; a count set in XLA_FLAGS
    wins; once JAX has started, nothing changes."""
    cores = len(os.sched_getaffinity(0))
    count = "import jaxflow, jax; print('COUNT', len(jax.devices('cpu')))"
    xla = "--xla_force_host_platform_device_count=5"
    cases = [
        ({}, 1),
        ({"JAXFLOW_HOST_DEVICES": "auto"}, cores),
        ({"JAXFLOW_HOST_DEVICES": "3"}, 3),
        ({"JAXFLOW_HOST_DEVICES": "3", "XLA_FLAGS": xla}, 5),
    ]
    base = {k: v for k, v in os.environ.items()
            if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES", "JAXFLOW_HOST_DEVICES")}  # fmt: skip
    for extra, expected in cases:
        out = subprocess.run([sys.executable, "-c", count], capture_output=True,
                             text=True, timeout=120, env={**base, **extra})  # fmt: skip
        assert f"COUNT {expected}\n" in out.stdout, (extra, out.stdout, out.stderr)
    late = "import jax; jax.devices(); " + count
    out = subprocess.run([sys.executable, "-c", late], capture_output=True, text=True,
                         timeout=120, env={**base, "JAXFLOW_HOST_DEVICES": "3"})  # fmt: skip
    assert "COUNT 1\n" in out.stdout, out.stderr
    bad = subprocess.run([sys.executable, "-c", count], capture_output=True, text=True,
                         timeout=120, env={**base, "JAXFLOW_HOST_DEVICES": "all"})  # fmt: skip
    assert "JAXFLOW_HOST_DEVICES must be 'auto'" in bad.stderr
    assert "got 'all'" in bad.stderr


def test_cli_ensemble_writes_a_run_directory_and_show_reads_it(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        "ensemble --seeds 3 --n 16 --d 4 --width 6 --scale 1e-3 --t1 40 --rtol 1e-10 "
        f"--times 12 --segments 3 --loss-below 0.05 --quiet --out {out}".split()
    )
    assert code == 0
    for name in ("ensemble.nc", "seeds.csv", "config.json", "checkpoint.npz"):
        assert (out / name).is_file(), name
    capsys.readouterr()
    assert main(["show", str(out)]) == 0
    text = capsys.readouterr().out
    assert "event_occurred 3" in text and "t_loss_below" in text
    ens = jf.load_ensemble(out)
    assert ens.metrics["loss"].shape == (3, 12)
    assert np.all(np.asarray(ens.event_times["loss_below"]) < 40.0)


def test_segments_as_a_jax_array():
    """Stop times given as a (read-only) JAX array, the last one a rounding off t1
    (`jnp.geomspace`): taken as given, ending exactly at t1."""
    from jaxflow._ensemble import _segments

    t1 = 1000.0
    given = jnp.geomspace(1.0, t1, 4) * (1 + 1e-15)
    stops = _segments(given, 0.0, t1, np.float64)
    assert stops[-1] == t1
    np.testing.assert_allclose(stops, [1.0, 10.0, 100.0, t1], rtol=1e-12)


def test_bad_arguments_name_the_value(tmp_path):
    with pytest.raises(ValueError, match="batch_size.*got 0"):
        solve_ensemble(batch_size=0)
    with pytest.raises(ValueError, match="keys.*one key per seed"):
        jf.solve_ensemble(FLOW, init, jnp.zeros(3), t1=1.0)
    with pytest.raises(ValueError, match="segments.*increasing"):
        solve_ensemble(segments=[10.0, 5.0, T1])
    with pytest.raises(ValueError, match="flow.*GradientFlow"):
        jf.solve_ensemble(3, init, KEYS, t1=1.0)
    with pytest.raises(ValueError, match="events.*AbstractEvent"):
        solve_ensemble(events={"x": lambda t, m, f: 1.0})
    with pytest.raises(ValueError, match="SteadyState.*rtol.*got 2"):
        jf.events.SteadyState(2)
    with pytest.raises(ValueError, match="SteadyState.*atol.*got -1"):
        jf.events.SteadyState(1e-6, atol=-1.0)
    with pytest.raises(ValueError, match="SteadyState.*both 0"):
        jf.events.SteadyState(0.0)
    kw = dict(t1=1.0, ts=jnp.array([0.5, 1.0]), segments=1, checkpoint_dir=tmp_path)
    jf.solve_ensemble(FLOW, init, KEYS[:2], **kw)
    with pytest.raises(ValueError, match="checkpoint of a different run"):
        jf.solve_ensemble(FLOW, init, KEYS[2:4], **kw)
    with pytest.raises(FileNotFoundError, match="no ensemble.nc"):
        jf.load_ensemble(Path(tmp_path) / "nothing")


FINGERPRINT = """
import sys
ballast = [object() for _ in range(int(sys.argv[1]))]  # moves the heap
import jaxflow as jf
from jaxflow._rundir import fingerprint
metrics = {"loss": jf.metrics.loss, "events": jf.experiments.alignment_events()}
print(fingerprint(metrics, jf.experiments.alignment_metrics))
"""


def test_fingerprint_is_the_same_in_every_process():
    # A run directory is resumed only if the fingerprint matches; metrics given as
    # functions used to enter it by repr, which holds a fresh address per process.
    prints = [
        subprocess.run(
            [sys.executable, "-c", FINGERPRINT, str(n)],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        ).stdout  # fmt: skip
        for n in (0, 200_000)
    ]
    assert prints[0] == prints[1] and len(prints[0].strip()) == 64


def test_a_branch_runs_only_for_the_seeds_that_take_it():
    # `when` under vmap: each element gets its own branch's value (and derivative),
    # and the branch runs on a chunk of the batch gathered from the elements that
    # take it, not on the whole batch.
    def f(x, take):
        return when(take, lambda: (jnp.sin(x) * 2, x + 1), (x, x))

    x = jnp.linspace(0.0, 3.0, 16)
    take = jnp.arange(16) % 5 == 0
    batched = jax.vmap(f)(x, take)
    for i in range(16):
        alone = f(x[i], take[i])
        assert float(batched[0][i]) == float(alone[0])
        assert float(batched[1][i]) == float(alone[1])
    slopes = jax.vmap(jax.jacfwd(lambda x, take: f(x, take)[0]))(x, take)
    assert np.allclose(slopes, np.where(take, 2 * np.cos(x), 1.0), rtol=1e-14)
    _, tangents = jax.jvp(lambda x: jax.vmap(f)(x, take)[0], (x,), (jnp.ones(16),))
    assert np.allclose(tangents, slopes, rtol=1e-14)
    # The sine (the branch) is evaluated on chunks of two, never on all 16.
    text = str(jax.make_jaxpr(jax.vmap(f))(x, take))
    sines = [line for line in text.splitlines() if " sin " in line]
    assert sines and all(f"[{chunk(16)}]" in line for line in sines), sines
