"""A worker process of `jaxflow._pool`: `python -m jaxflow._worker FD`, where FD is
its end of the pipe to the caller."""

import sys
import traceback
from multiprocessing.connection import Connection

import cloudpickle
import jax


def _serve(fd: int) -> None:
    """A worker's life: take the caller's JAX settings, then run tasks until the pipe
    closes, sending back `(True, result)` or `(False, exception)`."""
    pipe = Connection(fd)
    settings = cloudpickle.loads(pipe.recv_bytes())
    jax.config.update("jax_num_cpu_devices", 1)
    for name, value in settings.items():  # (jaxflow, imported, set float64 mode)
        jax.config.update(name, getattr(value, "value", value))  # enums by value
    while True:
        try:
            task = cloudpickle.loads(pipe.recv_bytes())
        except EOFError:
            return
        try:
            reply = (True, task())
        except BaseException as error:  # sent back, raised by the caller
            text = "".join(traceback.format_exception(error))
            try:
                error.add_note(f"(in a jaxflow worker process)\n{text}")
                cloudpickle.dumps(error)
            except Exception:
                error = RuntimeError(f"in a jaxflow worker process:\n{text}")
            reply = (False, error)
        pipe.send_bytes(cloudpickle.dumps(reply))


if __name__ == "__main__":
    import jaxflow  # noqa: F401  (float64 mode, before the caller's settings)

    _serve(int(sys.argv[1]))
