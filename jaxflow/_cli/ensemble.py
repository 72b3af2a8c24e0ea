"""`jaxflow ensemble`: many seeds of a two-layer ReLU net, written to a run directory."""

import jax
import jax.numpy as jnp

import jaxflow as jf

from .._rundir import show
from .options import (
    add_command,
    add_options,
    ensemble_arguments,
    positive_float,
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


def _data(args, key) -> jf.Dataset:
    if args.data == "separable":
        return jf.datasets.separable(key, args.n, args.d, args.mu)
    if args.data == "mnist":
        return jf.datasets.mnist(n=args.n, root=args.root, progress=not args.quiet)
    return jf.datasets.boursier_flammarion()


def run(args) -> int:
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
        **ensemble_arguments(args),
    )
    print(show(args.out))
    return 0 if bool(ens.succeeded.all()) else 1
