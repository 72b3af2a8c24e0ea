import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import ArrayLike, Float, PRNGKeyArray

from ._custom_types import MetricFn
from ._dataset import Dataset
from ._flow import GradientFlow
from ._options import check_times, explained, prepare
from ._solution import RESULTS, Solution, final_status
from .metrics import default_metrics


# The optimizer's own code runs under JAX's standard promotion rules, which optax is
# written for (Adam mixes its int32 step count with floats), whatever the user's.
_THEIRS = jax.numpy_dtype_promotion("standard")


def _save(params, static, flow, metrics: dict[str, MetricFn], save_models: bool):
    model = eqx.combine(params, static)
    values = {name: fn(model, flow) for name, fn in metrics.items()}
    return (params if save_models else None), values


@eqx.filter_jit
def _descend(
    flow, params, static, metrics, optimizer, lr, steps, save_steps, save_models, draw
):
    if metrics is None:
        metrics = default_metrics(eqx.combine(params, static), flow)
    if optimizer is None:  # gradient descent: `lr` traced, compiled once for all
        optimizer = optax.sgd(lr)

    def step(k, carry):
        params, state = carry
        _, grads = draw(flow, k).value_and_gradient(params, static)
        with _THEIRS:
            updates, state = optimizer.update(grads, state, params)
            return optax.apply_updates(params, updates), state

    def segment(carry, k_next):
        params, state, k = carry
        params, state = jax.lax.fori_loop(k, k_next, step, (params, state))
        return (params, state, k_next), _save(
            params, static, flow, metrics, save_models
        )

    with _THEIRS:
        state = optimizer.init(params)
    carry = (params, state, jnp.array(0, save_steps.dtype))
    (params, state, k), (saved, values) = jax.lax.scan(segment, carry, save_steps)
    params, _ = jax.lax.fori_loop(k, steps, step, (params, state))
    status = final_status(RESULTS.successful, params, flow, static)
    return saved, values, params, status


class _FullBatch(eqx.Module):
    """Every step's data: the flow's."""

    def __call__(self, flow, k):
        del k
        return flow


class _MiniBatch(eqx.Module):
    """Step `k`'s data: `size` rows of the flow's data set drawn without replacement,
    `jax.random.choice(jax.random.fold_in(key, k), n, (size,), replace=False)`,
    independently from step to step."""

    key: PRNGKeyArray
    size: int = eqx.field(static=True)

    def __call__(self, flow, k):
        data = flow.data
        rows = jax.random.choice(
            jax.random.fold_in(self.key, k), data.X.shape[0], (self.size,), False
        )
        # (`eqx.tree_at`, not `GradientFlow(...)`: the labels were checked once.)
        return eqx.tree_at(
            lambda f: (f.data.X, f.data.y), flow, (data.X[rows], data.y[rows])
        )


def _run(
    fname, solver, flow, model, optimizer, lr, steps, ts, metrics, save_models, draw
):
    """The optimizer's iterates from `model`, saved at `ts` (in units of `lr` per step,
    or steps if `lr` is None), as a `Solution` named `solver`."""
    params, static, metrics = prepare(flow, model, metrics, fname)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"{fname}: `steps` must be a positive int, got {steps!r}.")
    unit = 1.0 if lr is None else lr
    if ts is None:
        save_steps = jnp.round(jnp.linspace(0, steps, 101)).astype(int)
    else:
        ts = check_times(ts, 0.0, steps * unit, fname)
        save_steps = jnp.round(ts / unit).astype(int)
    with explained(fname, flow, model):
        saved, values, final, status = _descend(
            flow,
            params,
            static,
            metrics,
            optimizer,
            None if lr is None else float(lr),
            steps,
            save_steps,
            save_models,
            draw,
        )
    stats = {
        "num_steps": jnp.asarray(steps),
        "num_accepted_steps": jnp.asarray(steps),
        "num_rejected_steps": jnp.asarray(0),
        "num_vf_evals": jnp.asarray(steps),
        "max_steps": jnp.asarray(steps),
    }
    return Solution(
        ts=save_steps.astype(float) * unit,
        ys=None if saved is None else eqx.combine(saved, static),
        final=eqx.combine(final, static),
        t_final=jnp.asarray(steps * unit, dtype=float),
        metrics=values,
        stats=stats,
        status=status,
        event_times={},
        rtol=jnp.asarray(jnp.nan),
        atol=jnp.asarray(jnp.nan),
        solver=solver,
    )


def _check_lr(lr, fname: str, optional: bool = False) -> None:
    if optional and lr is None:
        return
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not 0 < lr < math.inf:
        raise ValueError(f"{fname}: `lr` must be a finite float > 0, got {lr!r}.")


