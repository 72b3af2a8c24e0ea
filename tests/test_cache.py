"""The persistent compilation cache: `jf.enable_compilation_cache` stores compiled
programs in its folder and a new process loads them instead of compiling; the `jaxflow`
command turns it on in jaxflow's cache folder unless `JAXFLOW_COMPILATION_CACHE=0`."""

import json
import os
import subprocess
import sys

import pytest

import jaxflow as jf


PROGRAM = r"""
import json, sys
import jax, jax.numpy as jnp
import jaxflow as jf
events = []
jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))
folder = jf.enable_compilation_cache(sys.argv[1])
f = jax.jit(lambda x: jnp.sum(jnp.sin(x) @ x.T))
value = float(f(jnp.arange(12.0).reshape(3, 4)))
print(json.dumps({"folder": str(folder), "value": value,
                  "hits": events.count("/jax/compilation_cache/cache_hits"),
                  "misses": events.count("/jax/compilation_cache/cache_misses")}))
"""


def _run(*args, env=None):
    # Without the test run's own cache folder (conftest.py), which the command keeps.
    base = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**base, **(env or {})},
    )


def test_a_second_process_loads_the_compiled_program(tmp_path):
    folder = tmp_path / "jax"
    first = _run("-c", PROGRAM, str(folder))
    assert first.returncode == 0, first.stderr
    first = json.loads(first.stdout.splitlines()[-1])
    entries = sorted(p.name for p in folder.iterdir())
    assert first["folder"] == str(folder) and first["misses"] >= 1 and entries
    second = json.loads(_run("-c", PROGRAM, str(folder)).stdout.splitlines()[-1])
    assert second["hits"] >= 1 and second["misses"] == 0
    assert second["value"] == first["value"]
    assert sorted(p.name for p in folder.iterdir()) == entries


def test_the_command_turns_the_cache_on(tmp_path):
    # `jaxflow show` of a missing folder fails at once, after the cache is turned on.
    argv = ["-m", "jaxflow._cli", "show", str(tmp_path / "missing")]
    on = _run(
        *argv,
        env={"XDG_CACHE_HOME": str(tmp_path / "on"), "JAXFLOW_COMPILATION_CACHE": "1"},
    )
    assert on.returncode == 2 and "error" in on.stderr
    assert (tmp_path / "on" / "jaxflow" / "jax").is_dir()
    off = _run(
        *argv,
        env={"XDG_CACHE_HOME": str(tmp_path / "off"), "JAXFLOW_COMPILATION_CACHE": "0"},
    )
    assert off.returncode == 2
    assert not (tmp_path / "off" / "jaxflow" / "jax").exists()


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="min_compile_time_secs"):
        jf.enable_compilation_cache(tmp_path, min_compile_time_secs=-1.0)
    file = tmp_path / "file"
    file.write_text("")
    with pytest.raises(ValueError, match="`path`.*is a file"):
        jf.enable_compilation_cache(file)
