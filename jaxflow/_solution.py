from typing import Any

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int, PyTree


class RESULTS(dfx.RESULTS):  # pyright: ignore[reportGeneralTypeIssues]
    """Status of a solve: diffrax's statuses (`successful`, `max_steps_reached`,
    `dt_min_reached`, `nonfinite`, ...) plus jaxflow's own."""

    kink_overflow = (
        "More pre-activations on a kink at once than the kink treatment holds. For a "
        "TwoLayerReLU: a neuron slid along the kinks of more linearly independent "
        "points than its free slots, min(n, d + 1, FREE_BYTES / (8 width (d + 1))) "
        "with jaxflow._kinks._min_norm.FREE_BYTES = 32 MiB (raise it); for other "
        "networks, more than jaxflow._kinks._sliding.MAX_SLIDING = 64. Or solve with "
        "kinks='plain'."
    )
    sliding_unresolved = (
        "Pre-activations sliding along their kinks have no equivalent control in the "
        "box [0, 1] (jaxflow._sliding): the sliding flow is not defined there; solve "
        "with kinks='plain' to see what it does."
    )
    nonfinite_gradient = (
        "The loss or its gradient is inf or nan at the final state: the trajectory left "
        "the domain where the loss is finite (overflow? try a smaller t1 or float64)."
    )


_NAMES = (
    "successful",
    "max_steps_reached",
    "dt_min_reached",
    "nonfinite",
    "nonfinite_gradient",
    "kink_overflow",
    "sliding_unresolved",
    "event_occurred",
    "max_steps_rejected",
    "internal_error",
)


def status_name(status) -> str | np.ndarray:
    """The name of a (possibly batched) concrete status, e.g. `"successful"`."""
    values = np.asarray(status._value)
    names = np.full(values.shape, "other", dtype=object)
    for name in _NAMES:
        names[values == np.asarray(getattr(RESULTS, name)._value)] = name
    return names.item() if names.ndim == 0 else names


def update_result(old: RESULTS, new: RESULTS) -> RESULTS:
    """A solve's status after something that happened later: `new` where `old` is
    `successful`, else `old` (the first failure is the one reported, as in diffrax)."""
    return RESULTS.where(old == RESULTS.successful, new, old)


def finite(tree: PyTree) -> Bool[Array, ""]:
    """Whether every array of `tree` is finite."""
    leaves = jax.tree.leaves(tree)
    return jnp.all(jnp.array([jnp.all(jnp.isfinite(x)) for x in leaves]))


def final_status(status: RESULTS, params: PyTree, flow, static: PyTree) -> RESULTS:
    """`status` checked at the end of a solve: `nonfinite` parameters, or a
    `nonfinite_gradient` (loss or gradient) at finite parameters, take precedence."""
    value, gradient = flow.value_and_gradient(params, static)
    ok = finite(params)
    bad_gradient = ok & ~(finite(gradient) & jnp.isfinite(value))
    status = RESULTS.where(bad_gradient, RESULTS.nonfinite_gradient, status)
    return RESULTS.where(ok, status, RESULTS.nonfinite)


class _Readable(type(RESULTS.successful)):
    """A status that prints its name: `successful`, `max_steps_reached`, ... (an array
    of names when batched)."""

    def __repr__(self):
        if self.is_traced():
            return "RESULTS<traced>"
        name = status_name(self)
        return str(name if isinstance(name, str) else name.tolist())

    __str__ = __repr__


def readable(status: RESULTS) -> RESULTS:
    """`status` (equal to it, usable wherever it is) with a repr that names it."""
    return _Readable(status._value, status._enumeration)


def succeeded(status: RESULTS) -> Bool[Array, "..."]:
    """Whether a (possibly batched) status is a success: `successful`, or
    `event_occurred` (a terminal event ended the solve)."""
    return (status == RESULTS.successful) | (status == RESULTS.event_occurred)


