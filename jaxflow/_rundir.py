"""A run directory: checkpoints while an ensemble runs, its results when it is done.

- `checkpoint.npz`: every seed's solver state after the last finished segment, written
    atomically (a new file, then `os.replace`), with the run's fingerprint.
- `ensemble.nc`: the labelled results (`Ensemble.to_xarray`, netCDF4 via h5netcdf).
- `seeds.csv`: one row per seed (`Ensemble.summary`).
- `config.json`: the run's arguments, keys and library versions.
"""

import hashlib
import inspect
import json
import os
import platform
import re
import sys
from pathlib import Path

import equinox as eqx
import jax
import numpy as np

from ._results import Ensemble, named_arrays, status_of


CHECKPOINT = "checkpoint.npz"
RESULTS_FILE = "ensemble.nc"
TABLE = "seeds.csv"
CONFIG = "config.json"


def _stable_repr(x) -> str:
    """`repr`, with the memory addresses of functions nested in it removed."""
    return re.sub(r" at 0x[0-9a-f]+", "", repr(x))


def fingerprint(*parts) -> str:
    """A hash of what determines a run: its initial states, data, tolerances, segments,
    chunking and (by their repr) solver, controller, events and metrics."""
    digest = hashlib.sha256()
    for part in parts:
        for leaf in jax.tree.leaves(part):
            if eqx.is_array(leaf):
                leaf = np.ascontiguousarray(leaf)
                digest.update(f"{leaf.dtype}{leaf.shape}".encode())
                digest.update(leaf.tobytes())
            elif inspect.isfunction(leaf) or inspect.isbuiltin(leaf):
                # By name: a function's repr holds its address, new in every process.
                digest.update(f"{leaf.__module__}.{leaf.__qualname__}".encode())
            else:
                digest.update(_stable_repr(leaf).encode())
        digest.update(b"|")
    return digest.hexdigest()


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Checkpoint:
    def __init__(self, path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def save(self, segment: int, fingerprint: str, dynamic) -> None:
        leaves = {f"leaf{i}": x for i, x in enumerate(jax.tree.leaves(dynamic))}
        _atomic(
            self.path / CHECKPOINT,
            lambda f: np.savez(
                f, segment=segment, fingerprint=np.array(fingerprint), **leaves
            ),
        )

    def load(self, fingerprint: str, like):
        """The segments done and the states saved, or `(0, None)` if nothing is."""
        file = self.path / CHECKPOINT
        if not file.is_file():
            return 0, None
        with np.load(file) as saved:
            if str(saved["fingerprint"]) != fingerprint:
                raise ValueError(
                    f"solve_ensemble: `checkpoint_dir` {str(self.path)!r} holds a "
                    "checkpoint of a different run (other keys, data, tolerances, "
                    "segments or batch size). Use a new directory, or delete "
                    f"{CHECKPOINT} there to start again."
                )
            leaves, treedef = jax.tree.flatten(like)
            loaded = [saved[f"leaf{i}"] for i in range(len(leaves))]
            return int(saved["segment"]), jax.tree.unflatten(treedef, loaded)


def progress_bar(total: int, done: int, show: bool):
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, unit="segment", desc="jaxflow")


def update_bar(bar, st, running, num_seeds: int) -> None:
    if bar is None:
        return
    t = np.asarray(st.t)
    bar.set_postfix(
        finished=f"{num_seeds - int(running.sum())}/{num_seeds}",
        t_min=f"{t.min():.3g}",
        t_median=f"{np.median(t):.3g}",
    )
    bar.update(1)


