import dataclasses
from typing import Any

import equinox as eqx
import jax
import numpy as np
from jaxtyping import Array, Float, Int

from ._solution import RESULTS, readable, status_name, succeeded


class Ensemble(eqx.Module):
    """The result of `jaxflow.solve_ensemble`: one `jaxflow.Solution` per seed, stacked
    (numpy arrays, on the host).

    **Fields:**

    - `seeds`: each seed's number in the run, `0 ... seeds-1` in the order of `keys`
        (of one part of a run, `solve_ensemble(..., part=...)`: the part's numbers).
    - `ts`: the saved times, shape `(times,)`.
    - `metrics`: dict name -> array of shape `(seeds, times, ...)`; `inf` after a
        seed's failure, `nan` after a terminal event ended its solve.
    - `event_times`: dict name -> `(seeds, ...)` first times (nan where not reached).
    - `final`: the models at their end time, stacked over seeds (after
        `jaxflow.load_ensemble`: a dict of their arrays, unless `like` is given).
    - `ys`: the models at `ts` (`(seeds, times, ...)` arrays), or `None` (default).
    - `t_final`: `(seeds,)` the time each seed's solve reached.
    - `status`: `(seeds,)` `jaxflow.RESULTS`; `status_name` and `messages` say it in
        words, `succeeded` is true for `successful` and `event_occurred`.
    - `stats`: dict name -> `(seeds,)` step counts, as in `jaxflow.Solution.stats`.
    - `rtol`, `atol`: the tolerances (`atol` per seed).
    - `solver`: the integrator's name. `segments`: the segments' stop times.
    """

    seeds: Int[Array, " seeds"]
    ts: Float[Array, " times"]
    metrics: dict[str, Array]
    event_times: dict[str, Array]
    final: Any
    ys: Any
    t_final: Float[Array, " seeds"]
    status: RESULTS = eqx.field(converter=readable)
    stats: dict[str, Array]
    rtol: float = eqx.field(static=True)
    atol: Float[Array, " seeds"]
    solver: str = eqx.field(static=True)
    segments: Float[Array, " segments"]

    @property
    def num_seeds(self) -> int:
        return len(self.seeds)

    @property
    def succeeded(self) -> np.ndarray:
        return np.asarray(succeeded(self.status))

    @property
    def status_name(self) -> np.ndarray:
        return np.asarray(status_name(self.status), dtype=object).reshape(-1)

    @property
    def messages(self) -> list[str]:
        """Each seed's status in words (the name, and the reason for a failure)."""
        names = self.status_name
        out = []
        for name, value in zip(names, np.asarray(self.status._value).reshape(-1)):
            text = RESULTS[status_of(value)]
            out.append(name if not text or name == "successful" else f"{name}: {text}")
        return out

    def _neurons(self) -> int | None:
        v = (
            self.final["v"]
            if isinstance(self.final, dict)
            else getattr(self.final, "v", None)
        )
        return None if v is None else int(np.shape(v)[-1])

    def _dims(self, name: str, shape, lead: tuple[str, ...]) -> tuple[str, ...]:
        width = self._neurons()
        rest = shape[len(lead) :]
        return lead + tuple(
            "neuron" if (n == width and i == 0) else f"{name}_dim{i}"
            for i, n in enumerate(rest)
        )

    def to_xarray(self):
        """The results as an `xarray.Dataset` labelled `seed x time (x neuron)`: every
        metric, `event_time_<name>`, `t_final`, `status` (code) and `status_name`, the
        statistics as `stats_<name>` (a metric may share a statistic's name:
        `num_crossings` is both), `atol` and the final parameters as `final_<field>`."""
        import xarray as xr

        data = {}
        for name, x in self.metrics.items():
            x = np.asarray(x)
            data[name] = (self._dims(name, x.shape, ("seed", "time")), x)
        for name, x in self.event_times.items():
            x = np.asarray(x)
            key = f"event_time_{name}"
            data[key] = (self._dims(key, x.shape, ("seed",)), x)
        for name, x in self.stats.items():
            data[f"stats_{name}"] = (("seed",), np.asarray(x))
        data["t_final"] = (("seed",), np.asarray(self.t_final))
        data["status"] = (("seed",), np.asarray(self.status._value).reshape(-1))
        data["status_name"] = (("seed",), self.status_name.astype(str))
        data["atol"] = (("seed",), np.asarray(self.atol))
        for prefix, tree, lead in (
            ("final", self.final, ("seed",)),
            ("ys", self.ys, ("seed", "time")),
        ):
            for field, x in named_arrays(tree).items():
                key = f"{prefix}_{field}"
                data[key] = (self._dims(key, x.shape, lead), x)
        coords = {"seed": np.asarray(self.seeds), "time": np.asarray(self.ts)}
        if self._neurons() is not None:
            coords["neuron"] = np.arange(self._neurons())
        return xr.Dataset(
            data,
            coords=coords,
            attrs={
                "rtol": self.rtol,
                "solver": self.solver,
                "segments": np.asarray(self.segments),
            },
        )

    def summary(self):
        """A `pandas.DataFrame`, one row per seed: status, time reached, final loss and
        gradient norm, largest conserved-quantity drift, steps, gradient evaluations,
        and event times `t_<event>` (for an event with several components:
        `t_<event>_last`, when the last one happened, and `<event>_count`, how many
        did)."""
        import pandas as pd

        table = {
            "seed": np.asarray(self.seeds),
            "status": self.status_name.astype(str),
            "t_final": np.asarray(self.t_final),
        }
        for name in ("loss", "grad_norm"):
            if name in self.metrics:
                table[name] = last_finite(np.asarray(self.metrics[name]))
        if "conserved_drift" in self.metrics:
            drift = np.asarray(self.metrics["conserved_drift"])
            top = np.max(np.where(np.isfinite(drift), drift, -np.inf), axis=1)
            table["max_drift"] = np.where(np.isfinite(top), top, np.nan)
        for name in ("num_accepted_steps", "num_rejected_steps", "num_vf_evals"):
            table[name] = np.asarray(self.stats[name])
        for name, x in self.event_times.items():
            x = np.asarray(x).reshape(self.num_seeds, -1)
            if x.shape[1] == 1:
                table[f"t_{name}"] = x[:, 0]
            else:
                happened = ~np.isnan(x)
                table[f"t_{name}_last"] = np.where(
                    happened.all(1),
                    np.nanmax(np.where(happened, x, -np.inf), 1),
                    np.nan,
                )
                table[f"{name}_count"] = happened.sum(1)
        return pd.DataFrame(table).set_index("seed")


