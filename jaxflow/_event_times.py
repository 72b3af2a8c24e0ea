"""How the time loop finds the first times of events (`jaxflow.events`): values at a
step's end, first times located on the step's dense output, and when a terminal event
has completed."""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, PyTree

from ._roots import first_root
from .events._events import AbstractEvent, as_value


def event_values(
    events: dict[str, AbstractEvent], t, model, flow, reference: dict[str, PyTree]
) -> dict[str, Array]:
    """Each event's value at time `t` for `model`, in the time's dtype."""
    return {
        name: as_value(event(t, model, flow, reference[name])).astype(t.dtype)
        for name, event in events.items()
    }


def first_times(
    events: dict[str, AbstractEvent],
    flow,
    model_at,
    t0,
    t1,
    reference: dict[str, PyTree],
    before: dict[str, Array],
    after: dict[str, Array],
    times: dict[str, Array],
    accepted: Bool[Array, ""],
) -> dict[str, Array]:
    """`times` (nan until located) with the components that turned $\\le 0$ within an
    accepted step `[t0, t1]` located on its dense output `model_at(t)`, by root finding
    between their values `before` and `after`."""
    located = {}
    for name, event in events.items():
        new = accepted & jnp.isnan(times[name]) & (after[name] <= 0)
        shape = after[name].shape

        def psi(t, name=name, event=event, shape=shape):
            def component(tk, k):
                value = event.component(tk, model_at(tk), flow, reference[name], k)
                return value.astype(tk.dtype)

            flat = jnp.reshape(t, (-1,))
            return jnp.reshape(jax.vmap(component)(flat, jnp.arange(flat.size)), shape)

        root = first_root(psi, t0, t1, before[name], after[name], new)
        located[name] = jnp.where(new, root, times[name])
    return located


def terminal_time(
    events: dict[str, AbstractEvent], times: dict[str, Array], new, dtype
) -> Float[Array, ""]:
    """The time at which a terminal event completed (all its components located), if
    it completed in this step (`new`), else inf."""
    t_end = jnp.array(jnp.inf, dtype)
    for name, event in events.items():
        if event.terminal:
            done = jnp.all(~jnp.isnan(times[name])) & new
            t_end = jnp.minimum(t_end, jnp.where(done, jnp.max(times[name]), jnp.inf))
    return t_end