def versions() -> dict[str, str]:
    import importlib.metadata

    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in ("jaxflow", "jax", "jaxlib", "diffrax", "equinox", "numpy"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "unknown"
    out["backend"] = jax.default_backend()
    return out


def write(path, ensemble: Ensemble, config: dict) -> None:
    """Write the results of a finished run to the directory `path`."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    data = ensemble.to_xarray()
    _atomic(path / RESULTS_FILE, lambda f: f.write(data.to_netcdf(engine="h5netcdf")))
    table = ensemble.summary().to_csv()
    _atomic(path / TABLE, lambda f: f.write(table.encode()))
    text = json.dumps(config | {"versions": versions()}, indent=1, default=str)
    _atomic(path / CONFIG, lambda f: f.write(text.encode()))


def load_ensemble(path, like=None) -> Ensemble:
    """Read back the results a `jaxflow.solve_ensemble(..., checkpoint_dir=path)` run
    (or `jaxflow ensemble`) wrote.

    **Arguments:**

    - `path`: the run directory.
    - `like`: optional, one model of the kind the run evolved (e.g. `init(key)`): then
        `final` is that model with every array stacked over seeds. Otherwise `final` is
        a dict field name -> array.

    **Returns:**

    A `jaxflow.Ensemble`, equal to the one the run returned (`ys` only if the run saved
    models, as a dict).

    **Raises:**

    `FileNotFoundError` if the run has not finished writing its results.
    """
    import xarray as xr

    path = Path(path)
    file = path / RESULTS_FILE
    if not file.is_file():
        raise FileNotFoundError(
            f"load_ensemble: no {RESULTS_FILE} in {str(path)!r}: not a run directory, "
            "or the run has not finished (its checkpoint resumes it)."
        )
    data = xr.load_dataset(file, engine="h5netcdf")
    stat_names = [n for n in data.data_vars if n.startswith("num_")] + ["max_steps"]
    final = {
        n.removeprefix("final_"): data[n].values
        for n in data.data_vars
        if n.startswith("final_")
    }
    ys = {
        n.removeprefix("ys_"): data[n].values
        for n in data.data_vars
        if n.startswith("ys_")
    }
    if like is not None:
        params, static = eqx.partition(like, eqx.is_array)
        leaves = [final[name] for name in named_arrays(params)]
        final = eqx.combine(
            jax.tree.unflatten(jax.tree.structure(params), leaves), static
        )
    skip = {"t_final", "status", "status_name", "atol"} | set(stat_names)
    metrics = {
        n: data[n].values
        for n in data.data_vars
        if n not in skip
        and not n.startswith(("final_", "ys_", "event_time_"))
        and data[n].dims[:2] == ("seed", "time")
    }
    return Ensemble(
        seeds=data["seed"].values,
        ts=data["time"].values,
        metrics=metrics,
        event_times={
            n.removeprefix("event_time_"): data[n].values
            for n in data.data_vars
            if n.startswith("event_time_")
        },
        final=final,
        ys=ys or None,
        t_final=data["t_final"].values,
        status=status_of(data["status"].values.astype(np.int32)),
        stats={n: data[n].values for n in stat_names if n in data},
        rtol=float(data.attrs["rtol"]),
        atol=data["atol"].values,
        solver=str(data.attrs["solver"]),
        segments=np.atleast_1d(data.attrs["segments"]),
    )


def show(path) -> str:
    """A few lines on a run directory: configuration, statuses, times reached, events,
    final losses; or how far an unfinished run got."""
    path = Path(path)
    lines = [f"run           {path}"]
    config_file = path / CONFIG
    if config_file.is_file():
        config = json.loads(config_file.read_text())
        lines += [
            f"model         {config.get('model')}",
            f"seeds         {config.get('seeds')}, t1={config.get('t1')}, "
            f"rtol={config.get('rtol')}, kinks={config.get('kinks')}, "
            f"solver={config.get('solver')}",
            "versions      "
            + ", ".join(f"{k} {v}" for k, v in config.get("versions", {}).items()),
        ]
    if not (path / RESULTS_FILE).is_file():
        if (path / CHECKPOINT).is_file():
            with np.load(path / CHECKPOINT) as saved:
                lines.append(
                    f"unfinished    {int(saved['segment'])} segments done; run the same "
                    "call again to resume"
                )
            return "\n".join(lines)
        raise FileNotFoundError(f"show: {str(path)!r} is not a jaxflow run directory.")
    ens = load_ensemble(path)
    table = ens.summary()
    counts = table["status"].value_counts()
    lines.append("status        " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    described = table.drop(columns=["status"]).describe(percentiles=[0.5]).T
    described = described[["count", "min", "50%", "max"]].rename(
        columns={"50%": "median"}
    )
    lines.append("")
    lines.append(described.to_string(float_format=lambda x: f"{x:.6g}"))
    return "\n".join(lines)
