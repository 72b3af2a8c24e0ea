"""A run directory: checkpoints while an ensemble runs, its results when it is done.

- `lock`: taken by `solve_ensemble` for the whole run (created atomically, holding the
    holder's host name and PID) and removed at its end, also when it raises. A second
    run on the same directory fails with a `ValueError` naming the holder. The holder
    refreshes the lock's modification time every _BEAT seconds; a lock left by a
    process that is no longer running on this host, or not refreshed for _STALE
    seconds by one on another host, is taken over, with a warning.
- `config.json`: the run's arguments, keys, library versions and fingerprint, written
    when the run starts (`jaxflow show` describes an unfinished run from it) and again
    when it finishes.
- `checkpoint.npz`: every seed's solver state after the last finished segment, with
    the run's fingerprint.
- `ensemble.nc`: the labelled results (`Ensemble.to_xarray`, netCDF4 via h5netcdf),
    with the run's fingerprint.
- `seeds.csv`: one row per seed (`Ensemble.summary`).

A run split into N parts (`solve_ensemble(..., part=(I, N))`, or one part per process
of a multi-process JAX run) has instead a `config.json` of the whole run (its settings
and a fingerprint of them, written by the first part to start) and a directory
`parts/I-of-N` per part, which is a run directory of the above kind for the part's
seeds. A part whose settings differ from the recorded ones is refused, naming them;
`load_ensemble` and `show` join the finished parts.

Every file is written atomically: a new file under a name of this process's own, then
`os.replace`. The fingerprint hashes what determines the run: initial states, data,
tolerances, segments, batch size, and solver, controller, events and metrics field by
field, functions by what they compute (code, defaults and closure values). A directory
that holds a checkpoint or results of a different run (another fingerprint) is refused
with a `ValueError`, and so is an unreadable (truncated or corrupted) checkpoint or
results file: the error names the file and how to start again. Two runs are never
mixed in one directory.
"""

import contextlib
import dataclasses
import datetime
import functools
import hashlib
import inspect
import json
import os
import platform
import re
import socket
import sys
import threading
import time
import types
import uuid
import warnings
import zipfile
import zlib
from pathlib import Path

import equinox as eqx
import jax
import numpy as np

from ._results import Ensemble, concatenate, named_arrays, status_of


LOCK = "lock"
CHECKPOINT = "checkpoint.npz"
RESULTS_FILE = "ensemble.nc"
TABLE = "seeds.csv"
CONFIG = "config.json"
PARTS = "parts"
_RUN_FILES = f"{CHECKPOINT}, {RESULTS_FILE}, {TABLE} and {CONFIG}"
# What reading a truncated or corrupted file raises (h5py's errors are OSErrors).
_UNREADABLE = (zipfile.BadZipFile, ValueError, EOFError, OSError, KeyError, zlib.error)
_HOST = socket.gethostname()
# The holder of a lock refreshes its modification time every _BEAT seconds; the lock of
# a process on another host (whose PID cannot be looked up from here) is stale once it
# has not been refreshed for _STALE seconds.
_BEAT, _STALE = 30.0, 300.0


