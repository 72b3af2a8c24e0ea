"""Beyond one process: a run split into parts (a job array), and a run over several
processes on JAX's distributed runtime; each joined equals the one-process run bit for
bit."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import equinox as eqx
import jax
import numpy as np
import pytest

import jaxflow as jf

from helpers import FLOW, T1, TS, WIDTH, D, init


KEYS = jax.random.split(jax.random.key(1), 7)
KW = dict(t1=T1, ts=TS, rtol=1e-6, kinks="plain", batch_size=2, segments=3)
# The command of the job array and the distributed run: 16 seeds, 8 log-spaced
# segments, checkpointed after each.
COMMAND = (
    "ensemble --seeds 16 --n 64 --width 20 --t1 100 --segments 8 --batch-size 8 --quiet"
).split()


def same(a: jf.Ensemble, b: jf.Ensemble) -> bool:
    """Every array of the two ensembles equal, bit for bit (nan where nan)."""
    pairs = zip(
        jax.tree.leaves(eqx.filter(a, eqx.is_array)),
        jax.tree.leaves(eqx.filter(b, eqx.is_array)),
        strict=True,
    )
    return all(np.array_equal(x, y, equal_nan=True) for x, y in pairs)


def test_parts_in_any_order_join_into_the_whole_run_others_refused_by_name(tmp_path):
    whole = jf.solve_ensemble(FLOW, init, KEYS, **KW)
    path = tmp_path / "run"
    for i in (3, 0, 2):
        part = jf.solve_ensemble(
            FLOW, init, KEYS, checkpoint_dir=path, part=(i, 4), **KW
        )
        # The I-th of 4 contiguous slices of the 7 seeds: 2, 2, 2, 1.
        assert list(part.seeds) == [[0, 1], [2, 3], [4, 5], [6]][i]
    with pytest.raises(FileNotFoundError, match=r"part 1/4: not started.*partial=True"):
        jf.load_ensemble(path)
    assert list(jf.load_ensemble(path, partial=True).seeds) == [0, 1, 2, 3, 4, 5, 6][
        :2
    ] + [4, 5, 6]
    assert "3 of 4 finished: 0, 2, 3" in jf._rundir.show(path)
    # A part whose settings differ is refused, naming the setting and both values.
    for changed, named in (
        (dict(rtol=1e-7), "rtol: 1e-06 in the run, 1e-07 here"),
        (dict(segments=4), "segments: "),
        (dict(t1=2 * T1, ts=2 * TS), "t1: 40.0 in the run, 80.0 here"),
    ):
        with pytest.raises(ValueError, match=rf"part 1/4 differs .*{re.escape(named)}"):
            jf.solve_ensemble(
                FLOW, init, KEYS, checkpoint_dir=path, part=(1, 4), **KW | changed
            )
    other = lambda k: jf.models.TwoLayerReLU(D, WIDTH, scale=2e-3, key=k)  # noqa: E731
    with pytest.raises(ValueError, match="part 1/4 differs .*initial models, data"):
        jf.solve_ensemble(FLOW, other, KEYS, checkpoint_dir=path, part=(1, 4), **KW)
    with pytest.raises(ValueError, match=r"part 1/3 differs .*parts: 4 in the run, 3"):
        jf.solve_ensemble(FLOW, init, KEYS, checkpoint_dir=path, part=(1, 3), **KW)
    # The same value in another type may compute otherwise (a NumPy scalar is not
    # weakly typed): refused too, and the message says that it may be a type.
    with pytest.raises(ValueError, match="part 1/4 differs .*the arguments' types"):
        jf.solve_ensemble(
            FLOW,
            init,
            KEYS,
            checkpoint_dir=path,
            part=(1, 4),
            **KW | dict(rtol=np.float64(1e-6)),
        )
    # A call without `part` solves the split the directory holds (here the missing
    # part 1), and returns the parts joined: the one-process run, bit for bit.
    assert same(jf.solve_ensemble(FLOW, init, KEYS, checkpoint_dir=path, **KW), whole)
    assert same(jf.load_ensemble(path, like=init(KEYS[0])), whole)
    assert "4 of 4 finished" in jf._rundir.show(path)
    for bad in ((4, 4), (1,), (-1, 2), "1/4", (True, 2)):
        with pytest.raises(
            ValueError, match=r"`part` must be \(I, N\) with 0 <= I < N"
        ):
            jf.solve_ensemble(FLOW, init, KEYS, part=bad, **KW)
    with pytest.raises(ValueError, match=r"`part` \(0, 8\) splits 7 seeds into 8"):
        jf.solve_ensemble(FLOW, init, KEYS, part=(0, 8), **KW)
    # Nor does a part join a run that is not split into parts.
    jf.solve_ensemble(FLOW, init, KEYS[:2], checkpoint_dir=tmp_path / "whole", **KW)
    with pytest.raises(ValueError, match=r"holds a run not split into parts \(its "):
        jf.solve_ensemble(
            FLOW, init, KEYS[:2], checkpoint_dir=tmp_path / "whole", part=(0, 2), **KW
        )


@pytest.mark.slow
def test_worker_processes_equal_one_process_checkpoint_as_parts(tmp_path, monkeypatch):
    whole = jf.solve_ensemble(FLOW, init, KEYS, processes=1, **KW)
    # One process per core (the suite sets JAXFLOW_PROCESSES=1), and two on any machine.
    monkeypatch.setenv("JAXFLOW_PROCESSES", "auto")
    assert same(jf.solve_ensemble(FLOW, init, KEYS, **KW), whole)
    path = tmp_path / "run"
    pooled = jf.solve_ensemble(FLOW, init, KEYS, processes=2, checkpoint_dir=path, **KW)
    assert same(pooled, whole) and list(pooled.seeds) == list(range(7))
    # The directory holds the run in two parts; it keeps that split when solved again
    # in one process, and load_ensemble joins the parts.
    assert sorted(p.name for p in (path / "parts").iterdir()) == ["0-of-2", "1-of-2"]
    again = jf.solve_ensemble(FLOW, init, KEYS, processes=1, checkpoint_dir=path, **KW)
    assert same(again, whole)
    loaded = jf.load_ensemble(path)
    assert np.array_equal(loaded.metrics["loss"], whole.metrics["loss"], equal_nan=True)
    # A worker's error is raised here: another run's parts are refused by name.
    other = lambda k: jf.models.TwoLayerReLU(D, WIDTH, scale=2e-3, key=k)  # noqa: E731
    with pytest.raises(ValueError, match="differs from the run"):
        jf.solve_ensemble(FLOW, other, KEYS, processes=2, checkpoint_dir=path, **KW)
    # Bad values, and what worker processes cannot be combined with, by name.
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match=rf"`processes` must be .* got {bad!r}"):
            jf.solve_ensemble(FLOW, init, KEYS, processes=bad, **KW)
    with pytest.raises(ValueError, match=r"cannot be combined with `vectorize=True`"):
        jf.solve_ensemble(FLOW, init, KEYS, processes=2, vectorize=True, **KW)
    monkeypatch.setenv("JAXFLOW_PROCESSES", "two")
    with pytest.raises(ValueError, match=r"JAXFLOW_PROCESSES must be .* got 'two'"):
        jf.solve_ensemble(FLOW, init, KEYS, **KW)


def _env() -> dict:
    """A child process's environment: one CPU device, the test run's compiled code."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    return env