class Solution(eqx.Module):
    """The result of `jaxflow.solve` or `jaxflow.gradient_descent`.

    Under `jax.vmap` every field gains a leading batch axis.

    **Fields:**

    - `ts`: the saved times, shape `(times,)`. For gradient descent these are
        `step * lr` at the saved steps.
    - `ys`: the model at `ts`: the model's PyTree with a leading time axis on every
        array, or `None` when solved with `save_models=False`.
    - `final`: the model at the end of the solve (`t1`, or the time reached if the solve
        stopped early; see `t_final`).
    - `t_final`: the time the solve reached.
    - `metrics`: dict name -> array of shape `(times, ...)`, the metrics at `ts`.
        Entries after a failure are `inf`.
    - `stats`: dict with at least `num_accepted_steps`, `num_rejected_steps`,
        `num_steps` (both), `num_vf_evals` (gradient evaluations by the solver;
        -1 where the solver's count is unknown) and `max_steps`. A
        `kinks="min-norm"` solve adds `num_kink_events` (crossings located and cut at),
        `num_crossings` (pairs that passed through a kink there), `num_slides`
        (pairs that started sliding), `num_exits` (pairs that left a kink),
        `num_small_crossings` (crossings stepped over: corrected and switched at a
        step's end), `num_crossing_steps` (attempted steps in which some pair
        changed sign), `num_corrections` (step ends, and saves inside a step,
        corrected for crossings stepped over; three gradient evaluations each in
        `num_vf_evals`), `num_late_corrections` (step ends corrected to first order
        for pairs just past their kink after that; one gradient evaluation each) and
        `num_restarts`
        (steps started afresh after a cut or a switch); each attempted step also
        evaluates the loss once (no gradient) at its end, and once at its start in a
        crossing step.
    - `status`: a `jaxflow.RESULTS` item, printed as its name (`successful`,
        `max_steps_reached`, ...); `message` adds its explanation. `succeeded` is true
        for `successful` and `event_occurred`.
    - `event_times`: dict event name -> the first time the event happened, shaped like
        the event's value (nan where it did not happen); empty without `events`.
    - `rtol`, `atol`: the tolerances the solve ran with (nan for gradient descent).
    - `solver`: the integrator used, e.g. `"Tsit5"` or `"GradientDescent(lr=0.002)"`.
    """

    ts: Float[Array, " times"]
    ys: Any
    final: Any
    t_final: Float[Array, ""]
    metrics: dict[str, Array]
    stats: dict[str, Int[Array, ""]]
    status: RESULTS = eqx.field(converter=readable)
    event_times: dict[str, Array]
    rtol: Float[Array, ""]
    atol: Float[Array, ""]
    solver: str = eqx.field(static=True)

    @property
    def succeeded(self) -> Bool[Array, ""]:
        return succeeded(self.status)

    @property
    def status_name(self) -> str | np.ndarray:
        return status_name(self.status)

    @property
    def message(self) -> str:
        """The status in words, e.g. `"successful"` or `"max_steps_reached: The
        maximum number of solver steps was reached. ..."`."""
        name = self.status_name
        text = RESULTS[self.status]
        if not isinstance(name, str):
            return str(name)
        neuron = int(np.asarray(self.stats.get("kink_overflow_neuron", 0))) - 1
        if name == "kink_overflow" and neuron >= 0:
            text = f"{text} (Neuron {neuron}.)"
        return name if not text else f"{name}: {text}"

    def summary(self) -> str:
        """A few lines with the accuracy evidence of this solve (unbatched only)."""
        stats = {k: int(np.asarray(v)) for k, v in self.stats.items()}
        lines = [
            f"solver        {self.solver}, rtol={float(self.rtol):.1e}, "
            f"atol={float(self.atol):.1e}",
            f"status        {self.message}",
            f"time reached  {float(self.t_final):.6g}",
            f"steps         {stats['num_accepted_steps']} accepted, "
            f"{stats['num_rejected_steps']} rejected, "
            f"{stats['num_vf_evals']} gradient evaluations",
        ]
        # Entries after a failure are inf: report what was reached.
        for name in ("loss", "grad_norm", "conserved_drift"):
            if name in self.metrics:
                values = np.asarray(self.metrics[name])
                values = values[np.isfinite(values)]
                if values.size == 0:
                    continue
                label = {"conserved_drift": "max drift"}.get(name, name)
                value = np.max(values) if name == "conserved_drift" else values[-1]
                lines.append(f"{label:<13} {value:.6e}")
        return "\n".join(lines)
