"""The performance suite runs end to end at a tiny size (the numbers come from the full
run, recorded in benchmarks/RESULTS.md)."""

import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]


def test_performance_suite_smoke(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--size", "tiny",
         "--problems", "separable", "--sections", "solvers", "overhead", "gd",
         "peers", "--figures", str(tmp_path)],
        capture_output=True, text=True, timeout=600, check=True,
    ).stdout  # fmt: skip
    for heading in ("### Solvers", "### jaxflow against a bare", "### Gradient descent",
                    "### Peers", "scipy DOP853"):  # fmt: skip
        assert heading in out, out
    # Every jaxflow solve in the work-precision table succeeded, the implicit one
    # (Newton-GMRES) included.
    for solver in ("Tsit5", "Kvaerno5"):
        rows = [line for line in out.splitlines() if line.startswith(f"| {solver} ")]
        assert len(rows) == 2 and all("successful" in line for line in rows), out
    assert (tmp_path / "work_precision_separable.png").stat().st_size > 10_000
