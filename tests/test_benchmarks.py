"""The performance suite runs end to end at a tiny size (the numbers come from the full
run, recorded in benchmarks/RESULTS.md)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # (a minute of compilation: the README command stays under 10 minutes)
def test_performance_suite_smoke(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--size", "tiny",
         "--problems", "separable", "--sections", "solvers", "overhead", "gd",
         "peers", "flops", "--solvers", "Tsit5", "Kvaerno5", "--figures",
         str(tmp_path / "figures")],
        capture_output=True, text=True, timeout=600, check=True,
    ).stdout  # fmt: skip
    for heading in ("### Solvers", "### jaxflow against a bare", "### Gradient descent",
                    "### Peers", "scipy DOP853", "### Vector field FLOP/s",
                    "| float32 |"):  # fmt: skip
        assert heading in out, out
    # Every jaxflow solve in the work-precision table succeeded, the implicit one
    # (Newton-GMRES) included. (An explicit solver besides Tsit5 would only add
    # compilation: the reference solve is Dopri8.)
    for solver in ("Tsit5", "Kvaerno5"):
        rows = [line for line in out.splitlines() if line.startswith(f"| {solver} ")]
        assert len(rows) == 2 and all("successful" in line for line in rows), out
    figure = tmp_path / "figures" / "work_precision_separable.png"  # folder made
    assert figure.stat().st_size > 10_000


def test_gpu_benchmark_runs_on_the_cpu():
    """`benchmarks/gpu.py --cpu` in about a minute (the full sweep is for a GPU): rows
    for problem (i) until its 30 s budget is spent, each measured or saying why not,
    and the FLOP/s table. XLA's CPU backend at optimization level 0 halves the
    default mode's compilation."""
    env = dict(os.environ, XLA_FLAGS="--xla_backend_optimization_level=0")
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--cpu"],
        capture_output=True, text=True, timeout=120, check=True, env=env,
    ).stdout  # fmt: skip
    rows = [line.split(" | ") for line in out.splitlines() if line.startswith("| (i)")]
    measured = {(r[1], r[2]) for r in rows if "successful" in r[-1]}
    # Both ways plain, and the default mode, before the budget runs out.
    assert {("plain", "vmapped"), ("plain", "mapped")} <= measured, out
    assert any(kinks == "auto" for kinks, _ in measured), out
    for r in rows:  # seeds/s from a measured wall, or the reason it was not run
        assert r[4] == "-" and "not run" in r[-1] or float(r[4]) > 0, out
    assert "## The vector field's FLOP/s" in out and "| float64 |" in out, out


@pytest.mark.slow
def test_stiff_benchmark_smoke():
    """`benchmarks/stiff.py --quick`: on the stiff quadratic `solver="auto"` switches
    and takes far fewer steps than Tsit5; the MLPGradientFlow.jl example's table has
    jaxflow's row and Adam's three."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "stiff.py"), "--quick"],
        capture_output=True, text=True, timeout=600, check=True,
    ).stdout  # fmt: skip
    steps = {
        r.split(" | ")[0].strip("| "): int(r.split(" | ")[2])
        for r in out.splitlines()
        if r.startswith(("| Tsit5 ", "| Kvaerno5 ", "| auto "))
    }
    assert steps["auto"] < 2 * steps["Kvaerno5"] < steps["Tsit5"] / 10, out
    rows = [r for r in out.splitlines() if r.startswith(("| jaxflow", "| Adam"))]
    assert len(rows) == 4 and all("nan" not in r for r in rows), out