def _jaxflow(*args, env=None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "jaxflow._cli", *COMMAND, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env() if env is None else env,
    )


def _finish(process: subprocess.Popen, code: int = 0) -> str:
    out, err = process.communicate(timeout=600)
    assert process.returncode == code, err[-3000:]
    return err


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> jf.Ensemble:
    """The command run in one process."""
    path = tmp_path_factory.mktemp("one") / "run"
    _finish(_jaxflow("--out", path))
    return jf.load_ensemble(path)


def _segments_done(part: Path) -> int:
    try:
        with np.load(part / "checkpoint.npz") as saved:
            return int(saved["segment"])
    except (OSError, ValueError, KeyError, EOFError):
        return 0


def _ompi_job() -> int:
    """An Open MPI job id for which `jax.distributed.initialize()` picks a free port:
    61440 + (job / 4096) % 4096."""
    for k in np.random.default_rng().permutation(4096):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", 61440 + int(k)))
            except OSError:
                continue
        return int(k) * 4096
    raise RuntimeError("no free port in 61440..65535")


@pytest.mark.slow
def test_two_processes_equal_one_and_a_killed_one_resumes(reference, tmp_path):
    def start(path, *extra):
        port = _port()
        return [
            _jaxflow(
                "--out",
                path,
                "--coordinator",
                f"127.0.0.1:{port}",
                "--num-processes",
                2,
                "--process-id",
                i,
                *(extra if i else ()),
            )  # fmt: skip
            for i in (0, 1)
        ]

    # `--distributed` alone: the cluster's environment, here Open MPI's as `mpirun`
    # sets it, says who is who.
    path = tmp_path / "whole"
    job = _ompi_job()
    processes = [
        _jaxflow(
            "--out",
            path,
            "--distributed",
            env=_env()
            | {
                "OMPI_MCA_orte_hnp_uri": f"{job}.0;tcp://127.0.0.1:1",
                "OMPI_COMM_WORLD_SIZE": "2",
                "OMPI_COMM_WORLD_RANK": str(i),
                "OMPI_COMM_WORLD_LOCAL_RANK": str(i),
            },
        )
        for i in (0, 1)
    ]
    for process in processes:
        _finish(process)
    assert same(jf.load_ensemble(path), reference)
    assert sorted(p.name for p in (path / "parts").iterdir()) == ["0-of-2", "1-of-2"]
    # One process refused (other settings): both stop at the start, neither waits.
    errs = [_finish(process, code=2) for process in start(path, "--rtol", "1e-7")]
    assert "part 1/2 differs" in errs[1] and "rtol: 1e-08 in the run, 1e-07" in errs[1]
    assert "process(es) [1] could not start their part" in errs[0]

    # Kill process 1 after its first checkpoint; the job dies with it (process 0 is
    # killed too); the job started again finishes from the checkpoints.
    path = tmp_path / "killed"
    processes = start(path)
    part = path / "parts" / "1-of-2"
    deadline = time.monotonic() + 600
    while _segments_done(part) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    for process in processes[::-1]:
        process.send_signal(signal.SIGKILL)
        process.wait()
    done = _segments_done(part)
    assert 1 <= done < 8 and not (part / "ensemble.nc").exists()
    errs = [_finish(process) for process in start(path)]
    assert re.search(
        r"taking over the lock.*resumes from its checkpoint", errs[1], re.S
    )
    assert same(jf.load_ensemble(path), reference)


