"""The `jaxflow` command line: a module per command, the options and help they share
in `options.py`."""

import argparse

from . import align, demo, ensemble, neuron, show, spurious
from .options import Formatter, examples


def main(argv: list[str] | None = None) -> int:
    """Runs `jaxflow` on `argv` (default: the process's arguments); returns the exit
    code."""
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
    return args.run(args)
