import subprocess
import sys

import pytest


def test_demo_runs_in_under_a_minute(tmp_path):
    """The README's main job: the default `jaxflow demo`."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "jaxflow._cli", "demo", "--out", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("`jaxflow demo` took more than 60 s")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "status        successful" in out
    for field in ("loss", "alignment", "accepted", "rejected", "max drift", "plot"):
        assert field in out
    drift = float(out.split("max drift")[1].split()[0])
    assert drift < 1e-9
    align = float(out.split("x+) = ")[1].split(",")[0])
    assert align > 0.99
    png = tmp_path / "demo.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_help_lists_demo():
    done = subprocess.run(
        [sys.executable, "-m", "jaxflow._cli", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0 and "demo" in done.stdout and "examples:" in done.stdout
