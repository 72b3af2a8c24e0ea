"""The performance suite runs end to end at a tiny size (the numbers come from the full
run, recorded in benchmarks/RESULTS.md)."""

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
