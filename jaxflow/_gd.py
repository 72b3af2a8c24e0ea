import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import ArrayLike, Float

from ._custom_types import MetricFn
from ._flow import GradientFlow
from ._options import check_times, explained, prepare
from ._solution import RESULTS, Solution, final_status
from .metrics import default_metrics


def _save(params, static, flow, metrics: dict[str, MetricFn], save_models: bool):
    model = eqx.combine(params, static)
    values = {name: fn(model, flow) for name, fn in metrics.items()}
    return (params if save_models else None), values


@eqx.filter_jit
def _descend(flow, params, static, metrics, lr, steps, save_steps, save_models):
    if metrics is None:
        metrics = default_metrics(eqx.combine(params, static), flow)
    optimizer = optax.sgd(lr)

    def step(_, carry):
        params, state = carry
        _, grads = flow.value_and_gradient(params, static)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    def segment(carry, k_next):
        params, state, k = carry
        params, state = jax.lax.fori_loop(k, k_next, step, (params, state))
        return (params, state, k_next), _save(
            params, static, flow, metrics, save_models
        )

    carry = (params, optimizer.init(params), jnp.array(0, save_steps.dtype))
    (params, state, k), (saved, values) = jax.lax.scan(segment, carry, save_steps)
    params, _ = jax.lax.fori_loop(k, steps, step, (params, state))
    status = final_status(RESULTS.successful, params, flow, static)
    return saved, values, params, status


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
    params, static, metrics = prepare(flow, model, metrics, "gradient_descent")
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not 0 < lr < math.inf:
        raise ValueError(
            f"gradient_descent: `lr` must be a finite float > 0, got {lr!r}."
        )
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(
            f"gradient_descent: `steps` must be a positive int, got {steps!r}."
        )
    if ts is None:
        save_steps = jnp.round(jnp.linspace(0, steps, 101)).astype(int)
    else:
        ts = check_times(ts, 0.0, steps * lr, "gradient_descent")
        save_steps = jnp.round(ts / lr).astype(int)
    with explained("gradient_descent", flow, model):
        saved, values, final, status = _descend(
            flow, params, static, metrics, float(lr), steps, save_steps, save_models
        )
    stats = {
        "num_steps": jnp.asarray(steps),
        "num_accepted_steps": jnp.asarray(steps),
        "num_rejected_steps": jnp.asarray(0),
        "num_vf_evals": jnp.asarray(steps),
        "max_steps": jnp.asarray(steps),
    }
    return Solution(
        ts=save_steps.astype(float) * lr,
        ys=None if saved is None else eqx.combine(saved, static),
        final=eqx.combine(final, static),
        t_final=jnp.asarray(steps * lr, dtype=float),
        metrics=values,
        stats=stats,
        status=status,
        event_times={},
        rtol=jnp.asarray(jnp.nan),
        atol=jnp.asarray(jnp.nan),
        solver=f"GradientDescent(lr={lr:g})",
    )
