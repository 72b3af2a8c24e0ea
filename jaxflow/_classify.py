r"""Where a flow ended: what kind of stationary point it found.

A gradient flow stops (to a tolerance) at a stationary point; which kind decides what
the run found. `classify` polishes the point (`jaxflow.polish`), then runs a chain of
checks, each deciding one kind or passing: not stationary, a global minimum, a strict
saddle by the Hessian (`jaxflow.hessian_eigenvalues`), a saddle by a new neuron in an
empty activation cone (`jaxflow.best_new_neuron`), else a local minimum.
"""

import dataclasses
from typing import Literal

import numpy as np

from ._escape import Escape, curvature_escape, empty_cone_escape
from ._flow import GradientFlow
from ._hessian import hessian_eigenvalues
from ._kinks import treatment
from ._polish import Polished, on_device, polish, unmoved


Kind = Literal["global minimum", "local minimum", "saddle", "not stationary"]


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The result of `jaxflow.classify`.

    **Fields:**

    - `kind`: `"global minimum"`, `"local minimum"`, `"saddle"` or
        `"not stationary"`.
    - `loss`: the loss at the polished point; `min_loss`: the known global minimum
        value it was compared with (or `None`).
    - `grad_norm`: the (min-norm) gradient norm there.
    - `polished`: the `Polished` record.
    - `eigenvalues`: the lowest eigenvalues of the Hessian on the activation pattern,
        ascending (all of them for small models; from Lanczos for large ones).
    - `escape`: the `Escape` found, or `None`.
    - `evidence`: the reasons for the verdict, in words.
    """

    kind: Kind
    loss: float
    min_loss: float | None
    grad_norm: float
    polished: Polished
    eigenvalues: np.ndarray
    escape: Escape | None
    evidence: str

    def as_dict(self) -> dict:
        """The verdict as plain JSON-ready values (no models)."""
        return {
            "kind": self.kind,
            "loss": self.loss,
            "min_loss": self.min_loss,
            "grad_norm": self.grad_norm,
            "polish": {
                field.name: getattr(self.polished, field.name)
                for field in dataclasses.fields(self.polished)
                if field.name != "model"
            },
            "lowest_eigenvalues": [float(x) for x in self.eigenvalues[:5]],
            "evidence": self.evidence,
            "escape": None if self.escape is None else self.escape.as_dict(),
        }


@dataclasses.dataclass(frozen=True)
class _Tolerances:
    """`classify`'s thresholds and re-solve settings, each a positive number."""

    gtol: float
    loss_tol: float
    curvature_tol: float
    escape_size: float
    escape_time: float
    rtol: float

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(
                    f"classify: `{field.name}` must be a positive number, "
                    f"got {value!r}."
                )


@dataclasses.dataclass(frozen=True)
class _Point:
    """The point being classified, and what the checks measure there."""

    flow: GradientFlow
    polished: Polished
    loss: float
    grad_norm: float
    eigenvalues: np.ndarray  # the Hessian's lowest, ascending
    vector: np.ndarray  # the lowest one's eigenvector, flat
    min_loss: float | None
    note: str = ""  # what happened before the checks (a polish that failed)

    def verdict(self, kind: Kind, evidence: str, escape=None) -> Verdict:
        return Verdict(
            kind=kind,
            loss=self.loss,
            min_loss=self.min_loss,
            grad_norm=self.grad_norm,
            polished=self.polished,
            eigenvalues=self.eigenvalues,
            escape=escape,
            evidence=self.note + evidence,
        )


