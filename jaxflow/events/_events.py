r"""Events: conditions on $(t, \theta(t))$ whose first time is located during a solve.

An event's value is a real array that is positive before the event and $\le 0$ once it
has happened. After every accepted step the value is evaluated at the step's end; where
a component has turned $\le 0$, its first time is located on the solver's dense output
by root finding (to about machine precision in $t$, so the time is as accurate as the
trajectory itself). A *terminal* event ends the solve (status `event_occurred`) once all
its components have happened; a non-terminal one is only recorded (first-passage times,
e.g. one per neuron).
"""

import abc
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree

from .. import metrics


class AbstractEvent(eqx.Module):
    """A condition whose first time is located during `jaxflow.solve` and
    `jaxflow.solve_ensemble`.

    **Fields:**

    - `terminal`: whether the event ends the solve (once every component has happened).
    """

    terminal: eqx.AbstractVar[bool]

    def init(self, model, flow) -> PyTree:
        """What the condition needs from the initial point (e.g. the initial gradient
        norm); passed to `__call__` as `reference`. Nothing by default."""
        del model, flow
        return None

    @abc.abstractmethod
    def __call__(self, t, model, flow, reference) -> Float[Array, "..."]:
        """The event's value at time `t` for `model`: a real scalar, or an array with
        one component per first-passage time (e.g. per neuron). Positive before the
        event, $\\le 0$ once it has happened. A boolean condition counts as happened
        where it is `True`."""

    def component(self, t, model, flow, reference, k) -> Array:
        """Component `k` (of the flattened value) alone, a real scalar. Root finding
        evaluates each component at its own time; override this where one component
        costs much less than the whole value (e.g. one neuron's cone)."""
        return jnp.reshape(as_value(self(t, model, flow, reference)), (-1,))[k]


class Event(AbstractEvent):
    r"""A user condition `fn(t, model, flow) -> array`, $\le 0$ (or `True`) once the
    event has happened.

    **Arguments:**

    - `fn`: the condition. A real value is best: its root is located by regula falsi
        in a few evaluations; a boolean one is located by bisection.
    - `terminal`: end the solve when every component has happened (default `False`:
        only record the times).

    !!! Example

        ```python
        # the time each neuron's cosine with x_+ first exceeds 0.99 (one per neuron)
        aligned = jf.events.Event(lambda t, m, flow: 0.99 - jf.metrics.cos_plus(m, flow))
        ```
    """

    fn: Callable[[Any, Any, Any], Array]
    terminal: bool = eqx.field(default=False, static=True)

    def __check_init__(self):
        if not callable(self.fn):
            raise ValueError(
                f"Event: `fn` must be a callable fn(t, model, flow) -> array, got "
                f"{self.fn!r}."
            )

    def __call__(self, t, model, flow, reference):
        del reference
        return self.fn(t, model, flow)


class SteadyState(AbstractEvent):
    r"""The flow has (nearly) stopped: $\|\nabla L(\theta(t))\| \le \max(
    \text{rtol} \cdot \|\nabla L(\theta(0))\|, \text{atol})$, with the minimum-norm
    gradient at ReLU kinks (`jaxflow.metrics.grad_norm`).

    Value $\log\big(\|\nabla L(t)\| / \max(\text{rtol}\,\|\nabla L(0)\|,
    \text{atol})\big)$, smooth in $t$ along the flow. Costs one gradient evaluation per
    step.

    From a small initialisation the initial gradient is tiny (of the order of the init
    scale), and `rtol` times it can lie below what the solver resolves: near a
    stationary point an explicit solver at relative tolerance `rtol_solver` leaves a
    gradient of about `rtol_solver` times the parameters' size. `atol` sets a floor in
    the gradient's own units.

    **Arguments:**

    - `rtol`: the tolerance relative to the initial gradient norm, in $[0, 1)$.
    - `atol`: an absolute tolerance, $\ge 0$ (default 0). One of the two must be
        positive.
    - `terminal`: end the solve there (default `True`).
    """

    rtol: float = eqx.field(static=True)
    atol: float = eqx.field(default=0.0, static=True)
    terminal: bool = eqx.field(default=True, static=True)

    def __check_init__(self):
        if not 0 <= self.rtol < 1:
            raise ValueError(
                f"SteadyState: `rtol` must be in [0, 1), got {self.rtol!r}."
            )
        if not self.atol >= 0:
            raise ValueError(f"SteadyState: `atol` must be >= 0, got {self.atol!r}.")
        if self.rtol == 0 and self.atol == 0:
            raise ValueError(
                "SteadyState: `rtol` and `atol` are both 0; one must be positive."
            )

    def init(self, model, flow):
        return metrics.grad_norm(model, flow)

    def __call__(self, t, model, flow, reference):
        del t
        g = metrics.grad_norm(model, flow)
        tiny = jnp.finfo(g.dtype).tiny
        level = jnp.maximum(self.rtol * reference, self.atol)
        return jnp.log(jnp.maximum(g, tiny)) - jnp.log(jnp.maximum(level, tiny))


class LossBelow(AbstractEvent):
    r"""The loss has fallen to `level`: value $\log(L(\theta(t)) / \text{level})$.

    **Arguments:**

    - `level`: a positive loss level.
    - `terminal`: end the solve there (default `True`).
    """

    level: float = eqx.field(static=True)
    terminal: bool = eqx.field(default=True, static=True)

    def __check_init__(self):
        if not self.level > 0:
            raise ValueError(f"LossBelow: `level` must be > 0, got {self.level!r}.")

    def __call__(self, t, model, flow, reference):
        del t, reference
        value = flow(model)
        return jnp.log(jnp.maximum(value, jnp.finfo(value.dtype).tiny)) - jnp.log(
            self.level
        )


def as_value(x) -> Array:
    """An event value as a real array (`True` -> -1, `False` -> 1)."""
    x = jnp.asarray(x)
    if x.dtype == jnp.bool_:
        return jnp.where(x, -1.0, 1.0)
    return x


def check_events(events, fname: str) -> dict[str, AbstractEvent]:
    if events is None:
        return {}
    if not isinstance(events, dict) or not all(
        isinstance(k, str) and isinstance(e, AbstractEvent) for k, e in events.items()
    ):
        raise ValueError(
            f"{fname}: `events` must be a dict name -> jaxflow.events.AbstractEvent "
            f"(e.g. jf.events.SteadyState(1e-6)), got {events!r}."
        )
    return events