@pytest.mark.slow
def test_a_job_array_in_any_order_equals_one_process(reference, tmp_path):
    path = tmp_path / "array"
    for i in (3, 0):
        _finish(_jaxflow("--out", path, "--part", f"{i}/4"))
    # Parts 2 and 1 at once; part 2 a second time while the first holds its lock.
    two = _jaxflow("--out", path, "--part", "2/4")
    while not (path / "parts" / "2-of-4" / "lock").exists() and two.poll() is None:
        time.sleep(0.02)
    again = _jaxflow("--out", path, "--part", "2/4")
    one = _jaxflow("--out", path, "--part", "1/4")
    err = _finish(again, code=2)
    assert re.search(
        rf"error: solve_ensemble: part 2/4 of the run directory .* in use by process "
        rf"{two.pid} on host '{re.escape(socket.gethostname())}'",
        err,
    ), err
    _finish(two)
    _finish(one)
    assert same(jf.load_ensemble(path), reference)
    # Another setting: refused by name, the run untouched.
    err = _finish(_jaxflow("--out", path, "--part", "1/4", "--rtol", "1e-7"), code=2)
    assert "part 1/4 differs" in err and "rtol: 1e-08 in the run, 1e-07 here" in err
    assert same(jf.load_ensemble(path), reference)
    shutil.rmtree(path)
