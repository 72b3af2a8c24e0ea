"""Run directories: one run each, locked while it runs, unreadable files named, and an
unfinished run described."""

import json
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

import jaxflow as jf
from jaxflow._cli import main
from jaxflow._rundir import fingerprint

from helpers import FLOW, KEYS, T1, TS, WIDTH, D, init


# The time t = 5, and as changed to t = 10: the same value (1) at t0 = 0, the same
# qualified name.
AT_5 = {"at": jf.events.Event(lambda t, model, flow: 1.0 - t / 5.0)}
AT_10 = {"at": jf.events.Event(lambda t, model, flow: 1.0 - t / 10.0)}
KW = dict(t1=T1, ts=TS, rtol=1e-6, kinks="plain", batch_size=2, segments=2)


def solve(path, **kwargs):
    kwargs = KW | {"events": AT_5} | kwargs
    return jf.solve_ensemble(FLOW, init, KEYS[:2], checkpoint_dir=path, **kwargs)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished run directory, and the ensemble it returned."""
    path = tmp_path_factory.mktemp("finished") / "run"
    return path, solve(path)


def copy(finished, tmp_path) -> Path:
    path = tmp_path / "run"
    shutil.copytree(finished[0], path)
    return path


class Killed(Exception):
    pass


def kill_after_first_segment(segment, stop):
    raise Killed


def test_a_changed_function_is_a_different_run(finished, tmp_path):
    path = copy(finished, tmp_path)
    assert np.allclose(finished[1].event_times["at"], 5.0, rtol=1e-6)
    # Rerun into the finished directory with the lambda changed: refused, by its
    # checkpoint or (that deleted) by its results.
    with pytest.raises(ValueError, match="holds a checkpoint of a different run"):
        solve(path, events=AT_10)
    (path / "checkpoint.npz").unlink()
    with pytest.raises(
        ValueError,
        match=rf"(?s){re.escape(str(path))}.* holds the results of a different run.*delete",
    ):
        solve(path, events=AT_10)
    # The same call is still welcome: it returns the same results.
    again = solve(path)
    assert np.array_equal(again.event_times["at"], finished[1].event_times["at"])
    assert np.array_equal(again.final.W, finished[1].final.W)

    # Functions are fingerprinted by what they compute: code, defaults, closure.
    def crossing(level):
        return lambda t, model, flow: 1.0 - t / level

    assert fingerprint(crossing(5.0)) == fingerprint(crossing(5.0))
    assert fingerprint(crossing(5.0)) != fingerprint(crossing(10.0))
    assert fingerprint(lambda t, level=5.0: t) != fingerprint(lambda t, level=6.0: t)


def test_a_second_process_is_locked_out_a_dead_ones_lock_taken_over(
    finished, tmp_path, monkeypatch
):
    path = copy(finished, tmp_path)
    host = socket.gethostname()
    holder = subprocess.Popen(["sleep", "60"])
    try:
        (path / "lock").write_text(json.dumps({"host": host, "pid": holder.pid}))
        message = (
            rf"{re.escape(str(path))}.* in use by process {holder.pid} on host "
            rf"'{re.escape(host)}'"
        )
        with pytest.raises(ValueError, match=message):
            solve(path)
        assert (path / "lock").is_file()
    finally:
        holder.kill()
        holder.wait()
    with pytest.warns(UserWarning, match=f"process {holder.pid} .*no longer running"):
        solve(path)
    assert not (path / "lock").exists()
    # On another host the process cannot be looked up: its lock is alive while it is
    # refreshed, and stale once it has not been for 5 minutes.
    (path / "lock").write_text(json.dumps({"host": "node17", "pid": 4242}))
    with pytest.raises(ValueError, match="in use by process 4242 on host 'node17'"):
        solve(path)
    old = time.time() - 301
    os.utime(path / "lock", (old, old))
    with pytest.warns(UserWarning, match="4242 on host 'node17', has not refreshed"):
        solve(path)
    assert not (path / "lock").exists()
    # Released when the run raises too; each process writes its own temporary files.
    replaced = []
    monkeypatch.setattr(
        os, "replace", lambda a, b, real=os.replace: replaced.append(a) or real(a, b)
    )
    fresh = tmp_path / "fresh"
    with pytest.raises(Killed):
        solve(fresh, callback=kill_after_first_segment)
    assert not (fresh / "lock").exists()
    ours = [Path(a).name for a in replaced if Path(a).parent == fresh]
    assert ours and all(f".{os.getpid()}.tmp" in name for name in ours), ours
    assert not list(fresh.glob("*.tmp"))


def test_the_holder_refreshes_its_lock_and_stops_if_it_loses_it(tmp_path, monkeypatch):
    monkeypatch.setattr(jf._rundir, "_BEAT", 0.01)
    path = tmp_path / "run"
    ages = []

    def look(segment, stop):
        lock = path / "lock"
        if segment == 0:  # made to look old: the heartbeat makes it new again
            os.utime(lock, (time.time() - 1000, time.time() - 1000))
            time.sleep(0.3)
        ages.append(time.time() - lock.stat().st_mtime)

    solve(path, callback=look)
    assert ages[0] < 100, ages

    # Another process took the lock over (it thought this one gone): this one stops
    # at its next write instead of writing into a run that is no longer its own.
    def take_over(segment, stop):
        (path / "lock").write_text(json.dumps({"host": "node17", "pid": 4242}))

    path = tmp_path / "lost"
    with pytest.raises(RuntimeError, match="taken over by process 4242 on 'node17'"):
        solve(path, callback=take_over)
    assert (path / "lock").is_file()  # theirs, left alone


@pytest.mark.parametrize("damage", ["truncated", "flipped byte"])
def test_an_unreadable_checkpoint_is_named(finished, tmp_path, damage):
    path = copy(finished, tmp_path)
    file = path / "checkpoint.npz"
    data = bytearray(file.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2] ^= 0xFF
    file.write_bytes(bytes(data))
    with pytest.raises(
        ValueError,
        match=rf"(?s)checkpoint '{re.escape(str(file))}'.* truncated or corrupted\. "
        "Delete it to start the run from scratch",
    ):
        solve(path)


def test_an_unreadable_ensemble_nc_or_a_wrong_like_is_named(finished, tmp_path):
    path = copy(finished, tmp_path)
    back = jf.load_ensemble(path, like=init(KEYS[0]))
    assert np.array_equal(back.final.W, finished[1].final.W)
    biased = jf.models.TwoLayerReLU(D, WIDTH, bias=True, key=KEYS[0])
    with pytest.raises(
        ValueError,
        match=r"(?s)`like` does not match .* has the arrays \{'W': \(6, 4\), 'v': \(6,\), "
        r"'b': \(6,\)\}, the run holds \{'W': \(6, 4\), 'v': \(6,\)\}",
    ):
        jf.load_ensemble(path, like=biased)
    file = path / "ensemble.nc"
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    message = (
        rf"(?s)results '{re.escape(str(file))}'.* truncated or corrupted\. Delete it"
    )
    with pytest.raises(ValueError, match=message):
        jf.load_ensemble(path)
    with pytest.raises(ValueError, match=message):
        solve(path)


def test_show_describes_an_unfinished_run(tmp_path, capsys):
    path = tmp_path / "run"
    with pytest.raises(Killed):
        solve(path, callback=kill_after_first_segment)
    capsys.readouterr()
    assert main(["show", str(path)]) == 0
    text = capsys.readouterr().out
    assert f"model         TwoLayerReLU(.W: ({WIDTH}, {D})" in text, text
    assert f"seeds         2, t1={T1}, rtol=1e-06, kinks=plain" in text, text
    assert "unfinished    1 of 2 segments done; run the same call" in text, text
    started = json.loads((path / "config.json").read_text())
    assert started["finished"] is None and len(started["keys"]) == 2
    # Resumed and finished, the configuration is completed.
    solve(path)
    done = json.loads((path / "config.json").read_text())
    assert done["started"] == started["started"] and done["finished"] is not None
    assert main(["show", str(path)]) == 0
    assert "status" in capsys.readouterr().out
