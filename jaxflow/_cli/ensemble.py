"""`jaxflow ensemble`: many seeds of a two-layer ReLU net, written to a run directory."""

import jax
import jax.numpy as jnp

import jaxflow as jf

from .._rundir import show
from .options import (
    add_command,
    add_options,
    ensemble_arguments,
    nonnegative_int,
    part,
    positive_float,
    positive_int,
    run_options,
)


_LOSSES = {
    "exponential": jf.losses.exponential,
    "logistic": jf.losses.logistic,
    "square": jf.losses.square,
}


def add_parser(commands) -> None:
    parser = add_command(
        commands,
        "ensemble",
        run,
        help="many seeds of a two-layer ReLU net: vmapped, segmented, checkpointed; "
        "writes a run directory (resumes it if it was interrupted)",
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--data",
        choices=("separable", "mnist", "boursier-flammarion"),
        default="separable",
        help="data set",
    )
    add_options(data, n=200, d=20, mu=0.3, root=None)
    model = parser.add_argument_group("model")
    model.add_argument(
        "--loss", choices=tuple(_LOSSES), default="exponential", help="loss"
    )
    add_options(model, width=50, scale=1e-6, init="balanced")
    model.add_argument(
        "--fan",
        choices=("in", "width", "none"),
        help="initial variance scale^2/d, scale^2/width or scale^2 (unset: in for "
        "balanced, none for gaussian)",
    )
    model.add_argument("--bias", action="store_true", help="hidden-layer bias")
    solver = parser.add_argument_group("solver")
    add_options(solver, seeds=64, t1=1e3, rtol=1e-8, times=100, steady_state=None)
    solver.add_argument(
        "--loss-below", type=positive_float, help="stop a seed at this loss"
    )
    add_options(solver, kinks="auto")
    run_options(parser)
    split = parser.add_argument_group(
        "beyond one process",
        "A job array: --part I/N in each of N jobs, any order, any machine that shares "
        "--out; `jaxflow show OUT` joins the finished parts. JAX's distributed "
        "runtime: every process runs the same command with its --process-id (or "
        "--distributed alone where the cluster's environment says it: SLURM, Open MPI, "
        "...); each solves its share of the seeds and writes its own part of --out.",
    )
    split.add_argument(
        "--part",
        type=part,
        metavar="I/N",
        help="solve the I-th of N slices of the seeds (0 <= I < N) into --out",
    )
    split.add_argument(
        "--coordinator",
        metavar="HOST:PORT",
        help="the address of process 0, for jax.distributed.initialize",
    )
    split.add_argument(
        "--num-processes", type=positive_int, help="the number of processes"
    )
    split.add_argument(
        "--process-id", type=nonnegative_int, help="this process's index"
    )
    split.add_argument(
        "--distributed",
        action="store_true",
        help="join JAX's distributed runtime; what --coordinator, --num-processes and "
        "--process-id leave unset, jax.distributed.initialize() reads from the "
        "cluster's environment",
    )


def _data(args, key) -> jf.Dataset:
    if args.data == "separable":
        return jf.datasets.separable(key, args.n, args.d, args.mu)
    if args.data == "mnist":
        return jf.datasets.mnist(n=args.n, root=args.root, progress=not args.quiet)
    return jf.datasets.boursier_flammarion()


def _distributed(args) -> None:
    """Join JAX's distributed runtime if asked to (before JAX runs anything)."""
    given = (args.coordinator, args.num_processes, args.process_id)
    if not args.distributed and all(x is None for x in given):
        return
    if args.part is not None:
        raise ValueError(
            "--part and a distributed run (--distributed, --coordinator, "
            "--num-processes, --process-id) cannot be combined: each process of a "
            f"distributed run solves its own part; got --part {args.part[0]}/"
            f"{args.part[1]}."
        )
    jax.distributed.initialize(
        coordinator_address=args.coordinator,
        num_processes=args.num_processes,
        process_id=args.process_id,
    )


def run(args) -> int:
    _distributed(args)
    dkey, key = jax.random.split(jax.random.key(args.seed))
    data = _data(args, dkey)
    flow = jf.GradientFlow(_LOSSES[args.loss], data)
    kwargs = dict(init=args.init, bias=args.bias)
    if args.fan is not None:
        kwargs["fan"] = args.fan

    def init(k):
        return jf.models.TwoLayerReLU(
            data.d, args.width, scale=args.scale, key=k, **kwargs
        )

    events = {}
    if args.steady_state is not None:
        events["stationary"] = jf.events.SteadyState(args.steady_state)
    if args.loss_below is not None:
        events["loss_below"] = jf.events.LossBelow(args.loss_below)
    ens = jf.solve_ensemble(
        flow,
        init,
        jax.random.split(key, args.seeds),
        t1=args.t1,
        ts=jnp.geomspace(args.t1 * 1e-5, args.t1, args.times),
        rtol=args.rtol,
        events=events,
        kinks=args.kinks,
        part=args.part,
        **ensemble_arguments(args),
    )
    if jax.process_index() == 0:
        print(show(args.out))
    return 0 if bool(ens.succeeded.all()) else 1