def map_seeds(fn, *ensembles: Ensemble) -> Ensemble:
    """`fn` over the per-seed arrays of `ensembles`, leaf by leaf (`jax.tree.map`); the
    run's `ts` and `segments`, which are not per seed, from the first."""
    first = ensembles[0]
    rows = [dataclasses.replace(e, ts=None, segments=None) for e in ensembles]
    return dataclasses.replace(
        jax.tree.map(fn, *rows), ts=first.ts, segments=first.segments
    )


def concatenate(ensembles: list[Ensemble]) -> Ensemble:
    """The ensembles of disjoint sets of seeds of one run (its parts), as one: every
    per-seed array joined along the seed axis, in the order given."""
    return map_seeds(lambda *xs: np.concatenate(xs), *ensembles)


def status_of(value) -> RESULTS:
    return eqx.tree_at(lambda r: r._value, RESULTS.successful, np.asarray(value))


def named_arrays(tree) -> dict[str, np.ndarray]:
    """The arrays of a model (or a dict of them), by field name."""
    if tree is None:
        return {}
    if isinstance(tree, dict):
        return {k: np.asarray(v) for k, v in tree.items()}
    out = {}
    for path, x in jax.tree_util.tree_leaves_with_path(tree):
        if eqx.is_array(x):
            name = jax.tree_util.keystr(path).strip(".").replace(".", "_")
            out[name.replace("[", "_").replace("]", "").replace("'", "")] = np.asarray(
                x
            )
    return out


def last_finite(x: np.ndarray) -> np.ndarray:
    """Per row, the last finite entry (nan if none)."""
    finite = np.isfinite(x)
    last = np.where(finite.any(1), x.shape[1] - 1 - np.argmax(finite[:, ::-1], 1), 0)
    return np.where(finite.any(1), x[np.arange(len(x)), last], np.nan)
