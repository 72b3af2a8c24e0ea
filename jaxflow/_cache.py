import os
from pathlib import Path

import jax


def default_cache_dir() -> Path:
    """jaxflow's cache folder: `$XDG_CACHE_HOME/jaxflow`, else `~/.cache/jaxflow`."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "jaxflow"


def enable_compilation_cache(
    path: str | os.PathLike | None = None, *, min_compile_time_secs: float = 0.0
) -> Path:
    r"""Turn on JAX's persistent compilation cache, so that a second process running
    the same solves loads their compiled programs from disk instead of compiling them
    again.

    A solve is compiled once per process for each combination of model structure,
    shapes, data size and options; without the cache every new process pays that again
    (most of a short run's wall time). The `jaxflow` command calls this itself (in the
    folder JAX was given, if any: `JAX_COMPILATION_CACHE_DIR`), unless the environment
    variable `JAXFLOW_COMPILATION_CACHE` is `0`. Call it
    once at the start of a script or notebook, before the first solve; it changes JAX's
    global configuration (`jax_compilation_cache_dir` and the thresholds), so
    it affects every program JAX compiles afterwards in this process, jaxflow's or not.
    Every program is stored, however small (JAX's `jax_persistent_cache_min_entry_size_bytes`
    is set to 0 too).

    Only XLA's compilation is cached: tracing the Python code to a program still takes
    its time in every process. Entries are keyed by the program, the JAX and XLA
    versions and the device, so a stale entry is never used. The folder can be deleted
    at any time.

    **Arguments:**

    - `path`: the cache folder, created if absent. Default: the `jax` folder in
        jaxflow's cache folder, `$XDG_CACHE_HOME/jaxflow/jax` or
        `~/.cache/jaxflow/jax`. (The environment variable `JAX_COMPILATION_CACHE_DIR`
        sets only the folder: JAX's own thresholds then leave most of a solve's
        programs out of the cache.)
    - `min_compile_time_secs`: store only programs that took at least this long to
        compile. Default 0: a solve is made of many programs, most of them compiled in
        under JAX's own default threshold of one second, and together they are most of
        the first run's wall time.

    **Returns:**

    The cache folder, as a `pathlib.Path`.

    **Raises:**

    `ValueError` if `min_compile_time_secs` is negative or `path` is an existing file.

    **Example:**

    ```python
    import jaxflow as jf

    jf.enable_compilation_cache()  # ~/.cache/jaxflow/jax
    sol = jf.solve(flow, net, t1=100.0)  # compiled once, loaded in later processes
    ```
    """
    if not min_compile_time_secs >= 0:
        raise ValueError(
            "enable_compilation_cache: `min_compile_time_secs` must be >= 0, got "
            f"{min_compile_time_secs!r}."
        )
    folder = Path(path) if path is not None else default_cache_dir() / "jax"
    if folder.exists() and not folder.is_dir():
        raise ValueError(
            f"enable_compilation_cache: `path` ({str(folder)!r}) is a file, expected "
            "a folder (or a path where one can be created)."
        )
    folder.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update(
        "jax_persistent_cache_min_compile_time_secs", min_compile_time_secs
    )
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder
