"""The CPU devices JAX makes: one per core on request, for ensembles."""

import os

import jax


def usable_cores() -> int:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def host_devices_from_env() -> None:
    """As many JAX CPU devices as `JAXFLOW_HOST_DEVICES` asks for ('auto': one per core
    this process may use), unless a device count is set already (`XLA_FLAGS`,
    `jax_num_cpu_devices`); nothing once JAX has started. Called when jaxflow is
    imported with the variable set.

    Not the default: with several host devices, JAX's batched LAPACK kernels (a
    batched SVD of 2,560 small matrices per device, as the default metrics of a
    vmapped chunk take) hang on a 2-core machine, both of XLA's threads waiting inside
    `jax::ParallelBatchMap` (benchmarks/RESULTS.md, Ensembles). Worker processes
    (`solve_ensemble(processes=...)`, `jaxflow._pool`) use the cores instead."""
    wanted = os.environ["JAXFLOW_HOST_DEVICES"]
    if wanted == "auto":
        count = usable_cores()
    elif wanted.isdigit() and int(wanted) >= 1:
        count = int(wanted)
    else:
        raise ValueError(
            "JAXFLOW_HOST_DEVICES must be 'auto' (one CPU device per core) or a "
            f"positive number of devices, got {wanted!r}."
        )
    flags = os.environ.get("XLA_FLAGS", "")
    chosen = jax.config.jax_num_cpu_devices != -1  # (-1: not set)
    if chosen or "xla_force_host_platform_device_count" in flags:
        return
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError:  # JAX has started: its devices are fixed
        pass