def _stable_repr(x) -> str:
    """`repr`, with the memory addresses of objects nested in it removed."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(x))


def fingerprint(*parts) -> str:
    """A hash of what determines a run: its initial states, data, tolerances, segments,
    chunking, solver, controller, events and metrics. The same in every process:
    functions enter by what they compute, not by their address or name alone."""
    digest = hashlib.sha256()
    for part in parts:
        _feed(digest, part, set())
        digest.update(b"|")
    return digest.hexdigest()


def _feed(digest, x, above: set) -> None:
    """Hash `x` into `digest`: arrays by dtype, shape and bytes; functions by their
    code, defaults and closure; Modules and containers field by field (static fields
    included); anything else by its repr without addresses. `above` holds the ids of
    the objects `x` is nested in: a recursive closure would otherwise never end."""

    def put(text: str) -> None:
        digest.update(text.encode())

    if x is None or isinstance(x, bool | int | float | complex | str | bytes):
        put(f"{type(x).__name__}:{x!r};")
        return
    if eqx.is_array(x):
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(
            x.dtype, jax.dtypes.prng_key
        ):
            x = jax.random.key_data(x)
        x = np.ascontiguousarray(x)
        put(f"array:{x.dtype}{x.shape};")
        if x.dtype == object:  # its bytes are addresses
            _feed(digest, x.tolist(), above)
        else:
            digest.update(x.tobytes())
        return
    if id(x) in above:
        put("cycle;")
        return
    above = above | {id(x)}
    if isinstance(x, types.CodeType):
        put("code:")
        digest.update(x.co_code)
        _feed(digest, x.co_names, above)
        _feed(digest, x.co_consts, above)
    elif inspect.isfunction(x):
        put(f"function:{x.__module__}.{x.__qualname__};")
        _feed(digest, x.__code__, above)
        _feed(digest, x.__defaults__, above)
        _feed(digest, x.__kwdefaults__, above)
        for cell in x.__closure__ or ():
            try:
                contents = cell.cell_contents
            except ValueError:  # a cell not yet filled
                put("empty cell;")
            else:
                _feed(digest, contents, above)
    elif inspect.ismethod(x):
        put("method:")
        _feed(digest, x.__func__, above)
        _feed(digest, x.__self__, above)
    elif isinstance(x, functools.partial):
        put("partial:")
        for part in (x.func, x.args, x.keywords):
            _feed(digest, part, above)
    elif isinstance(x, type):
        put(f"type:{x.__module__}.{x.__qualname__};")
    elif dataclasses.is_dataclass(x):
        put(f"{type(x).__module__}.{type(x).__qualname__}(")
        for field in dataclasses.fields(x):
            put(f"{field.name}=")
            _feed(digest, getattr(x, field.name, "<unset>"), above)
        put(")")
    elif isinstance(x, dict):
        put(f"dict{len(x)}(")
        for key, value in x.items():
            _feed(digest, key, above)
            _feed(digest, value, above)
        put(")")
    elif isinstance(x, list | tuple):
        put(f"{type(x).__name__}{len(x)}(")
        for item in x:
            _feed(digest, item, above)
        put(")")
    elif isinstance(x, set | frozenset):
        # In a sorted order: a set of strings iterates in an order new in every process.
        put(f"set{len(x)}:" + ",".join(sorted(fingerprint(item) for item in x)) + ";")
    elif (inner := getattr(x, "__wrapped__", None)) is not None:  # jax.custom_jvp, jit
        put(f"{type(x).__qualname__}:{getattr(x, '__qualname__', '')};")
        _feed(digest, inner, above)
    else:
        put(f"{type(x).__module__}.{type(x).__qualname__}:{_stable_repr(x)};")


def _atomic(path: Path, write, exclusive: bool = False) -> bool:
    """Write `path` whole or not at all; with `exclusive`, only if it does not exist
    yet. Whether it was written."""
    # A name of this process's own: two processes writing at once never share one.
    tmp = path.with_name(f"{path.name}.{_HOST}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if not exclusive:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)  # fails if it exists: of two processes, one writes
        except FileExistsError:
            return False
        return True
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _readable(file: Path, fname: str, what: str, fix: str):
    """Turn the errors of reading a truncated or corrupted `file` into a ValueError
    that names it and says how to start again."""
    try:
        yield
    except _UNREADABLE as e:
        raise ValueError(
            f"{fname}: cannot read the {what} {str(file)!r} ({type(e).__name__}: {e}); "
            f"it is truncated or corrupted. {fix}"
        ) from e


def _checkpoint_readable(file: Path, fname: str):
    return _readable(
        file,
        fname,
        "checkpoint",
        "Delete it to start the run from scratch (or put back a good copy).",
    )


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


class RunDir:
    """The run directory of one `solve_ensemble` call. A context manager: on entry it
    takes the directory's lock (creating the directory), on exit it releases it."""

    def __init__(
        self,
        path,
        config: dict,
        fname: str = "solve_ensemble",
        what: str = "the run directory `checkpoint_dir`",
    ):
        self.path = Path(path)
        self.fname = fname
        self.what = what  # how messages name the directory
        self.config = config  # the run's arguments, for `config.json`
        self.lock = self.path / LOCK
        self._mine = json.dumps(
            {"host": _HOST, "pid": os.getpid(), "since": _now(), "id": uuid.uuid4().hex}
        )

    def __enter__(self) -> "RunDir":
        self._whole_run()
        self.path.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # a lock released or taken over meanwhile: look again
            try:
                fd = os.open(self.lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                pass
            else:
                with os.fdopen(fd, "w") as f:
                    f.write(self._mine)
                self._beating = threading.Event()
                threading.Thread(target=self._heartbeat, daemon=True).start()
                return self
            text = _read(self.lock)
            if text is not None:
                holder = _lock_holder(text)
                if holder is None or _alive(holder, self.lock):
                    raise ValueError(self._held(holder))
                self._take_over(text, holder)
        raise ValueError(self._held(_lock_holder(_read(self.lock) or "")))

    def _heartbeat(self) -> None:
        """Refresh the lock's modification time while the run holds it: the sign of
        life that other hosts go by."""
        while not self._beating.wait(_BEAT):
            if _read(self.lock) != self._mine:
                return
            with contextlib.suppress(OSError):
                os.utime(self.lock)

    def _take_over(self, text: str, holder: dict) -> None:
        """Remove a stale lock: moved aside under a name of our own, so that of two
        processes taking it over at once only one does; put back if what moved is
        not what was found stale (another process took it over first)."""
        aside = self.lock.with_name(f"{self.lock.name}.{_HOST}.{os.getpid()}.stale")
        try:
            os.replace(self.lock, aside)
        except FileNotFoundError:
            return
        moved = _read(aside)
        if moved != text:
            with contextlib.suppress(OSError):
                os.link(aside, self.lock)
            aside.unlink(missing_ok=True)
            raise ValueError(self._held(_lock_holder(moved or "")))
        aside.unlink(missing_ok=True)
        gone = (
            f"on this host ({_HOST}), is no longer running (killed?)"
            if holder["host"] == _HOST
            else f"on host {holder['host']!r}, has not refreshed it for over "
            f"{_STALE:.0f} s (a running holder does every {_BEAT:.0f} s)"
        )
        warnings.warn(
            f"{self.fname}: taking over the lock of {self.what} {str(self.path)!r}: "
            f"its holder, process {holder['pid']} {gone}. The run resumes from its "
            "checkpoint.",
            stacklevel=4,
        )

    def _held(self, holder: dict | None) -> str:
        if holder is None:
            who = f"has a lock file {str(self.lock)!r} that cannot be read"
        else:
            since = f", taken {holder['since']}" if "since" in holder else ""
            who = (
                f"is in use by process {holder['pid']} on host {holder['host']!r} "
                f"(its lock file {str(self.lock)!r}{since})"
            )
        return (
            f"{self.fname}: {self.what} {str(self.path)!r} "
            f"{who}. Wait for that run to end or use another directory. (A lock whose "
            f"holder is gone is taken over: on this host at once, from another host "
            f"once it has not been refreshed for {_STALE:.0f} s.)"
        )

    def __exit__(self, *exc) -> None:
        self._beating.set()
        if _read(self.lock) == self._mine:
            self.lock.unlink(missing_ok=True)

    def _whole_run(self) -> None:
        """Refuse a directory that holds a run split into parts."""
        parts = _config(self.path).get("parts")
        if parts is not None:
            raise ValueError(
                f"{self.fname}: {self.what} {str(self.path)!r} holds a run split into "
                f"{parts} parts; solve its parts (`part=(I, {parts})`), or use another "
                "directory for a run not split into parts."
            )

    def _different(self, what: str) -> ValueError:
        return ValueError(
            f"{self.fname}: {self.what} {str(self.path)!r} holds {what} of a "
            "different run (other keys, data, tolerances, solver, events, metrics, "
            "segments or batch size). Use a new directory, or delete its "
            f"{_RUN_FILES} to start again."
        )

    def load(self, fingerprint: str, like):
        """The segments done and the states saved, or `(0, None)` if nothing is.
        Raises if the directory holds a checkpoint or results of another run."""
        # Again: a part may have recorded its run since this one took the lock.
        self._whole_run()
        done, loaded = 0, None
        file = self.path / CHECKPOINT
        if file.is_file():
            with _checkpoint_readable(file, self.fname), np.load(file) as saved:
                theirs = str(saved["fingerprint"])
                if theirs == fingerprint:
                    leaves, treedef = jax.tree.flatten(like)
                    loaded = [saved[f"leaf{i}"] for i in range(len(leaves))]
                    done, loaded = int(saved["segment"]), treedef.unflatten(loaded)
            if theirs != fingerprint:
                raise self._different("a checkpoint")
        file = self.path / RESULTS_FILE
        if file.is_file():
            theirs = _results(file, self.fname, attrs_only=True).get("fingerprint")
            if theirs != fingerprint:
                raise self._different("the results")
        return done, loaded

    def start(self, fingerprint: str) -> None:
        """Write `config.json` as the run starts: all that is known then."""
        old = _config(self.path)
        # A resumed run keeps the time it first started.
        same = old.get("fingerprint") == fingerprint
        self.config = self.config | {
            "fingerprint": fingerprint,
            "versions": versions(),
            "started": old.get("started") if same else _now(),
            "finished": None,
        }
        self._write_config()

    def _still_mine(self) -> None:
        """Raise if another process took the lock over (it thought this one gone)."""
        if _read(self.lock) != self._mine:
            holder = _lock_holder(_read(self.lock) or "")
            who = (
                ""
                if holder is None
                else f" by process {holder['pid']} on {holder['host']!r}"
            )
            raise RuntimeError(
                f"{self.fname}: the lock of {self.what} {str(self.path)!r} was taken "
                f"over{who} while this process held it (the lock was not refreshed "
                f"for {_STALE:.0f} s: a stalled process, or hosts whose clocks "
                "differ). This process stops; the other one goes on with the run."
            )

    def save(self, segment: int, fingerprint: str, dynamic) -> None:
        self._still_mine()
        leaves = {f"leaf{i}": x for i, x in enumerate(jax.tree.leaves(dynamic))}
        _atomic(
            self.path / CHECKPOINT,
            lambda f: np.savez(
                f, segment=segment, fingerprint=np.array(fingerprint), **leaves
            ),
        )

    def finish(self, ensemble: Ensemble, fingerprint: str) -> None:
        """Write the results of the finished run, then complete `config.json`."""
        self._still_mine()
        data = ensemble.to_xarray()
        data.attrs["fingerprint"] = fingerprint
        _atomic(
            self.path / RESULTS_FILE,
            lambda f: f.write(data.to_netcdf(engine="h5netcdf")),
        )
        table = ensemble.summary().to_csv()
        _atomic(self.path / TABLE, lambda f: f.write(table.encode()))
        self.config["finished"] = _now()
        self._write_config()

    def _write_config(self) -> None:
        text = json.dumps(self.config, indent=1, default=str)
        _atomic(self.path / CONFIG, lambda f: f.write(text.encode()))


def _read(file: Path) -> str | None:
    """A small text file's contents, or None if it is not there (or unreadable)."""
    try:
        return file.read_text()
    except (OSError, UnicodeDecodeError):
        return None


def _lock_holder(text: str) -> dict | None:
    """The host and PID in a lock file's text, or None if they cannot be read."""
    try:
        holder = json.loads(text)
        if isinstance(holder["host"], str) and int(holder["pid"]) > 0:
            return holder
    except (ValueError, TypeError, KeyError):
        pass
    return None


def _alive(holder: dict, lock: Path) -> bool:
    """Whether the holder of `lock` may still be running: on this host, whether its
    process is; on another, whether it refreshed the lock in the last _STALE seconds."""
    if holder["host"] != _HOST:
        try:
            return time.time() - lock.stat().st_mtime < _STALE
        except FileNotFoundError:
            return False
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def progress_bar(total: int, done: int, show: bool, unit: str = "segment"):
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, unit=unit, desc="jaxflow")


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


