"""Property-based tests of the public entry points (hypothesis).

Each generated call either raises a `ValueError` or `TypeError` whose message names
one of the arguments the case made invalid, or, when the case made none invalid,
returns a finite result with a success status. The rules for what is valid are
written here, independently of the library's checks: a case the library accepts
although a rule says it is invalid fails, as does one it rejects although none says
so.

The generated values come from small sets, so that the valid cases share a handful of
compiled programs (tolerances and `atol` are passed as arrays, which are not
compile-time constants); `derandomize=True` makes the run the same every time.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st

import jaxflow as jf


pytestmark = pytest.mark.slow

NAN, INF = float("nan"), float("inf")
SETTINGS = dict(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def finite(x) -> bool:
    return all(bool(np.all(np.isfinite(np.asarray(v)))) for v in jax.tree.leaves(x))


def check_outcome(call, bad: set[str]):
    """Run `call`; check it raised naming one of `bad`, or returned a valid result
    (when `bad` is empty). Returns the result, or None when it raised."""
    try:
        out = call()
    except (ValueError, TypeError) as e:
        event("rejected")
        message = str(e)
        assert bad, f"rejected a valid case: {type(e).__name__}: {message}"
        assert any(name in message for name in bad), (
            f"the message does not name any of {sorted(bad)}: {message}"
        )
        return None
    assert not bad, f"accepted a case with invalid {sorted(bad)}"
    event("solved")
    return out


# --- Dataset ----------------------------------------------------------------------

VALUES = st.sampled_from([0.0, 1.0, -1.0, 0.5, 2.0, -3.0])
FAULTS = st.sampled_from([None] * 6 + [NAN, INF, -INF])


def often(valid: list, invalid: list):
    """Values drawn mostly from `valid`: most cases are valid in all their arguments,
    or invalid in one."""
    return st.sampled_from(valid * (3 * len(invalid) // len(valid) + 3) + invalid)


@st.composite
def arrays(draw, rank, length=None):
    shape = [draw(often([1, 2, 3], [0])) for _ in range(rank)]
    if length is not None and rank and draw(often([True], [False])):
        shape[0] = length  # the data's n, mostly
    shape = tuple(shape)
    dtype = draw(often(["float64", "float32", "int32"], ["bool"]))
    size = math.prod(shape)
    x = np.array(draw(st.lists(VALUES, min_size=size, max_size=size)), float)
    fault = draw(FAULTS)
    if fault is not None and size and dtype.startswith("float"):
        x[draw(st.integers(0, size - 1))] = fault
    return x.reshape(shape).astype(dtype)


@st.composite
def datasets(draw):
    X = draw(arrays(draw(often([2], [0, 1, 3]))))
    n = X.shape[0] if X.ndim else None
    return X, draw(arrays(draw(often([1], [0, 2])), length=n))


@settings(max_examples=200, **SETTINGS)
@given(case=datasets())
def test_dataset(case):
    X, y = case
    bad = set()
    if X.ndim != 2 or X.shape[0] == 0 or not np.all(np.isfinite(X)):
        bad.add("X")
    if y.ndim != 1 or y.shape[0] == 0 or not np.all(np.isfinite(y)):
        bad.add("y")
    if X.ndim == 2 and y.ndim == 1 and X.shape[0] != y.shape[0]:
        bad |= {"X", "y"}
    data = check_outcome(lambda: jf.Dataset(X, y), bad)
    if data is not None:
        assert data.X.shape == X.shape and data.y.shape == y.shape
        assert jnp.issubdtype(data.X.dtype, jnp.floating) and finite(data)


# --- solve --------------------------------------------------------------------------

TIMES = often([0.0, 0.25, 0.5, 1.0], [2.0, -1.0, NAN, INF])


def _problem(kind: str, dtype: str):
    X = jax.random.normal(jax.random.key(0), (6, 2)).astype(dtype)
    y = jnp.where(X[:, 0] + 0.3 * X[:, 1] > 0, 1.0, -1.0).astype(dtype)
    cast = lambda m: jax.tree.map(  # noqa: E731
        lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, m
    )
    if kind == "relu":
        net = jf.models.TwoLayerReLU(2, 3, scale=0.5, key=jax.random.key(1))
        return jf.GradientFlow(jf.losses.logistic, jf.Dataset(X, y)), cast(net)
    net = jf.models.Linear(2, key=jax.random.key(1))
    return jf.GradientFlow(jf.losses.square, jf.Dataset(X, y)), cast(net)


PROBLEMS = {
    (k, d): _problem(k, d) for k in ("relu", "linear") for d in ("float64", "float32")
}


def _fault(draw, model):
    """`model` with an inf or nan placed in one of its arrays, or as it is."""
    fault = draw(often([None], [NAN, INF]))
    if fault is None:
        return model, False
    leaves, treedef = jax.tree.flatten(model)
    i = draw(st.sampled_from([k for k, x in enumerate(leaves) if eqx_float(x)]))
    x = np.array(leaves[i])
    x.reshape(-1)[draw(st.integers(0, x.size - 1))] = fault
    leaves[i] = jnp.asarray(x)
    return jax.tree.unflatten(treedef, leaves), True


def eqx_float(x) -> bool:
    return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jnp.floating)


def _times(t0, t1, ts) -> set[str]:
    """The invalid ones of `t0`, `t1`, `ts` (`ts` is judged only against valid ends)."""
    if not (math.isfinite(t0) and math.isfinite(t1) and t1 > t0):
        return {"t1"}
    ts = np.asarray(ts, float)
    if (
        ts.ndim != 1
        or ts.size == 0
        or not np.all(np.isfinite(ts))
        or np.any(np.diff(ts) < 0)
        or np.any(ts < t0)
        or np.any(ts > t1)
    ):
        return {"ts"}
    return set()


@st.composite
def solve_cases(draw):
    kind = draw(st.sampled_from(["relu", "relu", "linear"]))
    dtype = draw(st.sampled_from(["float64", "float64", "float32"]))
    flow, model = PROBLEMS[kind, dtype]
    model, faulty = _fault(draw, model)
    kinks = draw(often(["auto", "auto", "plain", "min-norm"], ["exact"]))
    t0 = draw(often([0.0, 0.0, -0.5], [NAN, -INF]))
    t1 = draw(often([1.0], [0.0, -1.0, NAN, INF]))
    # Two times (one compiled shape), mostly sorted; or shapes that are never valid.
    ts = draw(often(["two"], ["empty", "2-D"]))
    if ts == "two":
        ts = draw(st.lists(TIMES, min_size=2, max_size=2))
        ts = sorted(ts) if draw(often([True], [False])) else ts
    else:
        ts = [] if ts == "empty" else [[0.5, 1.0]]
    rtol = draw(often([1e-3, 1e-7], [0.0, -1e-3, NAN, INF, 1e-300]))
    atol = draw(often([None, 1e-9], [-1.0, NAN, INF]))
    max_steps = draw(often([10_000], [0, -1, 2.5, True]))
    bad = _times(t0, t1, ts)
    if kinks not in ("auto", "plain", "min-norm") or (
        kinks == "min-norm" and kind == "linear"
    ):
        bad.add("kinks")
    eps = float(jnp.finfo(dtype).eps)
    if not (10 * eps <= rtol < INF) or (dtype == "float32" and rtol < 1e-6):
        bad.add("rtol")
    if atol is not None and not 0 <= atol < INF:
        bad.add("atol")
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        bad.add("max_steps")
    if faulty:
        bad.add("model")
    kwargs = dict(
        t0=t0,
        t1=t1,
        ts=ts,
        rtol=np.asarray(rtol),
        atol=None if atol is None else np.asarray(atol),
        max_steps=max_steps,
        kinks=kinks,
        metrics={"loss": jf.metrics.loss},
        save_models=False,
    )
    return flow, model, kwargs, bad


@settings(max_examples=200, **SETTINGS)
@given(case=solve_cases())
def test_solve(case):
    flow, model, kwargs, bad = case
    sol = check_outcome(lambda: jf.solve(flow, model, **kwargs), bad)
    if sol is not None:
        assert sol.status_name == "successful", sol.message
        assert float(sol.t_final) == pytest.approx(kwargs["t1"])
        assert finite(sol.final) and finite(sol.metrics["loss"])


# --- gradient_descent ----------------------------------------------------------------


@st.composite
def descent_cases(draw):
    dtype = draw(st.sampled_from(["float64", "float32"]))
    flow, model = PROBLEMS["relu", dtype]
    model, faulty = _fault(draw, model)
    lr = draw(often([0.1, 0.05], [0.0, -0.1, NAN, INF, True]))
    steps = draw(often([10, 20], [0, -1, 2.5]))
    ts = draw(
        st.lists(often([0.0, 0.5, 1.0], [3.0, -1.0, NAN]), min_size=2, max_size=2)
    )
    ts = sorted(ts)
    bad = {"model"} if faulty else set()
    if isinstance(lr, bool) or not 0 < lr < INF:
        bad.add("lr")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        bad.add("steps")
    if not bad & {"lr", "steps"}:
        bad |= _times(0.0, steps * lr, ts)
    return flow, model, dict(lr=lr, steps=steps, ts=ts, metrics={}), bad


@settings(max_examples=60, **SETTINGS)
@given(case=descent_cases())
def test_gradient_descent(case):
    flow, model, kwargs, bad = case
    # `_times` names a bad end `t1`; GD's end is steps * lr.
    bad = bad | ({"ts"} if "t1" in bad else set())
    sol = check_outcome(lambda: jf.gradient_descent(flow, model, **kwargs), bad)
    if sol is not None:
        assert sol.status_name == "successful"
        assert finite(sol.final)


# --- solve_ensemble ------------------------------------------------------------------

KEYS = jax.random.split(jax.random.key(2), 2)


def _init(key):
    return jf.models.TwoLayerReLU(2, 3, scale=0.5, key=key)


@st.composite
def ensemble_cases(draw):
    flow, _ = PROBLEMS["relu", "float64"]
    keys = draw(often(["ok"], ["2d-keys", "ints", "empty-shape"]))
    keys = {
        "ok": KEYS,
        "2d-keys": KEYS.reshape(1, 2),
        "ints": np.arange(2),
        "empty-shape": jax.random.key(0),
    }[keys]
    batch_size = draw(often([2, 4], [0, -1, 1.5]))
    segments = draw(often([None, 2, [0.5, 1.0]], [0, [1.0, 0.5], [0.5, NAN, 1.0]]))
    t1 = draw(often([1.0], [0.0, NAN, INF]))
    ts = sorted(draw(st.lists(TIMES, min_size=2, max_size=2)))
    bad = _times(0.0, t1, ts)
    if keys is not KEYS:
        bad.add("keys")
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int)
        or batch_size < 1
    ):
        bad.add("batch_size")
    if not bad & {"t1"}:
        if isinstance(segments, int) and segments < 1:
            bad.add("segments")
        if isinstance(segments, list) and segments != [0.5, 1.0]:
            bad.add("segments")
    kwargs = dict(
        t1=t1,
        ts=ts,
        batch_size=batch_size,
        segments=segments,
        rtol=1e-6,
        kinks="plain",
        metrics={"loss": jf.metrics.loss},
    )
    return flow, keys, kwargs, bad


@settings(max_examples=60, **SETTINGS)
@given(case=ensemble_cases())
def test_solve_ensemble(case):
    flow, keys, kwargs, bad = case
    ens = check_outcome(lambda: jf.solve_ensemble(flow, _init, keys, **kwargs), bad)
    if ens is not None:
        assert list(ens.status_name) == ["successful"] * 2
        assert finite(ens.final) and finite(ens.metrics["loss"])