def optimize(
    flow: GradientFlow,
    model: Any,
    optimizer: optax.GradientTransformation,
    *,
    steps: int,
    batch_size: int | None = None,
    key: PRNGKeyArray | None = None,
    ts: Float[ArrayLike, " times"] | None = None,
    lr: float | None = None,
    metrics: dict[str, MetricFn] | None = None,
    save_models: bool = True,
) -> Solution:
    r"""`steps` steps of an optax optimizer on the flow's loss, full-batch or
    mini-batch: the dynamics that gradient flow is compared with (SGD, momentum, Adam,
    ...), on the same model, loss and data, with the same metrics and `Solution`.

    **Arguments:**

    - `flow`, `model`: as for `jaxflow.solve`.
    - `optimizer`: an `optax.GradientTransformation`, e.g. `optax.adam(1e-3)`.
        Compiled once per optimizer object: make it once and reuse it.
    - `steps`: the number of steps.
    - `batch_size`: `None` (default) for the full data set every step; else each step
        uses `batch_size` rows of `flow.data` (a `jaxflow.Dataset`) drawn without
        replacement, independently from step to step: step $k$'s rows are
        `jax.random.choice(jax.random.fold_in(key, k), n, (batch_size,), False)`.
    - `key`: the mini-batches' random key; required with `batch_size`.
    - `lr`: the step size that makes step $k$ flow time $t = k \cdot$ `lr` (as for
        gradient descent, `jaxflow.gradient_descent`, `optax.sgd(lr)`). `None`:
        time is the step count.
    - `ts`: times at which to save (flow times with `lr`, else step counts) in
        `[0, steps · lr]` (or `[0, steps]`); each is rounded to the nearest step, and
        the solution's `ts` hold the times used. Defaults to 101 evenly spaced steps.
    - `metrics`, `save_models`: as for `jaxflow.solve`; metrics are evaluated on the
        whole data set.

    **Returns:**

    A `jaxflow.Solution`; its `stats` count `steps` accepted steps and gradient
    evaluations (of a mini-batch each, with `batch_size`), `rtol = atol = nan`, and its
    status is `nonfinite` if the iterates overflowed.

    **Raises:**

    `ValueError` for a bad argument, naming the value received.

    !!! Example

        ```python
        sol = jf.optimize(flow, net, optax.adam(1e-3), steps=10_000, ts=[0, 5_000, 10_000])
        sgd = jf.optimize(flow, net, optax.sgd(0.01), steps=1_000, lr=0.01,
                          batch_size=32, key=jax.random.key(0))
        ```
    """
    fname = "optimize"
    if not isinstance(optimizer, optax.GradientTransformation):
        raise ValueError(
            f"{fname}: `optimizer` must be an optax.GradientTransformation (e.g. "
            f"optax.adam(1e-3)), got {type(optimizer).__name__}."
        )
    _check_lr(lr, fname, optional=True)
    if batch_size is None:
        draw = _FullBatch()
    else:
        if not isinstance(flow.data, Dataset):
            raise ValueError(
                f"{fname}: `batch_size` draws rows of a jaxflow.Dataset; `flow.data` "
                f"is a {type(flow.data).__name__}."
            )
        n = flow.data.X.shape[0]
        if isinstance(batch_size, bool) or not (
            isinstance(batch_size, int) and 1 <= batch_size <= n
        ):
            raise ValueError(
                f"{fname}: `batch_size` must be an int in [1, {n}] (the data set's "
                f"rows), or None for full batches, got {batch_size!r}."
            )
        if key is None:
            raise ValueError(f"{fname}: `batch_size` needs a `key` to draw batches.")
        draw = _MiniBatch(key, batch_size)
    what = "full batch" if batch_size is None else f"batch_size={batch_size}"
    return _run(
        fname,
        f"optax({what})",
        flow,
        model,
        optimizer,
        lr,
        steps,
        ts,
        metrics,
        save_models,
        draw,
    )


def gradient_descent(
    flow: GradientFlow,
    model: Any,
    *,
    lr: float,
    steps: int,
    ts: Float[ArrayLike, " times"] | None = None,
    metrics: dict[str, MetricFn] | None = None,
    save_models: bool = True,
) -> Solution:
    r"""Full-batch gradient descent $\theta_{k+1} = \theta_k - \eta \nabla L(\theta_k)$
    (`optax.sgd`), the baseline that emulates the flow; step $k$ is time $t = k\eta$.
    The same as `jaxflow.optimize(flow, model, optax.sgd(lr), steps=steps, lr=lr)`,
    compiled once for every `lr`.

    Its error against the flow is $O(\eta)$ at fixed $t$.

    **Arguments:**

    - `flow`, `model`: as for `jaxflow.solve`.
    - `lr`: the step size $\eta > 0$.
    - `steps`: the number of steps.
    - `ts`: flow times at which to save, in `[0, steps · lr]`; each is rounded to the
        nearest step, and the solution's `ts` hold the times actually used. Defaults to
        101 evenly spaced steps.
    - `metrics`, `save_models`: as for `jaxflow.solve`.

    **Returns:**

    A `jaxflow.Solution` with `stats` counting `steps` accepted steps and gradient
    evaluations, `rtol = atol = nan`, and status `nonfinite` if the iterates overflowed.
    """
    _check_lr(lr, "gradient_descent")
    return _run(
        "gradient_descent",
        f"GradientDescent(lr={lr:g})",
        flow,
        model,
        None,
        lr,
        steps,
        ts,
        metrics,
        save_models,
        _FullBatch(),
    )
