r"""`solver="auto"`: an explicit Runge-Kutta solver while the flow is not stiff, an
implicit one from the step at which it becomes so (`Auto`).

Near a minimum a gradient flow is stiff: the Hessian's largest eigenvalue bounds an
explicit solver's step (|h λ| within its stability region), its smallest sets how long
the flow takes to arrive. `Auto` estimates the largest eigenvalue (in modulus) of the
field's Jacobian, $-H$, by a power iteration carried from step to step: after each
explicit step, one more evaluation of the field at $y_1 + \varepsilon v$ gives
$\lambda \approx \lVert f(y_1 + \varepsilon v) - f(y_1) \rVert / \varepsilon$
and the next $v$ ($f(y_1)$ is the step's last stage, first-same-as-last). Where
$h\lambda$ exceeds `threshold` on `patience` accepted steps in a row, the step size is
held by stability, not accuracy (Tsit5's stability region reaches about -3.5 on the
real axis), and the implicit solver takes over for the rest of the solve.

(Hairer and Wanner's estimate from the last two stages, Solving ODEs II IV.2, sees only
the modes the step excites: on a gradient flow the stiff modes have decayed, and it
stayed near 0.5 on steps held at h λ = 3.4.)

Both solvers are first-same-as-last with seven stages, so they share their state (the
field at the step's end) and the form of their dense output: the switch needs no
restart, and happens between two steps (so between a kink treatment's pieces).
"""

import functools
from typing import ClassVar

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import optimistix as optx
from jaxtyping import Array, Bool, Float, Int, PyTree

from ._roots import when


class _Switched(dfx.AbstractLocalInterpolation):
    """The dense output of a step of `Auto`: the explicit solver's or the implicit
    one's, whichever took the step."""

    t0: Float[Array, ""]
    t1: Float[Array, ""]
    explicit: dfx.AbstractLocalInterpolation
    implicit: dfx.AbstractLocalInterpolation
    stiff: Bool[Array, ""]

    def evaluate(self, t0, t1=None, left: bool = True) -> PyTree:
        a = self.explicit.evaluate(t0, t1, left)
        b = self.implicit.evaluate(t0, t1, left)
        return jax.tree.map(lambda x, y: jnp.where(self.stiff, y, x), a, b)


class _State(eqx.Module):
    """`Auto`'s state: the shared first-same-as-last state, the power iteration's
    vector and estimate, whether the implicit solver has taken over and from when, and
    the run of stiff-looking steps."""

    fsal: PyTree
    v: PyTree  # unit norm, the power iteration's current vector
    lam: Float[Array, ""]  # its estimate of the largest |eigenvalue|
    stiff: Bool[Array, ""]
    since: Float[Array, ""]  # the time of the switch (inf: not switched)
    run: Int[Array, ""]  # accepted steps in a row whose h·lam passed the threshold
    implicit_steps: Int[Array, ""]