def libraries() -> dict[str, str]:
    """The versions that decide a run's bits: the libraries' and the backend's."""
    return {k: v for k, v in versions().items() if k not in ("python", "platform")}


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


def _results(file: Path, fname: str, attrs_only: bool = False):
    """`file` (an `ensemble.nc`) loaded as an xarray Dataset, or only its attributes;
    a ValueError that names it if it cannot be read."""
    import xarray as xr

    fix = (
        f"Delete it (and {TABLE}) and run the same call again to write it anew from "
        f"the run's {CHECKPOINT}, or start the run again in a new directory."
    )
    with _readable(file, fname, "results", fix):
        if attrs_only:
            with xr.open_dataset(file, engine="h5netcdf") as data:
                return dict(data.attrs)
        return xr.load_dataset(file, engine="h5netcdf")


# Entries of a `config.json` that are not settings: the parts of a run may differ in
# them.
_NOT_SETTINGS = {"devices", "versions", "started", "finished"}


def _config(path: Path) -> dict:
    """A run directory's `config.json`, or {} if it has none (or it is unreadable)."""
    try:
        config = json.loads(_read(path / CONFIG) or "{}")
    except ValueError:
        return {}
    return config if isinstance(config, dict) else {}


def settings(config: dict) -> dict:
    """`config` as `config.json` holds it (JSON types, no memory addresses in reprs):
    the form in which the parts of a run compare their settings."""
    text = json.dumps(config, default=_stable_repr)
    return json.loads(re.sub(r" at 0x[0-9a-fA-F]+", "", text))


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def recorded_parts(path) -> int | None:
    """How many parts the run in the directory `path` is split into (1: a run not
    split into parts), or None if `path` holds no run yet."""
    path = Path(path)
    parts = _config(path).get("parts")
    if parts is not None:
        return int(parts)
    if any((path / f).exists() for f in (CONFIG, LOCK, CHECKPOINT, RESULTS_FILE)):
        return 1
    return None


