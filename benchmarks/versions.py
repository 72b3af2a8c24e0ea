"""Problem (i) of `run.py` under two versions of jaxflow, in one run on one machine.

A no-regression check across commits: the default mode at the peers' tolerances and
GD (lax.scan, lr 0.01) to t = 1000, each warm wall the best of `--reps` runs, under
this checkout and under a git revision (checked out in a temporary worktree). Each
version runs in a process of its own, one after the other, so the ratios within a
version (GD's wall over the fastest default run at least as accurate: `run.py`'s
peers ratio) and across versions come from the same machine and the same minutes.
Errors are relative to one reference, Dopri8 at rtol 1e-13 without kink treatment,
computed first under this checkout.

    python benchmarks/versions.py eac4b6d            # this checkout against eac4b6d
    taskset -c 0 python benchmarks/versions.py eac4b6d --reps 9   # one core
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


HERE = Path(__file__).resolve().parent
RTOLS = (1e-3, 1e-4, 1e-6, 1e-8)
T, LR = 1000.0, 1e-2


def child(root: str, reference: str, reps: int) -> None:
    """In a process importing jaxflow from `root`: one JSON line per run."""
    sys.path[:0] = [root, str(Path(root) / "benchmarks")]
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np
    import run

    import jaxflow as jf

    assert Path(jf.__file__).is_relative_to(root), jf.__file__
    flow, net, _ = run.problem("separable", "full")
    ref = np.load(reference)

    def best(fn):
        out = jax.block_until_ready(fn())  # compiles
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            jax.block_until_ready(fn())
            times.append(time.perf_counter() - start)
        return out, min(times)

    def report(name, sol, wall, grads):
        error = run.rel(run.flat(sol.final), ref)
        print(json.dumps(dict(name=name, error=error, grads=grads, wall=wall)))

    for rtol in RTOLS:
        sol, wall = best(lambda: jf.solve(flow, net, t1=T, rtol=rtol, metrics={}))
        report(f"rtol {rtol:.0e}", sol, wall, int(sol.stats["num_vf_evals"]))
    steps = int(round(T / LR))
    sol, wall = best(lambda: jf.gradient_descent(
        flow, net, lr=LR, steps=steps, ts=jnp.array([T]), metrics={}))  # fmt: skip
    report(f"GD lr {LR:g}", sol, wall, steps)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("revision", help="the git revision to compare with")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(*args.child, args.reps)

    import jax

    jax.config.update("jax_enable_x64", True)
    import diffrax as dfx
    import numpy as np
    import run

    import jaxflow as jf

    repo = HERE.parent
    commit = subprocess.run(["git", "-C", repo, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    dirty = subprocess.run(["git", "-C", repo, "status", "--porcelain", "jaxflow"],
                           capture_output=True, text=True).stdout.strip()  # fmt: skip
    this = f"this checkout ({commit}{' + changes' if dirty else ''})"
    print(f"# problem (i) of run.py under two versions of jaxflow; T = {T:g}, "
          f"best of {args.reps} warm runs each")  # fmt: skip
    flow, net, description = run.problem("separable", "full")
    sol = jf.solve(flow, net, t1=T, rtol=1e-13, kinks="plain",
                   solver=dfx.Dopri8(), max_steps=10**6, metrics={})  # fmt: skip
    print(f"# {description}; reference Dopri8 rtol 1e-13, plain, {sol.status_name}\n")
    with tempfile.TemporaryDirectory() as tmp:
        reference = Path(tmp) / "reference.npy"
        np.save(reference, run.flat(sol.final))
        old = Path(tmp) / "old"
        subprocess.run(["git", "-C", repo, "worktree", "add", "--detach", "-q", old,
                        args.revision], check=True)  # fmt: skip
        try:
            rows = {}
            for name, root in ((this, repo), (args.revision, old)):
                out = subprocess.run(
                    [sys.executable, __file__, args.revision, "--reps", str(args.reps),
                     "--child", str(root), str(reference)],
                    capture_output=True, text=True, check=True,
                ).stdout  # fmt: skip
                rows[name] = [json.loads(line) for line in out.splitlines()
                              if line.startswith("{")]  # fmt: skip
        finally:
            subprocess.run(["git", "-C", repo, "worktree", "remove", "--force", old])
    print("| version | run | rel. error at T | grad evals | wall ms |")
    print("|---|---|---|---|---|")
    for name, runs in rows.items():
        for r in runs:
            print(f"| {name} | {r['name']} | {r['error']:.2e} | {r['grads']} | "
                  f"{1e3 * r['wall']:.1f} |")  # fmt: skip
    print("\n| version | GD wall / fastest default run at least as accurate |")
    print("|---|---|")
    for name, runs in rows.items():
        gd = runs[-1]
        fast = min(r["wall"] for r in runs[:-1] if r["error"] <= gd["error"])
        print(f"| {name} | {gd['wall'] / fast:.1f}x |")


if __name__ == "__main__":
    main()