def _measure(flow, model, min_loss, polish_first) -> _Point:
    """Polish `model` (unless not `polish_first`) and measure the result. A polish
    that did not converge found no stationary point near `model` (Newton may run off
    where the loss only tends to its infimum, e.g. at infinity on separable data): then
    `model` itself is measured."""
    model = on_device(model)
    note = ""
    polished = unmoved(flow, model, converged=False)
    if polish_first:
        attempt = polish(flow, model)
        if attempt.converged:
            polished = attempt
        else:
            note = (
                f"polishing did not converge ({attempt.steps} Newton steps moved the "
                f"point by {attempt.distance:.3g} relative; gradient norm "
                f"{attempt.grad_norm_before:.3g} -> {attempt.grad_norm_after:.3g}): "
                "no stationary point found near the flow's end, which is classified "
                "as it is; "
            )
    point = polished.model
    loss = float(flow(point))
    values, vector = hessian_eigenvalues(flow, point)
    return _Point(
        flow=flow,
        polished=polished,
        loss=loss,
        grad_norm=polished.grad_norm_after,
        eigenvalues=np.asarray(values),
        vector=vector,
        min_loss=min_loss,
        note=note,
    )


def _not_stationary(p: _Point, tol: _Tolerances) -> Verdict | None:
    """Not stationary: the gradient norm is above `gtol` after polishing."""
    if p.grad_norm <= tol.gtol:
        return None
    evidence = f"gradient norm {p.grad_norm:.3g} > gtol {tol.gtol:g} after polishing"
    return p.verdict("not stationary", evidence)


def _global_minimum(p: _Point, tol: _Tolerances) -> Verdict | None:
    """A global minimum: the loss is within `loss_tol` of a known `min_loss`."""
    at_minimum = p.min_loss is not None and (
        p.loss - p.min_loss <= tol.loss_tol * max(1.0, abs(p.min_loss))
    )
    if not at_minimum:
        return None
    evidence = (
        f"gradient norm {p.grad_norm:.3g}; loss {p.loss:.12g} within "
        f"{tol.loss_tol:g} of the global minimum {p.min_loss:g}"
    )
    return p.verdict("global minimum", evidence)


def _strict_saddle(p: _Point, tol: _Tolerances) -> Verdict | None:
    """A strict saddle: the Hessian on the pattern has a negative eigenvalue, below
    `-curvature_tol` relative to its largest; the escape along it is re-solved."""
    lowest = p.eigenvalues[0]
    scale = max(1.0, float(np.max(np.abs(p.eigenvalues))))
    if not lowest < -tol.curvature_tol * scale:
        return None
    escape = curvature_escape(
        p.flow,
        p.polished.model,
        p.vector,
        lowest,
        p.loss,
        tol.escape_size,
        tol.escape_time,
        tol.rtol,
    )
    evidence = (
        f"gradient norm {p.grad_norm:.3g}; Hessian eigenvalue {lowest:.4g} < 0; "
        f"re-solve from {tol.escape_size:g} along it lowers the loss by "
        f"{escape.loss_decrease:.4g} in t={tol.escape_time:g}"
    )
    return p.verdict("saddle", evidence, escape)


def _new_neuron(p: _Point, tol: _Tolerances) -> Escape | None:
    """The re-solved escape by a new neuron in an empty cone, for a `TwoLayerReLU`."""
    if treatment(p.flow, p.polished.model) != "min-norm":
        return None
    return empty_cone_escape(
        p.flow, p.polished.model, p.loss, tol.escape_size, tol.escape_time, tol.rtol
    )


def _empty_cone_saddle(p: _Point, tol: _Tolerances, escape) -> Verdict | None:
    """A saddle the Hessian cannot see: the new neuron's re-solve succeeded and
    lowered the loss by more than `loss_tol`."""
    escaped = (
        escape is not None
        and escape.status == "successful"
        and escape.loss_decrease > tol.loss_tol * max(1.0, p.loss)
    )
    if not escaped:
        return None
    evidence = (
        f"gradient norm {p.grad_norm:.3g}; Hessian on the pattern has no negative "
        f"eigenvalue (lowest {p.eigenvalues[0]:.3g}), but a neuron of size "
        f"{tol.escape_size:g} active on points {list(escape.active)} "
        f"(|G| = {escape.rate:.4g}) lowers the loss by "
        f"{escape.loss_decrease:.4g} in t={tol.escape_time:g}"
    )
    return p.verdict("saddle", evidence, escape)


