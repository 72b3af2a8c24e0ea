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

from .models import MLP, TwoLayerReLU


# A pair on a kink whose |z_ij| grows past this, relative to ||u_j|| ||x_i||, has left.
KINK_TOL = 1e-10


def augment(X: Float[Array, "n d"], bias: bool) -> Float[Array, "n d1"]:
    """The inputs $\\tilde x_i$ as rows: `X` with a column of ones when `bias`."""
    if not bias:
        return X
    xp = np if isinstance(X, np.ndarray) else jnp
    return xp.concatenate([X, xp.ones((X.shape[0], 1), X.dtype)], axis=1)


def is_one_layer(model) -> bool:
    """Whether `model` is a one-hidden-layer ReLU network in the layout this module
    reads: a `TwoLayerReLU`, or a `jaxflow.models.MLP` with one hidden ReLU layer (any
    number of outputs, with or without the output bias)."""
    if isinstance(model, TwoLayerReLU):
        return True
    return (
        isinstance(model, MLP)
        and len(model.weights) == 1
        and model.activation == "relu"
    )


def hidden_layer(model):
    """The hidden layer's weights and bias (or `None`) of a one-hidden-layer model."""
    if isinstance(model, MLP):
        return model.weights[0], None if model.biases is None else model.biases[0]
    return model.W, model.b


def neurons(model: TwoLayerReLU | MLP) -> Float[Array, "h d1"]:
    """$u_j = (w_j, b_j)$ as rows."""
    W, b = hidden_layer(model)
    if b is None:
        return W
    return jnp.concatenate([W, b[:, None]], axis=1)


def outgoing(model: TwoLayerReLU | MLP) -> Float[Array, " h"] | Float[Array, "h k"]:
    """The output weights $v_j$ as rows: shape `(h,)` for a scalar output, `(h, k)` for
    $k$ outputs (an `MLP`'s `v` is stored `(k, h)`)."""
    return model.v.T if isinstance(model, MLP) else model.v


def output_bias(model: TwoLayerReLU | MLP) -> Array | None:
    """The output bias $c$ (`MLP(out_bias=True)`), or `None`."""
    return model.c if isinstance(model, MLP) else None


def couplings(
    v: Float[Array, " h"] | Float[Array, "h k"],
    r: Float[Array, " n"] | Float[Array, "n k"],
) -> Float[Array, "n h"]:
    r"""$\langle v_j, r_i\rangle$ for output weights `v` (`outgoing`) and residuals
    `r`: the jump of neuron $j$'s gradient across pair $(i, j)$'s kink is this times
    $\tilde x_i$."""
    return r[:, None] * v[None, :] if v.ndim == 1 else r @ v.T


def with_neurons(
    model: TwoLayerReLU | MLP, U: Float[Array, "h d1"], v=None, c=None
) -> TwoLayerReLU | MLP:
    """`model` with neurons `U` (rows $u_j$) and, if given, output weights `v` (rows,
    as `outgoing` gives them) and output bias `c` (where the model has one)."""
    W, b = hidden_layer(model)
    d = W.shape[1]
    W, b = (U, None) if b is None else (U[:, :d], U[:, d])
    v = outgoing(model) if v is None else v
    if not isinstance(model, MLP):
        return eqx.tree_at(
            lambda m: (m.W, m.v, m.b), model, (W, v, b), is_leaf=lambda x: x is None
        )
    new = [(lambda m: m.weights[0], W), (lambda m: m.v, v.T)]
    if b is not None:
        new.append((lambda m: m.biases[0], b))
    if c is not None:
        new.append((lambda m: m.c, c))
    for where, value in new:
        model = eqx.tree_at(where, model, value)
    return model


def select_neurons(model: TwoLayerReLU, keep) -> TwoLayerReLU:
    """`model` with only the neurons where `keep` (a boolean mask or indices)."""
    return with_neurons(model, neurons(model)[keep], outgoing(model)[keep])


def replace_neurons(model: TwoLayerReLU, keep, sub: TwoLayerReLU) -> TwoLayerReLU:
    """`model` with the neurons where `keep` replaced by those of `sub`."""
    index = np.flatnonzero(keep)
    U = neurons(model).at[index].set(neurons(sub))
    return with_neurons(model, U, outgoing(model).at[index].set(outgoing(sub)))


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
