r"""The geometry of a one-hidden-layer ReLU network's kinks, in one place.

For $f(x) = \sum_j v_j \sigma(\langle w_j, x\rangle + b_j)$ write $u_j = (w_j, b_j)$
(the neurons as rows of $U$) and $\tilde x_i = (x_i, 1)$ (the augmented inputs; without
a bias, $u_j = w_j$ and $\tilde x_i = x_i$), so the pre-activations are
$z_{ij} = \langle u_j, \tilde x_i\rangle$. A pair $(i, j)$ is *on its kink* when
$|z_{ij}| \le$ `KINK_TOL` $\|u_j\| \|\tilde x_i\|$: the tolerance to which the min-norm
solve keeps a sliding pair on its surface (rounding leaves $|z| \sim 10^{-19}$ there).
The kink field, the metrics, the alignment events and the stationary-point code all
use these definitions.
"""

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from .models import TwoLayerReLU


# A pair on a kink whose |z_ij| grows past this, relative to ||u_j|| ||x_i||, has left.
KINK_TOL = 1e-10


def augment(X: Float[Array, "n d"], bias: bool) -> Float[Array, "n d1"]:
    """The inputs $\\tilde x_i$ as rows: `X` with a column of ones when `bias`."""
    if not bias:
        return X
    xp = np if isinstance(X, np.ndarray) else jnp
    return xp.concatenate([X, xp.ones((X.shape[0], 1), X.dtype)], axis=1)


def neurons(model: TwoLayerReLU) -> Float[Array, "h d1"]:
    """$u_j = (w_j, b_j)$ as rows."""
    if model.b is None:
        return model.W
    return jnp.concatenate([model.W, model.b[:, None]], axis=1)


def with_neurons(model: TwoLayerReLU, U: Float[Array, "h d1"], v=None) -> TwoLayerReLU:
    """`model` with neurons `U` (rows $u_j$) and, if given, output weights `v`."""
    d = model.W.shape[1]
    W, b = (U, None) if model.b is None else (U[:, :d], U[:, d])
    v = model.v if v is None else v
    return eqx.tree_at(
        lambda m: (m.W, m.v, m.b), model, (W, v, b), is_leaf=lambda x: x is None
    )


def select_neurons(model: TwoLayerReLU, keep) -> TwoLayerReLU:
    """`model` with only the neurons where `keep` (a boolean mask or indices)."""
    return with_neurons(model, neurons(model)[keep], model.v[keep])


def replace_neurons(model: TwoLayerReLU, keep, sub: TwoLayerReLU) -> TwoLayerReLU:
    """`model` with the neurons where `keep` replaced by those of `sub`."""
    index = np.flatnonzero(keep)
    U = neurons(model).at[index].set(neurons(sub))
    return with_neurons(model, U, model.v.at[index].set(sub.v))


def pair_scale(
    input_norms: Float[Array, " n"], U: Float[Array, "h d1"]
) -> Float[Array, "n h"]:
    """$\\|\\tilde x_i\\| \\|u_j\\|$, the size of $z_{ij}$, from the inputs' norms."""
    return input_norms[:, None] * jnp.linalg.norm(U, axis=1)[None, :]


def kink_scale(X: Float[Array, "n d"], w, b=None):
    r"""$\|(w, b)\| \|(x_i, 1)\|$, the size of the pre-activations of one neuron `w`
    `(d,)` (shape `(n,)`) or of `W` `(width, d)` (shape `(n, width)`) on the rows of
    `X`."""
    X = augment(X, b is not None)
    U = jnp.atleast_2d(w)
    if b is not None:
        U = jnp.concatenate([U, jnp.atleast_1d(b)[:, None]], axis=1)
    scale = pair_scale(jnp.linalg.norm(X, axis=1), U)
    return scale if jnp.ndim(w) == 2 else scale[:, 0]


def on_kink(Z: Array, scale: Array, tol: float = KINK_TOL) -> Bool[Array, "..."]:
    """Which pre-activations `Z` are on their kink: $|z| \\le$ `tol` times `scale`."""
    return jnp.abs(Z) <= tol * scale


def strictly_active(z, X, w, b=None) -> Bool[Array, "..."]:
    r"""Which pre-activations $z = \langle w, x_i\rangle + b$ are active, counting pairs
    on the kink (`KINK_TOL`) as inactive. `z` is `(n,)` for one neuron `w` `(d,)`, or
    `(n, width)` for `W` `(width, d)`."""
    return z > KINK_TOL * kink_scale(X, w, b)


def activation_pattern(
    model: TwoLayerReLU, X: Float[Array, "n d"]
) -> Bool[Array, "n h"]:
    """The pairs strictly active at `model` on the rows of `X` (on a kink: inactive)."""
    return strictly_active(model.preactivations(X), X, model.W, model.b)


def cone_flags(active, positive):
    """In $S_+$, in $S_-$, dead: from the activation pattern `active` (data along axis
    0) and the positive labels `positive` (broadcast against it)."""
    in_plus = jnp.all(active == positive, axis=0)
    in_minus = jnp.all(active == ~positive, axis=0)
    dead = ~jnp.any(active, axis=0)
    return in_plus, in_minus, dead


def cones(model: TwoLayerReLU, data):
    """Per neuron: in $S_+$ (active exactly on the positive points), in $S_-$, dead."""
    return cone_flags(activation_pattern(model, data.X), (data.y > 0)[:, None])
