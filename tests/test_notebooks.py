"""The notebooks run top to bottom (at a reduced size: JAXFLOW_NOTEBOOK_QUICK=1).

The quickstart runs in the default test run. The three study notebooks are `slow`
(`pytest -m slow`; six minutes on a 2-core CPU, mostly compilation): the experiment
functions they call are tested through the CLI (tests/test_cli.py,
tests/test_neuron.py), which keeps the default run within CI's time.
"""

import json
from pathlib import Path

import matplotlib
import pytest

from helpers import mnist_root


ROOT = Path(__file__).resolve().parents[1]


def _run(name: str, tmp_path, monkeypatch) -> dict:
    """Execute the code cells of `notebooks/name` in order, in one namespace."""
    matplotlib.use("Agg")
    monkeypatch.setenv("JAXFLOW_NOTEBOOK_QUICK", "1")
    monkeypatch.chdir(tmp_path)
    cells = json.loads((ROOT / "notebooks" / name).read_text())["cells"]
    namespace: dict = {"__name__": "__notebook__"}
    for i, cell in enumerate(cells):
        if cell["cell_type"] == "code":
            source = "".join(cell["source"])
            exec(compile(source, f"{name}[cell {i}]", "exec"), namespace)
    return namespace


def test_quickstart_notebook(tmp_path, monkeypatch):
    ns = _run("quickstart.ipynb", tmp_path, monkeypatch)
    assert bool(ns["sol"].succeeded)


@pytest.mark.slow
def test_alignment_notebook(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXFLOW_DATA", str(mnist_root()))
    ns = _run("alignment.ipynb", tmp_path, monkeypatch)
    assert bool(ns["sol"].succeeded)
    assert (tmp_path / "alignment_mnist.png").stat().st_size > 10_000
    # The reduced study still shows what the notebook is about: neurons align.
    assert ns["flow_m"]["align_plus"][-1] > 0.9
    # In the theorem's unit (sum-loss time t / n) every seed is within its bound, and
    # t1 / n falls with n.
    assert 0 < ns["worst"] < 1
    assert ns["slope"] < 0


@pytest.mark.slow
def test_spurious_notebook(tmp_path, monkeypatch):
    ns = _run("spurious.ipynb", tmp_path, monkeypatch)
    # Small init: every seed ends at the least-squares loss, a saddle.
    assert all(v.kind == "saddle" for v in ns["verdicts"])
    assert all(abs(v.loss - ns["mse"]) < 1e-6 for v in ns["verdicts"])
    assert (tmp_path / "spurious.png").stat().st_size > 10_000


@pytest.mark.slow
def test_single_neuron_notebook(tmp_path, monkeypatch):
    ns = _run("single_neuron.ipynb", tmp_path, monkeypatch)
    # Depth 3 is slower from a small initialisation; the ODEs matched the flow.
    assert ns["slopes"]["3"] < 0
    assert ns["gap"] < 1e-8
    assert (tmp_path / "neuron.png").stat().st_size > 10_000