def part_dir(path, part: tuple[int, int]) -> Path:
    """The directory of part `part = (I, N)` of the run in `path`."""
    return Path(path) / PARTS / f"{part[0]}-of-{part[1]}"


def join(path, config: dict, part: tuple[int, int], fname: str) -> Path:
    """Make `path` the directory of the run split into parts that `config` describes
    (its settings, `parts` and a `fingerprint` of them), or check that it is the run
    recorded there; a part of another run is refused, naming the settings that
    differ. Returns the directory of part `part`."""
    path = Path(path)
    name = f"part {part[0]}/{part[1]}"
    whole = [f for f in (LOCK, CHECKPOINT, RESULTS_FILE) if (path / f).exists()]
    if whole:
        raise ValueError(
            f"{fname}: `checkpoint_dir` {str(path)!r} holds a run not split into parts "
            f"(its {', '.join(whole)}), so {name} cannot join it. Use another "
            "directory."
        )
    path.mkdir(parents=True, exist_ok=True)
    config = settings(config)
    text = json.dumps(config | {"versions": versions(), "started": _now()}, indent=1)
    # The first part to start records the run; the others compare with it.
    _atomic(path / CONFIG, lambda f: f.write(text.encode()), exclusive=True)
    recorded = _config(path)
    if recorded.get("parts") is None:
        raise ValueError(
            f"{fname}: `checkpoint_dir` {str(path)!r} holds a run not split into parts "
            f"(or its {CONFIG} cannot be read), so {name} cannot join it. Use another "
            "directory."
        )
    differ = [
        key
        for key in sorted(set(recorded) | set(config))
        if key not in _NOT_SETTINGS and recorded.get(key) != config.get(key)
    ]
    if differ:
        named = [key for key in differ if key != "fingerprint"]
        listed = "; ".join(
            f"{key}: {_short(recorded.get(key))} in the run, {_short(config.get(key))} "
            "here"
            for key in named
        ) or (
            "the initial models, data, functions or the arguments' types (the settings "
            "shown in config.json are the same, their fingerprint differs)"
        )
        raise ValueError(
            f"{fname}: {name} differs from the run in `checkpoint_dir` {str(path)!r} "
            f"({listed}). The parts of a run share every setting but `part`; use "
            "another directory for another run."
        )
    return part_dir(path, part)


