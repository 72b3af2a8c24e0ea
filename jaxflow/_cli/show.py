"""`jaxflow show`: what a run directory holds."""

from .._rundir import show
from .options import add_command


def add_parser(commands) -> None:
    parser = add_command(
        commands,
        "show",
        run,
        help="print what a run directory holds: configuration, statuses, times, events",
    )
    parser.add_argument("run_dir", help="a directory written by `jaxflow ensemble`")


def run(args) -> int:
    print(show(args.run_dir))
    return 0
