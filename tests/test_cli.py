import subprocess
import sys

import pytest

from helpers import closed_url


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


def test_align_writes_summary_and_figures(tmp_path, capsys):
    import json

    import numpy as np

    from jaxflow._cli import main

    out = tmp_path / "sep"
    argv = ["align", "--data", "separable", "--n", "16", "--d", "5", "--width", "8"]
    argv += ["--seeds", "3", "--t1", "40", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "t1 (all in cones)" in printed and "t1 bound" in printed
    assert "sum-loss time t/n (n=16)" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["seeds"]) == 3
    assert summary["accuracy"]["statuses"] == ["successful"]
    assert summary["accuracy"]["max_conserved_drift"] < 1e-8
    for seed in summary["seeds"]:
        assert len(seed["aligned"]) == 8 and len(seed["in_cone"]) == 8
        assert seed["t1"] is not None and 0 < seed["t1"] < 40
        # t1 is when all neurons are in their cones: no neuron's entry comes later.
        entries = [t for t in seed["in_cone"] if t is not None]
        assert max(entries) <= seed["t1"] + 1e-9
        # The bound is in the theorem's unit, sum-loss time: t / n for the mean loss.
        assert np.isclose(seed["sum_loss"]["t1"], seed["t1"] / 16)
        if seed["t1_bound"] is not None:
            ratio = seed["t1"] / 16 / seed["t1_bound"]
            assert np.isclose(seed["t1_over_bound"], ratio)
    for name in ("alignment.png", "times.png", "ensemble.nc", "seeds.csv"):
        assert (out / name).stat().st_size > 0


@pytest.mark.slow  # (a spurious run's compilation)
def test_spurious_takes_the_unbalanced_init(tmp_path, capsys):
    import json

    from jaxflow._cli import main

    out = tmp_path / "bf"
    main(
        ["spurious", "--width", "10", "--seeds", "2", "--t1", "500", "--init",
         "gaussian", "--escape-time", "10", "--quiet", "--out", str(out)]
    )  # fmt: skip
    assert "gaussian init scale 0.001" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["init"].startswith("gaussian ('unbalanced')")
    assert summary["of"] == 2 and all(r["verdict"] for r in summary["seeds"])


@pytest.mark.slow  # (48 s; the README command stays under 10 minutes; CI runs it)
def test_spurious_writes_verdicts_and_figure(tmp_path, capsys):
    import json

    from jaxflow._cli import main

    out = tmp_path / "bf"
    code = main(
        ["spurious", "--width", "10", "--seeds", "2", "--t1", "2000", "--escape-time",
         "50", "--quiet", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "least squares beta=[-0.061538, 0.64359]  MSE=0.175043" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["of"] == 2 and summary["spurious"] == 2
    assert summary["settled"] == 2 and summary["spurious_of_settled"] == 1.0
    for row in summary["seeds"]:
        v = row["verdict"]
        assert v["kind"] == "saddle" and v["escape"]["loss_decrease"] > 0
        assert v["polish"]["grad_norm_after"] < 1e-12
    assert (out / "spurious.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "ensemble.nc").is_file() and (out / "seeds.csv").is_file()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["ensemble", "--seeds", "0"], "argument --seeds: must be a positive int, got '0'"),
        (["ensemble", "--t1", "-1"], "argument --t1: must be a positive float, got '-1'"),
        (["align", "--rtol", "0"], "argument --rtol: must be a positive float, got '0'"),
        (["demo", "--width", "0"], "argument --width: must be a positive int, got '0'"),
        (["spurious", "--t1", "nan"], "argument --t1: must be a positive float, got 'nan'"),
        (["neuron", "--seeds", "two"], "argument --seeds: must be a positive int, got 'two'"),
        (["align", "--digits", "3", "10"], "argument --digits: must be a digit 0..9, got '10'"),
    ],
)  # fmt: skip
def test_bad_option_values_are_argparse_errors(tmp_path, capsys, argv, message):
    from jaxflow._cli import main

    with pytest.raises(SystemExit) as exit:
        main([*argv, "--out", str(tmp_path / "run")])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: jaxflow " + argv[0]) and "Traceback" not in err
    assert err.splitlines()[-1] == f"jaxflow {argv[0]}: error: {message}"


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["align", "--data", "mnist", "--digits", "3", "3"],
            "mnist: `digits` must be two distinct ints in 0..9, or None (all ten), got (3, 3).",
        ),
        (  # offline: JAXFLOW_MNIST_MIRROR is a closed local port
            ["ensemble", "--data", "mnist", "--root", "{tmp}/nonexistent"],
            "mnist: could not download train-images-idx3-ubyte.gz. Tried: ",
        ),
    ],
)
def test_library_errors_are_one_line(tmp_path, capsys, monkeypatch, argv, message):
    """A bad argument that only jaxflow can judge: its message, no traceback."""
    from jaxflow._cli import main

    monkeypatch.delenv("JAXFLOW_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("JAXFLOW_MNIST_MIRROR", closed_url())
    argv = [a.format(tmp=tmp_path) for a in argv]
    with pytest.raises(SystemExit) as exit:
        main([*argv, "--seeds", "1", "--quiet", "--out", str(tmp_path / "run")])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"jaxflow {argv[0]}: error: {message.format(tmp=tmp_path)}")
    assert err.count("\n") == 1 and "Traceback" not in err
