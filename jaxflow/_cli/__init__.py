"""The `jaxflow` command line: a module per command, the options and help they share
in `options.py`."""

import argparse
import os

import jax

from .._cache import enable_compilation_cache
from . import align, demo, ensemble, neuron, show, spurious
from .options import Formatter, examples


def main(argv: list[str] | None = None) -> int:
    """Runs `jaxflow` on `argv` (default: the process's arguments); returns the exit
    code.

    Bad arguments exit with code 2 and a one-line message on stderr: those argparse
    checks (`jaxflow <command>: error: argument --seeds: ...`, after the usage), and
    those only jaxflow can judge, its `ValueError`s and `FileNotFoundError`s
    (`jaxflow <command>: error: <message>`), instead of a traceback."""
    parser = argparse.ArgumentParser(
        prog="jaxflow",
        description="Exact gradient-flow trajectories of neural networks in JAX.",
        epilog=examples(),
        formatter_class=Formatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for command in (demo, ensemble, align, spurious, neuron, show):
        command.add_parser(commands)
    args = parser.parse_args(argv)
    # A command's solves are the same programs every time it runs: compile them once
    # (in jaxflow's cache folder, or the one JAX was given).
    if os.environ.get("JAXFLOW_COMPILATION_CACHE", "1") != "0":
        enable_compilation_cache(jax.config.jax_compilation_cache_dir)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as e:
        # jaxflow's errors name the argument, the value and the fix: the message is
        # the whole answer, as argparse's is.
        parser.exit(2, f"{parser.prog} {args.command}: error: {e}\n")
