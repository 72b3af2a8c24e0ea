import jax


jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")


import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_code():
    """Drop each test module's compiled programs when it is done. In one process the
    whole suite compiles thousands of XLA programs; each holds memory mappings, and
    past the kernel's limit (vm.max_map_count, 65,530 here) the next compilation
    aborts the process."""
    yield
    jax.clear_caches()