def _parts(path: Path, config: dict, fname: str) -> tuple[list[int], dict[int, str]]:
    """The finished parts of the run split into parts in `path`, and how far each
    other part got."""
    n = int(config["parts"])
    finished, missing = [], {}
    for i in range(n):
        where = part_dir(path, (i, n))
        own = _config(where)
        if own and own.get("run") != config.get("fingerprint"):
            raise ValueError(
                f"{fname}: the part directory {str(where)!r} belongs to another run than "
                f"{str(path)!r} (its {CONFIG} names another run's fingerprint). Move "
                "it away."
            )
        if (where / RESULTS_FILE).is_file():
            finished.append(i)
        else:
            missing[i] = _progress(where, len(config.get("segments", [])))
    return finished, missing


def _progress(path: Path, segments: int) -> str:
    """How far the unfinished run in `path` got, and who runs it."""
    file = path / CHECKPOINT
    if file.is_file():
        with _checkpoint_readable(file, "show"), np.load(file) as saved:
            text = f"{int(saved['segment'])} of {segments} segments done"
    elif path.is_dir():
        text = f"0 of {segments} segments done"
    else:
        text = "not started"
    holder = _lock_holder(_read(path / LOCK) or "")
    if holder is not None:
        alive = _alive(holder, path / LOCK)
        text += (
            f", {'running in' if alive else 'lock left by'} process {holder['pid']} "
            f"on {holder['host']}" + ("" if alive else " (no longer running)")
        )
    return text


