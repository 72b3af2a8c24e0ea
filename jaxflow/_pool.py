"""Worker processes on this machine, for `solve_ensemble(processes=...)`: each solves
parts of an ensemble, so that the seeds of one call use all the CPU's cores.

Why processes, and not one JAX CPU device per core: with several host devices, JAX
0.10's batched LAPACK kernels deadlock XLA's thread pool (`jaxflow._devices`). A
worker is a fresh Python (`python -m jaxflow._pool`), not a `multiprocessing` child, so
that it never runs the caller's `__main__` (a script without an
`if __name__ == "__main__":` guard would start itself again); tasks are cloudpickled
functions, which carry lambdas and notebook functions by value. It takes the JAX
settings that decide the bits (`_SETTINGS`), one CPU device, and nothing else of the
caller's. Workers live as long as the caller, keeping their compiled programs from
one call to the next; a worker that dies is replaced at the next call.
"""

import atexit
import os
import re
import subprocess
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import Any

import cloudpickle
import jax


# The JAX options under which a worker's results are bitwise the caller's: the
# precision, the random bits, promotion rules and checks, and the compilation cache.
_SETTINGS = (
    "jax_enable_x64",
    "jax_default_matmul_precision",
    "jax_default_prng_impl",
    "jax_threefry_partitionable",
    "jax_numpy_rank_promotion",
    "jax_numpy_dtype_promotion",
    "jax_debug_nans",
    "jax_debug_infs",
    "jax_compilation_cache_dir",
    "jax_persistent_cache_min_compile_time_secs",
)
# Set in a worker's environment: a worker starts no workers of its own.
IN_WORKER = "JAXFLOW_IN_WORKER"


class _Worker:
    """One worker process and the pipe to it."""

    def __init__(self):
        ours, theirs = _pipe()
        env = dict(os.environ, **{IN_WORKER: "1"})
        env.pop("JAXFLOW_HOST_DEVICES", None)  # one device: the worker is one core
        # The caller's jaxflow and imports, whatever the worker's working directory.
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        env["XLA_FLAGS"] = re.sub(
            r"--xla_force_host_platform_device_count=\S*", "", env.get("XLA_FLAGS", "")
        )
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jaxflow._worker", str(theirs.fileno())],
            env=env,
            pass_fds=(theirs.fileno(),),
        )
        theirs.close()
        self.pipe = ours
        settings = {name: jax.config.values[name] for name in _SETTINGS}
        ours.send_bytes(cloudpickle.dumps(settings))

    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        self.pipe.close()  # the worker exits when its pipe closes
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _pipe() -> tuple[Connection, Connection]:
    import socket

    a, b = socket.socketpair()
    return Connection(a.detach()), Connection(b.detach())


_workers: list[_Worker] = []


def _close_all() -> None:
    while _workers:
        _workers.pop().close()


atexit.register(_close_all)


def run(tasks: list[Callable[[], Any]], workers: int, on_done=None) -> list:
    """`[task() for task in tasks]`, the tasks run by `workers` worker processes, each
    taking the next task as it finishes one. `on_done(i, result)` is called in this
    process as task `i` finishes. A task that raises raises here, once every running
    task has finished, with the worker's exception (its traceback in the message)."""
    for dead in [w for w in _workers if not w.alive()]:
        _workers.remove(dead)
    while len(_workers) < workers:
        _workers.append(_Worker())
    blobs = [cloudpickle.dumps(task) for task in tasks]
    results: list = [None] * len(tasks)
    failure = None
    todo = list(range(len(tasks)))[::-1]
    busy: dict[Connection, tuple[_Worker, int]] = {}

    def give(worker: _Worker) -> None:
        if todo:
            i = todo.pop()
            worker.pipe.send_bytes(blobs[i])
            busy[worker.pipe] = (worker, i)

    try:
        for worker in _workers[:workers]:
            give(worker)
        while busy:
            for pipe in wait(list(busy)):
                worker, i = busy.pop(pipe)
                try:
                    ok, value = cloudpickle.loads(pipe.recv_bytes())
                except EOFError:
                    _workers.remove(worker)
                    worker.close()
                    ok, value = (
                        False,
                        RuntimeError(
                            f"a jaxflow worker process died (exit code "
                            f"{worker.process.returncode}) solving part {i} of "
                            f"{len(tasks)}"
                        ),
                    )
                if not ok:
                    failure = failure or value
                    todo.clear()
                    continue
                results[i] = value
                if on_done is not None:
                    on_done(i, value)
                give(worker)
    except BaseException:  # interrupted: a busy worker's late reply must reach no one
        for worker, _ in busy.values():
            _workers.remove(worker)
            worker.process.kill()
            worker.close()
        raise
    if failure is not None:
        raise failure
    return results
