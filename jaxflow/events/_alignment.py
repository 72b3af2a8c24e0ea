r"""Events of early neuron alignment (Min, Mallada, Vidal, ICLR 2024, arXiv 2307.12851).

For a `jaxflow.models.TwoLayerReLU` on a `Dataset` with labels $\pm 1$, with
$x_\pm = \sum_{y_i = \pm 1} x_i$ and the cones

$$S_\pm = \{w : \langle w, x_i\rangle > 0 \text{ exactly for the } i \text{ with }
y_i = \pm 1\}, \qquad S_{\rm dead} = \{w : \langle w, x_i\rangle \le 0 \ \forall i\}.$$

A pair with $|\langle w, x_i\rangle| \le 10^{-10} \|w\| \|x_i\|$ counts as on the kink,
so as inactive: a neuron sliding along the boundary of $S_{\rm dead}$ under
`kinks="min-norm"` sits there only to rounding.
"""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from .._relu import cone_flags, cones, strictly_active
from ..metrics import cos_own
from ._events import AbstractEvent, as_value


class Aligned(AbstractEvent):
    r"""Per neuron, the first time $\cos(w_j, x_{\operatorname{sign} v_j}) \ge 1 - \delta$
    (one time per neuron, $\tau_j$).

    **Arguments:**

    - `delta`: the alignment tolerance $\delta \in (0, 2)$.
    - `terminal`: end the solve once every neuron has aligned (default `False`; dead
        neurons never align, so a terminal one rarely fires).
    """

    delta: float = eqx.field(static=True)
    terminal: bool = eqx.field(default=False, static=True)

    def __check_init__(self):
        if not 0 < self.delta < 2:
            raise ValueError(f"Aligned: `delta` must be in (0, 2), got {self.delta!r}.")

    def __call__(self, t, model, flow, reference) -> Float[Array, " width"]:
        del t, reference
        return (1.0 - self.delta) - cos_own(model, flow)


def in_cones(model, flow) -> Bool[Array, " width"]:
    """Per neuron, whether $w_j \\in S_+ \\cup S_- \\cup S_{\\rm dead}$ exactly."""
    plus, minus, dead = cones(model, flow.data)
    return plus | minus | dead


def in_own_cones(model, flow) -> Bool[Array, " width"]:
    """Per neuron, whether $w_j \\in S_{\\operatorname{sign} v_j} \\cup S_{\\rm dead}$
    exactly: where Theorem 1 puts every neuron by $t_1$."""
    plus, minus, dead = cones(model, flow.data)
    return jnp.where(model.v > 0, plus, minus) | dead


class InCone(AbstractEvent):
    r"""Per neuron, the first time $w_j \in S_+ \cup S_- \cup S_{\rm dead}$ exactly (a
    boolean condition, located by bisection on the dense output).

    **Arguments:**

    - `terminal`: end the solve once every neuron has been in a cone (default `False`).
    """

    terminal: bool = eqx.field(default=False, static=True)

    def __call__(self, t, model, flow, reference) -> Bool[Array, " width"]:
        del t, reference
        return in_cones(model, flow)

    def component(self, t, model, flow, reference, k) -> Float[Array, ""]:
        del t, reference
        data = flow.data
        b = None if model.b is None else model.b[k]
        z = data.X @ model.W[k] + (0.0 if b is None else b)
        plus, minus, dead = cone_flags(
            strictly_active(z, data.X, model.W[k], b), data.y > 0
        )
        return as_value(plus | minus | dead)


class AllInCones(AbstractEvent):
    r"""Theorem 1's event: the first time every neuron is in its own cone, $w_j \in
    S_{\operatorname{sign} v_j} \cup S_{\rm dead}$ for all $j$ at once. Its time is the
    measured $t_1$.

    **Arguments:**

    - `terminal`: end the solve there (default `False`).
    """

    terminal: bool = eqx.field(default=False, static=True)

    def __call__(self, t, model, flow, reference) -> Bool[Array, ""]:
        del t, reference
        return jnp.all(in_own_cones(model, flow))


class LossFraction(AbstractEvent):
    r"""The loss has fallen to `fraction` of its initial value: value
    $\log(L(\theta(t)) / (\text{fraction}\cdot L(\theta(0))))$. With `fraction=0.5`, the
    loss drop time $t_2$.

    **Arguments:**

    - `fraction`: in $(0, 1)$.
    - `terminal`: end the solve there (default `False`).
    """

    fraction: float = eqx.field(static=True)
    terminal: bool = eqx.field(default=False, static=True)

    def __check_init__(self):
        if not 0 < self.fraction < 1:
            raise ValueError(
                f"LossFraction: `fraction` must be in (0, 1), got {self.fraction!r}."
            )

    def init(self, model, flow):
        return flow(model)

    def __call__(self, t, model, flow, reference) -> Float[Array, ""]:
        del t
        tiny = jnp.finfo(reference.dtype).tiny
        return jnp.log(jnp.maximum(flow(model), tiny)) - jnp.log(
            jnp.maximum(self.fraction * reference, tiny)
        )


class NormGrowth(AbstractEvent):
    r"""The onset of norm growth: the first time $\|W\|_F \ge \text{factor}\cdot
    \|W(0)\|_F$. (During alignment the neurons turn at an almost constant, small norm;
    afterwards the aligned ones grow exponentially.)

    **Arguments:**

    - `factor`: greater than 1 (default 2).
    - `terminal`: end the solve there (default `False`).
    """

    factor: float = eqx.field(default=2.0, static=True)
    terminal: bool = eqx.field(default=False, static=True)

    def __check_init__(self):
        if not self.factor > 1:
            raise ValueError(f"NormGrowth: `factor` must be > 1, got {self.factor!r}.")

    def init(self, model, flow):
        del flow
        return jnp.sqrt(jnp.sum(model.W**2))

    def __call__(self, t, model, flow, reference) -> Float[Array, ""]:
        del t, flow
        tiny = jnp.finfo(reference.dtype).tiny
        return jnp.log(jnp.maximum(self.factor * reference, tiny)) - 0.5 * jnp.log(
            jnp.maximum(jnp.sum(model.W**2), tiny)
        )
