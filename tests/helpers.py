import os
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
