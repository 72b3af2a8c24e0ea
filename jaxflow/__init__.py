"""jaxflow: exact gradient-flow trajectories of neural networks in JAX.

Importing jaxflow turns on JAX's float64 mode (`jax_enable_x64`), because the point of
the package is accuracy beyond float32; set the environment variable
`JAXFLOW_ENABLE_X64=0` before importing to keep JAX's default.

`jaxflow.solve_ensemble` uses every core of the CPU through worker processes
(`processes`, `JAXFLOW_PROCESSES`). Set `JAXFLOW_HOST_DEVICES` to a number of CPU
devices, or to `auto` for one per core, before importing, and jaxflow makes them
(`jax_num_cpu_devices`, the same as XLA's `--xla_force_host_platform_device_count`):
not the default, see `jaxflow._devices`.
"""

import importlib.metadata
import os

import jax

from . import _devices


if os.environ.get("JAXFLOW_ENABLE_X64", "1") != "0":
    jax.config.update("jax_enable_x64", True)
if "JAXFLOW_HOST_DEVICES" in os.environ:
    _devices.host_devices_from_env()

from . import (
    datasets as datasets,
    events as events,
    experiments as experiments,
    losses as losses,
    metrics as metrics,
    models as models,
)
from ._cache import enable_compilation_cache as enable_compilation_cache
from ._classify import Verdict as Verdict, classify as classify
from ._dataset import Dataset as Dataset
from ._ensemble import solve_ensemble as solve_ensemble
from ._escape import Escape as Escape, best_new_neuron as best_new_neuron
from ._flow import GradientFlow as GradientFlow
from ._gd import gradient_descent as gradient_descent, optimize as optimize
from ._hessian import hessian_eigenvalues as hessian_eigenvalues
from ._polish import (
    Polished as Polished,
    polish as polish,
    restricted_loss as restricted_loss,
)
from ._results import Ensemble as Ensemble
from ._rundir import load_ensemble as load_ensemble
from ._solution import RESULTS as RESULTS, Solution as Solution
from ._solve import solve as solve


__all__ = [
    "datasets",
    "events",
    "experiments",
    "losses",
    "metrics",
    "models",
    "enable_compilation_cache",
    "Verdict",
    "classify",
    "Dataset",
    "solve_ensemble",
    "Escape",
    "best_new_neuron",
    "GradientFlow",
    "gradient_descent",
    "optimize",
    "hessian_eigenvalues",
    "Polished",
    "polish",
    "restricted_loss",
    "Ensemble",
    "load_ensemble",
    "RESULTS",
    "Solution",
    "solve",
]


try:
    __version__ = importlib.metadata.version("jaxflow")
except importlib.metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"
