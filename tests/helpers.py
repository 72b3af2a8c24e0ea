import http.server
import os
import re
import socket
import threading
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxflow as jf


def flat(tree) -> np.ndarray:
    return np.asarray(jax.flatten_util.ravel_pytree(tree)[0])


def relative_error(x, y) -> float:
    """||x - y|| / ||y|| over all leaves."""
    a, b = flat(x), flat(y)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def scipy_flow(flow, model, t1):
    """The flow's end at `t1` by scipy's DOP853 (rtol 1e-12, atol 1e-14) on the
    flattened parameters: an independent reference."""
    from scipy.integrate import solve_ivp

    params, static = eqx.partition(model, eqx.is_inexact_array)
    theta0, unravel = jax.flatten_util.ravel_pytree(params)
    grad = jax.jit(jax.grad(lambda theta: flow(eqx.combine(unravel(theta), static))))
    out = solve_ivp(
        lambda t, theta: -np.asarray(grad(jnp.asarray(theta))),
        (0.0, t1),
        np.asarray(theta0),
        method="DOP853",
        rtol=1e-12,
        atol=1e-14,
    )
    assert out.success, out.message
    return eqx.combine(unravel(jnp.asarray(out.y[:, -1])), static)


def relu_problem(*, n=20, d=5, width=10, scale=1e-6, seed=0, bias=False, loss=None):
    """A small separable classification problem with a TwoLayerReLU."""
    dkey, mkey = jax.random.split(jax.random.key(seed))
    data = jf.datasets.separable(dkey, n, d, 0.3)
    net = jf.models.TwoLayerReLU(d, width, scale=scale, bias=bias, key=mkey)
    return jf.GradientFlow(loss or jf.losses.exponential, data), net


def kink_crossing_problem():
    """Logistic loss, 6 points in 3-D, width 5, unit init: pre-activations change sign
    along the flow, each (neuron, point) pair once (checked in test_solve): kinks
    crossed, no sliding."""
    dkey, mkey = jax.random.split(jax.random.key(3))
    X = jax.random.normal(dkey, (6, 3))
    data = jf.Dataset(X, jnp.sign(X[:, 0] + 0.3 * X[:, 1]))
    net = jf.models.TwoLayerReLU(3, 5, scale=1.0, key=mkey)
    return jf.GradientFlow(jf.losses.logistic, data), net


def boursier_flammarion_problem(width, scale, seed):
    """Square loss on the Boursier-Flammarion data with a biased TwoLayerReLU: at
    small scale, neurons slide along the data points' kinks."""
    flow = jf.GradientFlow(jf.losses.square, jf.datasets.boursier_flammarion())
    net = jf.models.TwoLayerReLU(
        1, width, scale=scale, bias=True, fan="width", key=jax.random.key(seed)
    )
    return flow, net


# One small problem for test_ensemble and test_events, defined once so that compiled
# code is reused.
D, WIDTH, T1 = 4, 6, 40.0
DATA = jf.datasets.separable(jax.random.key(0), 16, D, 0.3)
FLOW = jf.GradientFlow(jf.losses.exponential, DATA)
TS = jnp.geomspace(1e-2, T1, 12)
KEYS = jax.random.split(jax.random.key(1), 5)


def init(key):
    return jf.models.TwoLayerReLU(D, WIDTH, scale=1e-3, key=key)


def aligned(t, model, flow):
    """Per neuron: positive until cos(w_j, x_+) reaches 0.9."""
    return 0.9 - jf.metrics.cos_plus(model, flow)


EVENTS = {
    "loss": jf.events.LossBelow(0.05, terminal=False),
    "aligned": jf.events.Event(aligned),
}


def mnist_root() -> Path:
    """Where the shared MNIST files are (an absolute path: tests that run a notebook
    change the working directory), or skip."""
    here = Path(__file__).resolve().parents[1]
    for root in (os.environ.get("JAXFLOW_DATA"), here.parent / "shared" / "data"):
        if not root:
            continue
        root = Path(root).resolve()
        for folder in (root / "mnist", root):
            if (folder / "train-labels-idx1-ubyte.gz").is_file():
                return folder
    pytest.skip("MNIST files not found: set JAXFLOW_DATA or place ../shared/data/mnist")


def closed_url() -> str:
    """The base URL of a port on 127.0.0.1 that nothing listens on: an offline mirror
    (connections are refused at once, no waiting for a timeout)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


class Mirror:
    """A local HTTP mirror serving the files of `folder` on 127.0.0.1 (port 0, a
    `ThreadingHTTPServer` in a daemon thread, stopped on leaving the `with` block).

    It answers HTTP Range requests (`Range: bytes=<start>-`) with 206, and injects
    faults: `replace[name]` is served instead of the file's bytes, `cut[name]` bytes
    are sent of the next answer for `name` before the connection is closed, and with
    `ignore_range` every answer is the whole file (200). `requests` records each
    request as `(name, Range header or None, bytes sent)`."""

    def __init__(self, folder: Path):
        self.files = {p.name: p.read_bytes() for p in Path(folder).glob("*.gz")}
        self.replace: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}
        self.ignore_range = False
        self.requests: list[tuple[str, str | None, int]] = []

    def served(self, name: str) -> int:
        """All the bytes sent for `name` so far."""
        return sum(sent for n, _, sent in self.requests if n == name)

    def __enter__(self):
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.lstrip("/")
                ranged = self.headers.get("Range")
                if name not in mirror.files:
                    mirror.requests.append((name, ranged, 0))
                    self.send_error(404)
                    return
                body = mirror.replace.get(name, mirror.files[name])
                match = re.fullmatch(r"bytes=(\d+)-", ranged or "")
                start = int(match[1]) if match and not mirror.ignore_range else 0
                if start >= len(body) > 0:
                    mirror.requests.append((name, ranged, 0))
                    self.send_error(416)
                    return
                self.send_response(206 if start else 200)
                if start:
                    self.send_header(
                        "Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}"
                    )
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                payload = body[start : start + mirror.cut.pop(name, len(body))]
                mirror.requests.append((name, ranged, len(payload)))
                self.wfile.write(payload)
                # HTTP/1.0: the connection closes here, whatever Content-Length said.

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(
            target=self.server.serve_forever, args=(0.01,), daemon=True
        )
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