class Auto(dfx.AbstractAdaptiveSolver):
    """Tsit5 while the flow is not stiff, Kvaerno5 once it is (see the module's
    docstring); `solver="auto"`.

    **Arguments:**

    - `explicit`, `implicit`: the two solvers; both must be first-same-as-last
        Runge-Kutta methods with as many stages (default Tsit5 and Kvaerno5).
    - `threshold`: the value of $h\\lambda_{\\max}$ (estimated) above which a step
        counts as held by stability.
    - `patience`: how many accepted steps in a row must count so before the switch.
    """

    explicit: dfx.AbstractERK = dfx.Tsit5()
    implicit: dfx.AbstractRungeKutta = dfx.Kvaerno5()
    threshold: float = eqx.field(static=True, default=2.5)
    patience: int = eqx.field(static=True, default=15)

    term_structure: ClassVar = dfx.AbstractTerm

    @property
    def interpolation_cls(self):  # pyright: ignore
        return functools.partial(
            _interpolation,
            self.explicit.interpolation_cls,
            self.implicit.interpolation_cls,
        )

    def __check_init__(self):
        a, b = self.explicit.tableau, self.implicit.tableau
        if not (a.fsal and b.fsal and len(a.c) == len(b.c)):
            raise ValueError(
                "solver Auto: `explicit` and `implicit` must be first-same-as-last "
                "Runge-Kutta methods with as many stages, got "
                f"{type(self.explicit).__name__} and {type(self.implicit).__name__}."
            )

    def order(self, terms) -> int | None:
        return self.explicit.order(terms)

    def error_order(self, terms):
        return self.explicit.error_order(terms)

    def init(self, terms, t0, t1, y0, args) -> _State:
        fsal = self.explicit.init(terms, t0, t1, y0, args)
        leaves, tree = jax.tree.flatten(y0)
        keys = jax.random.split(jax.random.key(0), len(leaves))
        v = [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)]
        return _State(
            fsal=fsal,
            v=_unit(jax.tree.unflatten(tree, v)),
            lam=jnp.zeros((), jnp.result_type(t0)),
            stiff=jnp.array(False),
            since=jnp.asarray(jnp.inf, jnp.result_type(t0)),
            run=jnp.array(0),
            implicit_steps=jnp.array(0),
        )

    def func(self, terms, t0, y0, args):
        return self.explicit.func(terms, t0, y0, args)

    def _power_step(self, terms, t1, y1, f1, args, v):
        """One power iteration at `y1`, where the field is `f1`: the estimate of the
        largest |eigenvalue| of its Jacobian and the next vector."""
        size = optx.two_norm(y1)
        eps = jnp.sqrt(jnp.finfo(size.dtype).eps) * jnp.maximum(size, 1.0)
        moved = jax.tree.map(lambda y, v: y + eps * v, y1, v)
        jv = jax.tree.map(
            lambda a, b: (a - b) / eps, self.explicit.func(terms, t1, moved, args), f1
        )
        lam = optx.two_norm(jv)
        return lam, jax.tree.map(lambda x, v: jnp.where(lam > 0, x, v), _unit(jv), v)

    def step(self, terms, t0, t1, y0, args, solver_state: _State, made_jump):
        st = solver_state

        def explicit():
            y1, error, dense, fsal, result = self.explicit.step(
                terms, t0, t1, y0, args, st.fsal, made_jump
            )
            lam, v = self._power_step(terms, t1, y1, fsal[1], args, st.v)
            held = (t1 - t0) * lam > self.threshold
            run = jnp.where(held, st.run + 1, 0)
            stiff = run >= self.patience
            new = _State(
                fsal,
                v,
                lam,
                stiff,
                jnp.where(stiff, t1, st.since),
                run,
                st.implicit_steps,
            )
            return y1, error, dense, new, result

        def implicit():
            y1, error, dense, fsal, result = self.implicit.step(
                terms, t0, t1, y0, args, st.fsal, made_jump
            )
            new = _State(
                fsal, st.v, st.lam, st.stiff, st.since, st.run, st.implicit_steps + 1
            )
            return y1, error, dense, new, result

        # Each branch only where it is taken (under `jax.vmap` too: `when`).
        zeros = jax.tree.map(
            lambda s: (
                jnp.zeros(s.shape, s.dtype)
                if isinstance(s, jax.ShapeDtypeStruct)
                else s
            ),
            eqx.filter_eval_shape(explicit),
        )
        out = when(st.stiff, implicit, when(~st.stiff, explicit, zeros))
        y1, error, dense, new, result = out
        return y1, error, dict(dense, stiff=st.stiff), new, result

    def stats(self, solver_state: _State) -> dict[str, Array]:
        """For the solution's stats: when the implicit solver took over (inf: never),
        and how many steps it took."""
        return {
            "stiff_from": solver_state.since,
            "num_implicit_steps": solver_state.implicit_steps,
        }


def _unit(tree) -> PyTree:
    size = optx.two_norm(tree)
    return jax.tree.map(lambda x: x / jnp.where(size > 0, size, 1.0), tree)


def _interpolation(explicit, implicit, *, t0, t1, y0, y1, k, stiff) -> _Switched:
    dense = dict(t0=t0, t1=t1, y0=y0, y1=y1, k=k)
    return _Switched(
        t0=t0,
        t1=t1,
        explicit=explicit(**dense),
        implicit=implicit(**dense),
        stiff=stiff,
    )