def load_ensemble(path, like=None, *, partial: bool = False) -> Ensemble:
    """Read back the results a `jaxflow.solve_ensemble(..., checkpoint_dir=path)` run
    (or `jaxflow ensemble`) wrote; of a run split into parts (`part=(I, N)`, or a
    multi-process run), its parts joined in the order of the seeds.

    **Arguments:**

    - `path`: the run directory.
    - `like`: optional, one model of the kind the run evolved (e.g. `init(key)`): then
        `final` is that model with every array stacked over seeds. Otherwise `final` is
        a dict field name -> array.
    - `partial`: of a run split into parts, join the parts that have finished even if
        others have not (`seeds` says which seeds are in). By default every part must
        have finished.

    **Returns:**

    A `jaxflow.Ensemble`, equal to the one the run returned (`ys` only if the run saved
    models, as a dict); of a run in parts, equal to the one that the same call without
    `part` returns.

    **Raises:**

    `FileNotFoundError` if the run has not finished writing its results, or of a run
    in parts, if some part has not (naming each and how far it got). `ValueError` if an
    `ensemble.nc` cannot be read (truncated or corrupted), naming the file, or if the
    arrays of `like` are not those of the models in it, listing both.
    """
    path = Path(path)
    config = _config(path)
    if (path / RESULTS_FILE).is_file() or config.get("parts") is None:
        ensemble = _load(path, path)
    else:
        n = config["parts"]
        finished, missing = _parts(path, config, "load_ensemble")
        if missing and not (partial and finished):
            listed = "; ".join(f"part {i}/{n}: {text}" for i, text in missing.items())
            also = (
                f", or pass `partial=True` to join the {len(finished)} finished parts"
                if finished
                else ""
            )
            raise FileNotFoundError(
                f"load_ensemble: {len(missing)} of the {n} parts of the run in "
                f"{str(path)!r} have not finished ({listed}). Run each "
                f"(`jaxflow ensemble ... --part I/{n}`, `part=(I, {n})`){also}."
            )
        ensemble = concatenate([_load(part_dir(path, (i, n)), path) for i in finished])
    if like is None:
        return ensemble
    params, static = eqx.partition(like, eqx.is_array)
    expected = {k: np.shape(x) for k, x in named_arrays(params).items()}
    found = {k: np.shape(x)[1:] for k, x in ensemble.final.items()}
    if expected != found:
        raise ValueError(
            f"load_ensemble: `like` does not match the models in {str(path)!r}: "
            f"`like` has the arrays {expected}, the run holds {found} (field: shape per "
            "seed). Give one model of the kind the run evolved (e.g. `init(key)` of "
            "the run), or no `like` to get a dict."
        )
    final = eqx.combine(
        jax.tree.unflatten(
            jax.tree.structure(params), [ensemble.final[name] for name in expected]
        ),
        static,
    )
    return dataclasses.replace(ensemble, final=final)


