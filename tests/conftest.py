import os

import jax


# Ensembles in this process (`solve_ensemble(processes=...)`): the suite already runs a
# pytest-xdist worker per core, and worker processes would compile every program again.
# tests/test_distributed.py tests the worker processes.
os.environ["JAXFLOW_PROCESSES"] = "1"

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")


import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _share_compiled_code(tmp_path_factory):
    """Keep compiled XLA programs on disk for the whole test run, shared by the
    pytest-xdist workers. The suite is mostly compilation (a min-norm solve takes about
    20 s to compile on a 2-core CPU), and the same programs come back in several
    modules (after `_release_compiled_code`), in both workers and in the Python
    processes that tests start. The folder is this run's own (pytest's temporary
    root), so every run starts cold."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if base.name.startswith("popen-gw") else base
    cache = {
        "jax_compilation_cache_dir": str(shared / "xla-cache"),
        "jax_persistent_cache_min_compile_time_secs": 0.0,
    }
    for name, value in cache.items():
        jax.config.update(name, value)
        # Tests that start Python processes (a killed run and its resumption, the
        # benchmark script) share it too: JAX reads its options from the environment.
        os.environ[name.upper()] = str(value)
    yield


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_code():
    """Drop each test module's compiled programs when it is done. In one process the
    whole suite compiles thousands of XLA programs; each holds memory mappings, and
    past the kernel's limit (vm.max_map_count, 65,530 here) the next compilation
    aborts the process."""
    yield
    jax.clear_caches()
