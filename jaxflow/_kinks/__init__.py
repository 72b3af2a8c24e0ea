r"""How a solve treats the kinks of a ReLU network, where $-\nabla L$ jumps.

A treatment is a set of *pieces* (`AbstractPieces`): the flow is integrated one smooth
piece at a time, and the pieces decide where a step crossed into another piece and
what the next one is. One function, `treatment`, chooses among them for a flow and a
model; `pieces` builds the chosen one for a solve, and `min_norm_gradient` evaluates
its velocity at a point.

- `_pieces`: the contract between the time loop and a treatment, and `Plain`
  (`kinks="plain"`: $-\nabla L$ as it is).
- `_box`: the per-neuron box-constrained least-squares problem (an active-set method)
  behind the two-layer field.
- `_min_norm`: the minimum-norm field of a one-hidden-layer ReLU network, a piece at a
  time: activation patterns, pairs on a kink (any number a neuron), the field.
- `_two_layer`: `MinNorm` (`kinks="min-norm"` on a `TwoLayerReLU`, or an `MLP` with
  one hidden ReLU layer, any number of outputs: `_relu.is_one_layer`): crossings stepped
  over and corrected, or located and settled; Filippov sliding; release.
- `_gates`: the ReLU sites of any loss, found in its jaxpr.
- `_sliding`: `Sliding` (`kinks="min-norm"` on any other network whose loss calls
  `jax.nn.relu` or `jax.nn.leaky_relu`, and `kinks="general"`): Filippov sliding by the
  equivalent control.
"""

from typing import Literal

import equinox as eqx

from ._min_norm import ReLUProblem, min_norm_gradient as two_layer_gradient
from ._pieces import AbstractPieces as AbstractPieces, Cut as Cut, Plain
from ._sliding import Sliding, min_norm_velocity, supports as has_gates
from ._two_layer import MinNorm, supports as is_two_layer


KINKS = ("auto", "min-norm", "general", "plain")

Treatment = Literal["min-norm", "general", "plain"]


def treatment(flow, model, kinks: str = "auto", fname: str = "solve") -> Treatment:
    """How the kinks of `model` trained on `flow` are treated, for `kinks=` of
    `jaxflow.solve`:

    - `"min-norm"`: the two-layer rule (`_two_layer.MinNorm`), for a
      `jaxflow.models.TwoLayerReLU`, or a `jaxflow.models.MLP` with one hidden ReLU
      layer (any number of outputs, an output bias), with a built-in loss on a
      `Dataset`, under
      `kinks="auto"` or `"min-norm"`;
    - `"general"`: the equivalent control (`_sliding.Sliding`), for any other model
      whose loss calls `jax.nn.relu` or `jax.nn.leaky_relu`, or any such model under
      `kinks="general"`;
    - `"plain"`: $-\\nabla L$ as it is, under `kinks="plain"`, or under `"auto"` for a
      model without such kinks.

    **Raises:** `ValueError` (naming `fname`) for an unknown `kinks`, or for
    `"min-norm"` / `"general"` on a model whose loss has no ReLU the gates reach.
    """
    if kinks not in KINKS:
        raise ValueError(
            f"{fname}: `kinks` must be 'auto', 'min-norm', 'general' or 'plain', got "
            f"{kinks!r}."
        )
    if kinks == "plain":
        return "plain"
    if kinks != "general" and is_two_layer(flow, model):
        return "min-norm"
    if has_gates(flow, model):
        return "general"
    if kinks == "auto":
        return "plain"
    raise ValueError(
        f"{fname}: kinks={kinks!r} needs a loss whose ReLUs are `jax.nn.relu` or "
        "`jax.nn.leaky_relu` calls outside `lax` control flow (scan, cond, "
        f"while_loop); the loss of model {type(model).__name__} has none. Use "
        "kinks='plain'."
    )


def pieces(
    kind: Treatment, flow, params, static, horizon, rtol, atol
) -> AbstractPieces:
    """The pieces of the treatment `kind` for one solve of `flow` from a model with
    parameter arrays `params` (only their structure is used) and the rest `static`,
    over the time span `horizon`, at the controller's tolerances `rtol`, `atol` (0
    where unknown)."""
    if kind == "min-norm":
        return MinNorm(ReLUProblem(flow, eqx.combine(params, static)), rtol, atol)
    if kind == "general":
        return Sliding(flow, params, static, horizon, rtol, atol)
    return Plain(flow, static)


def min_norm_gradient(flow, model):
    """Minus the velocity of `jaxflow.solve(kinks="auto")` at `model` (`treatment`):
    the least-norm element of the Clarke subdifferential for a two-layer network, the
    equivalent control's for another ReLU network, else the gradient."""
    kind = treatment(flow, model)
    if kind == "min-norm":
        return two_layer_gradient(flow, model)
    if kind == "general":
        return min_norm_velocity(flow, model)
    return flow.gradient(model)