def _local_minimum(p: _Point, tol: _Tolerances, escape) -> Verdict:
    """What is left: a local minimum (possibly the global one), with the escape tried."""
    tried = ""
    if escape is not None:
        tried = (
            f"; the best new neuron (|G| = {escape.rate:.3g}) changed the loss by "
            f"{-escape.loss_decrease:.3g}"
        )
        if escape.status != "successful":
            tried += f" (its re-solve ended {escape.status}: no evidence)"
    gap = ""
    if p.min_loss is not None:
        gap = f", {p.loss - p.min_loss:.4g} above the global minimum"
    evidence = (
        f"gradient norm {p.grad_norm:.3g}; lowest Hessian eigenvalue "
        f"{p.eigenvalues[0]:.3g} >= -{tol.curvature_tol:g}{tried}{gap}"
    )
    return p.verdict("local minimum", evidence, escape)


def classify(
    flow: GradientFlow,
    model,
    *,
    min_loss: float | None = None,
    gtol: float = 1e-8,
    loss_tol: float = 1e-9,
    curvature_tol: float = 1e-7,
    escape_size: float = 1e-3,
    escape_time: float = 100.0,
    rtol: float = 1e-10,
    polish_first: bool = True,
) -> Verdict:
    r"""What kind of point `model` is: a global minimum, a local minimum, a saddle, or
    not stationary at all, with the evidence.

    1. Polish (`jaxflow.polish`) and measure the (min-norm) gradient norm: above
        `gtol` it is `"not stationary"`. If polishing does not converge, no stationary
        point is near: `model` is measured as it is, and the evidence says so (at the
        end of a flow whose loss tends to its infimum only at infinity, e.g. on
        separable data, the gradient there is above `gtol`: not stationary).
    2. With a known global minimum value `min_loss` (0 for a net that can
        interpolate), a loss within `loss_tol` (relative to $\max(1, |{\rm min\_loss}|)$)
        of it is a `"global minimum"`.
    3. Otherwise the Hessian on the activation pattern: an eigenvalue below
        $-$`curvature_tol` $\cdot \max(1, |\lambda|_{\max})$ makes a strict saddle.
        The escape is checked by re-solving the flow for `escape_time` from the point
        moved by `escape_size` along the eigenvector.
    4. For a `TwoLayerReLU`, the empty-cone test: the smallest neuron is re-placed by a
        neuron of size `escape_size` along the maximiser of $|G|$
        (`jaxflow.best_new_neuron`), with the output sign that lowers the loss, and
        the flow is re-solved for `escape_time`. A loss decrease beyond `loss_tol`
        makes a saddle. Kinks add such escapes a Hessian cannot see: a neuron placed,
        at a small size $\delta$, in an activation cone no living neuron occupies
        changes the loss by $\pm\delta^2 G(u)$, so a stationary point where
        $\max_{\|u\| = 1} |G(u)| > 0$ is a saddle (Boursier and Flammarion).
    5. Else a `"local minimum"` (with `min_loss=None`, possibly the global one).

    **Arguments:** as above; `rtol` is the re-solves' tolerance; `polish_first=False`
    classifies `model` as it is.

    **Returns:** a `Verdict`.
    """
    tol = _Tolerances(gtol, loss_tol, curvature_tol, escape_size, escape_time, rtol)
    p = _measure(flow, model, min_loss, polish_first)
    verdict = (
        _not_stationary(p, tol) or _global_minimum(p, tol) or _strict_saddle(p, tol)
    )
    if verdict is None:
        escape = _new_neuron(p, tol)
        verdict = _empty_cone_saddle(p, tol, escape) or _local_minimum(p, tol, escape)
    return verdict
