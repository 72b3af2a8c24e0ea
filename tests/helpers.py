import os
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxflow as jf


def flat(tree) -> np.ndarray:
    return np.asarray(jax.flatten_util.ravel_pytree(tree)[0])


def relative_error(x, y) -> float:
    """||x - y|| / ||y|| over all leaves."""
    a, b = flat(x), flat(y)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def relu_problem(*, n=20, d=5, width=10, scale=1e-6, seed=0, bias=False, loss=None):
    """A small separable classification problem with a TwoLayerReLU."""
    dkey, mkey = jax.random.split(jax.random.key(seed))
    data = jf.datasets.separable(dkey, n, d, 0.3)
    net = jf.models.TwoLayerReLU(d, width, scale=scale, bias=bias, key=mkey)
    return jf.GradientFlow(loss or jf.losses.exponential, data), net


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
