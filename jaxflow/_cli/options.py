"""What the commands share: the help formatter, the examples, and the options that
several commands take, each defined once here with its type and help; a command
chooses its defaults."""

import argparse
import math
import re
import textwrap


_EXAMPLES = """
  jaxflow demo                       # the default run, writes jaxflow-demo/demo.png
  jaxflow demo --width 50 --t1 1e4 --out runs/demo
  jaxflow ensemble --seeds 64 --out runs/sep64          # 64 seeds, separable data
  jaxflow ensemble --data mnist --n 2000 --width 50 --seeds 256 --scale 1e-3 \\
      --init gaussian --t1 1e3 --steady-state 1e-6 --out runs/mnist01
  jaxflow ensemble --data boursier-flammarion --bias --fan width --width 200 \\
      --scale 0.1 --loss square --t1 5000 --rtol 1e-9 --seeds 8 --out runs/bf
  jaxflow ensemble --seeds 4096 --out runs/big --part 3/16   # one job of a job array
  jaxflow ensemble --seeds 4096 --out runs/big --coordinator node0:12345 \\
      --num-processes 8 --process-id 0                    # one of 8 processes
  jaxflow show runs/sep64            # what a run directory holds
  jaxflow align --data toy --toy two-points --c 0.001 --seeds 16 --out runs/toy
  jaxflow align --data separable --n 256 --mu 0.3 --seeds 64 --out runs/align
  jaxflow align --data mnist --gd-lr 2e-3 --out runs/mnist01
  jaxflow spurious --scale 1e-3 --width 200 --seeds 8 --out runs/bf   # saddle
  jaxflow spurious --data knots --width 100 --scale 1e-3 --out runs/knots
  jaxflow neuron --seeds 32 --out runs/neuron      # Lee-Sim-Ye: depth 1-4, scale 1e-4..1
  jaxflow neuron --depths 1 3 --scales 1e-2 1 --seeds 4 --ns --lrs --out runs/quick
"""


def examples(name: str | None = None) -> str:
    """The examples section of the help: all of them, or those of command `name`."""
    entries = re.split(r"\n(?=  jaxflow )", _EXAMPLES.strip("\n"))
    chosen = [e for e in entries if name is None or e.split()[1] == name]
    return ("examples:\n" + "\n".join(chosen) + "\n") if chosen else ""


class Formatter(
    argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter
):
    """Every option's default after its help, descriptions and examples as written."""

    def _get_help_string(self, action):
        # None is "unset" (off, required, or chosen per data set): not worth printing.
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def _parse(text: str, kind: type, ok, expected: str):
    # ArgumentTypeError, not ValueError: argparse then prints our message as it is.
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not ok(value):
        raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """`type=` of an option that takes an int >= 1."""
    return _parse(text, int, lambda v: v >= 1, "a positive int")


def nonnegative_int(text: str) -> int:
    """`type=` of an option that takes an int >= 0."""
    return _parse(text, int, lambda v: v >= 0, "a non-negative int")


def part(text: str) -> tuple[int, int]:
    """`type=` of `--part I/N`: the I-th of N parts, 0 <= I < N."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        i, n = -1, 0
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(
            f"must be I/N with 0 <= I < N (the I-th of N parts), got {text!r}"
        )
    return i, n


def digit(text: str) -> int:
    """`type=` of an option that takes an MNIST digit."""
    return _parse(text, int, lambda v: 0 <= v <= 9, "a digit 0..9")


def positive_float(text: str) -> float:
    """`type=` of an option that takes a finite float > 0."""
    return _parse(text, float, lambda v: 0 < v < math.inf, "a positive float")


def nonnegative_float(text: str) -> float:
    """`type=` of an option that takes a finite float >= 0."""
    return _parse(text, float, lambda v: 0 <= v < math.inf, "a non-negative float")


def open_unit_float(text: str) -> float:
    """`type=` of an option that takes a float in (0, 1)."""
    return _parse(text, float, lambda v: 0 < v < 1, "a float in (0, 1)")


# Marks an option that has no default.
REQUIRED = object()

_OPTIONS = {
    "n": dict(type=positive_int, help="number of data points"),
    "d": dict(type=positive_int, help="input dimension"),
    "mu": dict(type=open_unit_float, help="separation of the separable data"),
    "root": dict(
        help="MNIST folder (unset: $JAXFLOW_DATA, else ~/.cache/jaxflow); missing "
        "files are downloaded into it (for the cache: into ~/.cache/jaxflow/mnist) "
        "from $JAXFLOW_MNIST_MIRROR if set, else the standard mirrors"
    ),
    "width": dict(type=positive_int, help="hidden neurons"),
    "scale": dict(type=positive_float, help="initial scale"),
    "init": dict(choices=("balanced", "gaussian"), help="initialisation"),
    "seeds": dict(type=positive_int, help="number of seeds"),
    "t1": dict(type=positive_float, help="final time"),
    "rtol": dict(type=positive_float, help="relative tolerance of the solver"),
    "times": dict(type=positive_int, help="number of saved times"),
    "kinks": dict(choices=("auto", "min-norm", "plain"), help="kink handling"),
    "steady_state": dict(
        type=positive_float,
        metavar="RTOL",
        help="stop a seed once its gradient norm is RTOL times the initial one",
    ),
    "seed": dict(type=nonnegative_int, help="master seed"),
    "segments": dict(
        type=positive_int, help="log-spaced segments of time, checkpointed"
    ),
    "batch_size": dict(type=positive_int, help="the most seeds solved at once"),
    "out": dict(help="the output directory"),
    "quiet": dict(action="store_true", help="no progress bar"),
}


def add_options(group, **defaults) -> None:
    """Adds to `group` (a parser or an argument group) the shared options named by the
    keywords (`batch_size` is `--batch-size`), with those defaults (`REQUIRED`: none).
    """
    for name, default in defaults.items():
        flag = "--" + name.replace("_", "-")
        if default is REQUIRED:
            group.add_argument(flag, required=True, **_OPTIONS[name])
        else:
            group.add_argument(flag, default=default, **_OPTIONS[name])


def run_options(parser: argparse.ArgumentParser) -> None:
    """The options of every command that writes a run directory: see
    `ensemble_arguments`."""
    group = parser.add_argument_group("run directory")
    add_options(group, seed=0, segments=8, batch_size=256, out=REQUIRED, quiet=False)


def ensemble_arguments(args: argparse.Namespace) -> dict:
    """`jaxflow.solve_ensemble`'s arguments set by `run_options`."""
    return dict(
        batch_size=args.batch_size,
        segments=args.segments,
        checkpoint_dir=args.out,
        progress=not args.quiet,
    )


def add_command(commands, name: str, run, help: str, notes: str = ""):
    """The parser of command `name`, which runs `run(args)` and returns its exit code:
    `help` in the list of commands and atop its own help (with `notes` below), its
    examples at the end."""
    description = textwrap.fill(help, 80) + ("\n\n" + notes if notes else "")
    parser = commands.add_parser(
        name,
        help=help,
        description=description,
        epilog=examples(name),
        formatter_class=Formatter,
    )
    parser.set_defaults(run=run)
    return parser