def _load(where: Path, path: Path) -> Ensemble:
    """The results in `where` (the run directory `path`, or one of its parts)."""
    file = where / RESULTS_FILE
    if not file.is_file():
        raise FileNotFoundError(
            f"load_ensemble: no {RESULTS_FILE} in {str(path)!r}: not a run directory, "
            "or the run has not finished (its checkpoint resumes it)."
        )
    data = _results(file, "load_ensemble")
    final = {
        n.removeprefix("final_"): data[n].values
        for n in data.data_vars
        if n.startswith("final_")
    }
    with _readable(
        file,
        "load_ensemble",
        "results",
        "It is not an ensemble.nc that solve_ensemble wrote.",
    ):
        return _ensemble_of(data, final)


def _ensemble_of(data, final) -> Ensemble:
    stat_names = [n for n in data.data_vars if n.startswith("stats_")]
    stats = {n.removeprefix("stats_"): data[n].values for n in stat_names}
    if not stats:  # a run directory written before statistics were prefixed
        stat_names = [n for n in data.data_vars if n.startswith("num_")]
        stat_names += ["max_steps"] if "max_steps" in data else []
        stats = {n: data[n].values for n in stat_names}
    ys = {
        n.removeprefix("ys_"): data[n].values
        for n in data.data_vars
        if n.startswith("ys_")
    }
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
        stats=stats,
        rtol=float(data.attrs["rtol"]),
        atol=data["atol"].values,
        solver=str(data.attrs["solver"]),
        segments=np.atleast_1d(data.attrs["segments"]),
    )


def show(path) -> str:
    """A few lines on a run directory: configuration, statuses, times reached, events,
    final losses; or how far an unfinished run got. Of a run split into parts: which
    parts have finished, how far each other got, and the finished parts joined."""
    path = Path(path)
    config = _config(path)
    lines = [f"run           {path}"]
    if config:
        lines += [
            f"model         {config.get('model')}",
            f"seeds         {config.get('seeds')}, t1={config.get('t1')}, "
            f"rtol={config.get('rtol')}, kinks={config.get('kinks')}, "
            f"solver={config.get('solver')}",
            "versions      "
            + ", ".join(f"{k} {v}" for k, v in config.get("versions", {}).items()),
        ]
    parts = config.get("parts")
    if parts is not None:
        finished, missing = _parts(path, config, "show")
        lines.append(
            f"parts         {len(finished)} of {parts} finished"
            + (f": {', '.join(map(str, finished))}" if finished and missing else "")
        )
        lines += [f"  part {i}/{parts}  {text}" for i, text in missing.items()]
        if not finished:
            return "\n".join(lines)
    elif not (path / RESULTS_FILE).is_file():
        if not config and not (path / CHECKPOINT).is_file():
            raise FileNotFoundError(
                f"show: {str(path)!r} is not a jaxflow run directory."
            )
        segments = len(config.get("segments", []))
        lines.append(
            f"unfinished    {_progress(path, segments)}; run the same call again to "
            "resume"
        )
        return "\n".join(lines)
    ens = load_ensemble(path, partial=True)
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
