import math

import jax.numpy as jnp
import jax.random as jr
from jaxtyping import PRNGKeyArray

from .._dataset import Dataset


def separable(
    key: PRNGKeyArray,
    n: int,
    d: int,
    mu: float,
    *,
    radius: tuple[float, float] = (1.0, 1.0),
    exact: bool = False,
) -> Dataset:
    r"""Separable data whose separation (Min, Mallada, Vidal 2024)
    $\mu = \min_{i,j} \langle y_i x_i, y_j x_j\rangle / (\|x_i\|\|x_j\|)$ is at least `mu`.

    The signed points $y_i x_i$ are drawn in a spherical cap of half-angle
    $\arccos(\mu)/2$ around a random direction (angle from its axis uniform in
    $[0, \arccos(\mu)/2]$, direction around it uniform), so any two are at most
    $\arccos\mu$ apart. Labels are $\pm1$ with probability ½ (at least one of each);
    norms are uniform in `radius`. The achieved separation is reported by
    `data.separation()`. With few points in many dimensions, no two of them are
    near $\arccos\mu$ apart, and it can be far above `mu` (n=16, d=20, `mu=0.05`:
    about 0.5); `exact=True` plants points 0 and 1 on opposite edges of the cap,
    so that it equals `mu`.

    **Arguments:**

    - `key`: a JAX random key.
    - `n`: number of points, at least 2.
    - `d`: dimension, at least 2.
    - `mu`: the separation to guarantee, in (0, 1).
    - `radius`: `(X_min, X_max)`, the range of $\|x_i\|$.
    - `exact`: make the separation equal `mu` (default `False`).
    """
    if not isinstance(n, int) or n < 2:
        raise ValueError(f"separable: `n` must be an int >= 2, got {n!r}.")
    if not isinstance(d, int) or d < 2:
        raise ValueError(f"separable: `d` must be an int >= 2, got {d!r}.")
    if not 0 < mu < 1:
        raise ValueError(f"separable: `mu` must be in (0, 1), got {mu!r}.")
    lo, hi = radius
    if not 0 < lo <= hi:
        raise ValueError(
            f"separable: `radius` must be (X_min, X_max) with 0 < X_min <= X_max, "
            f"got {radius!r}."
        )
    kaxis, kdir, kangle, klabel, knorm = jr.split(key, 5)
    axis = jr.normal(kaxis, (d,))
    axis = axis / jnp.linalg.norm(axis)
    around = jr.normal(kdir, (n, d))
    around = around - (around @ axis)[:, None] * axis[None, :]
    around = around / jnp.linalg.norm(around, axis=1, keepdims=True)
    angle = jr.uniform(kangle, (n,), maxval=math.acos(mu) / 2)
    if exact:  # two signed points arccos(mu) apart
        around = around.at[1].set(-around[0])
        angle = angle.at[:2].set(math.acos(mu) / 2)
    z = jnp.cos(angle)[:, None] * axis[None, :] + jnp.sin(angle)[:, None] * around
    y = jnp.where(jr.bernoulli(klabel, 0.5, (n,)), 1.0, -1.0)
    y = y.at[0].set(1.0).at[1].set(-1.0)
    norms = jr.uniform(knorm, (n,), minval=lo, maxval=hi)
    return Dataset(y[:, None] * norms[:, None] * z, y)


def two_points(c: float = 0.1) -> Dataset:
    r"""Min et al.'s toy: two positive points $x_1 = (1, 0)$, $x_2 = (\sin c, \cos c)$,
    so $\mu = \sin c$; smaller `c` aligns more slowly."""
    return Dataset(jnp.array([[1.0, 0.0], [math.sin(c), math.cos(c)]]), jnp.ones(2))


def orthogonal() -> Dataset:
    """Min et al.'s toy: $x_1 = (1, 0)$ labelled +1 and $x_2 = (0, 1)$ labelled -1
    ($\\mu = 0$, the edge of the theory)."""
    return Dataset(jnp.eye(2), jnp.array([1.0, -1.0]))


def circle_clusters(
    key: PRNGKeyArray,
    n_plus: int = 10,
    n_minus: int = 10,
    plus_degrees: tuple[float, float] = (-15.0, 15.0),
    minus_degrees: tuple[float, float] = (135.0, 160.0),
) -> Dataset:
    """Min et al.'s toy: unit vectors in the plane, positives at angles uniform in
    `plus_degrees`, negatives uniform in `minus_degrees`."""
    kp, km = jr.split(key)
    angles = jnp.concatenate(
        [
            jr.uniform(kp, (n_plus,), minval=plus_degrees[0], maxval=plus_degrees[1]),
            jr.uniform(
                km, (n_minus,), minval=minus_degrees[0], maxval=minus_degrees[1]
            ),
        ]
    )
    rad = jnp.deg2rad(angles)
    X = jnp.stack([jnp.cos(rad), jnp.sin(rad)], axis=1)
    return Dataset(X, jnp.concatenate([jnp.ones(n_plus), -jnp.ones(n_minus)]))


_KNOTS_X = (-1.0, -0.7, -0.55, -0.4, 0.0, 0.5, 0.6, 0.7, 1.0)
_KNOTS_Y = (0.0, 0.7, 0.5, 1.0, 0.0, 1.0, 0.6, 0.7, 0.0)


def boursier_flammarion(
    which: str = "three_points", *, key: PRNGKeyArray | None = None, n: int = 40
) -> Dataset:
    r"""Boursier and Flammarion (2024)'s 1-D regression data (use a model with
    `bias=True`, the square loss and balanced init, `fan="width"`).

    - `which="three_points"`: $x = (-0.75, -0.5, 0.125)$, $y = (1.1, 0.1, 0.8)$. From
        small init the flow ends at the least-squares fit $\beta = (-0.061538,
        0.643590)$, mean squared error 0.175043: a spurious stationary point.
    - `which="knots"`: `n` points $x \sim U[-1, 1]$ (needs `key`), $y$ interpolated
        linearly through the knots $x = (-1, -0.7, -0.55, -0.4, 0, 0.5, 0.6, 0.7, 1)$,
        $y = (0, 0.7, 0.5, 1, 0, 1, 0.6, 0.7, 0)$.

    Inputs have shape `(n, 1)`.
    """
    if which == "three_points":
        return Dataset(
            jnp.array([[-0.75], [-0.5], [0.125]]), jnp.array([1.1, 0.1, 0.8])
        )
    if which == "knots":
        if key is None:
            raise ValueError("boursier_flammarion: which='knots' needs a `key`.")
        x = jr.uniform(key, (n,), minval=-1.0, maxval=1.0)
        y = jnp.interp(x, jnp.array(_KNOTS_X), jnp.array(_KNOTS_Y))
        return Dataset(x[:, None], y)
    raise ValueError(
        f"boursier_flammarion: `which` must be 'three_points' or 'knots', got {which!r}."
    )
