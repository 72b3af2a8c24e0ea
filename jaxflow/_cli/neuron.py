"""`jaxflow neuron`: single ReLU neurons, Lee, Sim and Ye."""

import csv
import json
import time
from pathlib import Path

import jax
import numpy as np

import jaxflow as jf

from .options import (
    REQUIRED,
    add_command,
    add_options,
    positive_float,
    positive_int,
)


# The options that go to `jaxflow.experiments.neuron_study` by name.
_STUDY_KEYWORDS = ("d", "loss_level", "angle_level", "rtol", "ns", "draws", "lrs")


def add_parser(commands) -> None:
    parser = add_command(
        commands,
        "neuron",
        run,
        help="Lee-Sim-Ye: chains of single ReLU neurons on the exact population loss; "
        "time to converge against depth and initial scale, finite samples, GD",
    )
    study = parser.add_argument_group("study")
    study.add_argument(
        "--depths",
        type=positive_int,
        nargs="+",
        default=[1, 2, 3, 4],
        help="chain depths",
    )
    study.add_argument(
        "--scales",
        type=positive_float,
        nargs="+",
        default=[1e-4, 1e-3, 1e-2, 1e-1, 1.0],
        help="initial scales ||w_1|| = a_l",
    )
    add_options(study, seeds=32, d=10)
    study.add_argument(
        "--loss-level", type=positive_float, default=1e-6, help="converged: loss below"
    )
    study.add_argument(
        "--angle-level",
        type=positive_float,
        default=1e-3,
        help="... and teacher angle below",
    )
    add_options(study, rtol=1e-10)
    study.add_argument(
        "--ns",
        type=positive_int,
        nargs="*",
        default=[1000, 10000, 100000],
        help="sample sizes against the population flow (none: skip)",
    )
    study.add_argument("--draws", type=positive_int, default=4, help="data sets per n")
    study.add_argument(
        "--lrs",
        type=positive_float,
        nargs="*",
        default=[0.1, 0.03, 0.01, 0.003],
        help="GD steps against the flow (none: skip)",
    )
    add_options(parser.add_argument_group("output"), seed=0, out=REQUIRED)


def run(args) -> int:
    start = time.perf_counter()
    keywords = {name: getattr(args, name) for name in _STUDY_KEYWORDS}
    summary, results = jf.experiments.neuron_study(
        args.depths, args.scales, args.seeds, key=jax.random.key(args.seed), **keywords
    )
    summary["run"] = {
        "depths": args.depths,
        "scales": args.scales,
        "seeds": args.seeds,
        "d": args.d,
        "teacher": "single neuron, unit norm, random direction per seed",
        "init": "balanced: ||w_1|| = a_l = scale, random direction",
        "loss": "population 1/2 E (f - y)^2, x ~ N(0, I_d), exact (arc-cosine kernel)",
        "seconds": time.perf_counter() - start,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    _write_times(args.scales, results, out / "times.csv")
    figure = jf.experiments.plot_neuron(summary, out / "neuron.png")
    print(
        f"jaxflow neuron: depths {args.depths}, scales {args.scales}, {args.seeds} "
        f"seeds each, d={args.d}, rtol {args.rtol:g}; {summary['run']['seconds']:.1f} s"
    )
    print(jf.experiments.neuron_report(summary))
    print(f"\nwrote {out / 'summary.json'}, {out / 'times.csv'}, {figure}")
    ok = all(
        set(r["statuses"]) <= {"event_occurred", "successful"}
        for block in summary["depths"].values()
        for r in block["rows"]
    )
    return 0 if ok else 1


def _write_times(scales, results: dict, path: Path) -> None:
    """One row per depth, scale and seed: the loss and angle times, status, steps."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["depth", "scale", "seed", "loss_time", "angle_time", "status", "steps"]
        )
        for depth, per_scale in results.items():
            for scale, ens in zip(scales, per_scale):
                times = np.asarray(ens.event_times["reached"])
                steps = np.asarray(ens.stats["num_steps"])
                for s in range(ens.num_seeds):
                    status = ens.status_name[s]
                    row = [depth, scale, s, times[s, 0], times[s, 1], status]
                    writer.writerow(row + [int(steps[s])])
