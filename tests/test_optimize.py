"""`jf.optimize`: any optax optimizer on the flow's objects, full-batch or mini-batch,
checked against a hand-written optax loop, and mini-batch SGD's mean path against the
flow as the step size goes to zero."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxflow as jf

from helpers import FLOW, init


NET = init(jax.random.key(3))


def _hand_written(optimizer, steps: int, batch=None):
    """The optax loop a user would write: a jitted step, called `steps` times; with
    `batch = (key, size)`, step k's rows as `jf.optimize` documents them."""
    params, static = eqx.partition(NET, eqx.is_inexact_array)
    X, y = FLOW.data.X, FLOW.data.y

    @jax.jit
    def step(params, state, k):
        data = FLOW.data
        if batch is not None:
            key, size = batch
            rows = jax.random.choice(jax.random.fold_in(key, k), len(X), (size,), False)
            data = jf.Dataset(X[rows], y[rows])
        grads = jax.grad(lambda p: FLOW.loss(eqx.combine(p, static), data))(params)
        with jax.numpy_dtype_promotion("standard"):  # optax's rules
            updates, state = optimizer.update(grads, state, params)
            return optax.apply_updates(params, updates), state

    with jax.numpy_dtype_promotion("standard"):
        state = optimizer.init(params)
    for k in range(steps):
        params, state = step(params, state, k)
    return params


def _bitwise(a, b) -> bool:
    pairs = zip(
        jax.tree.leaves(a), jax.tree.leaves(eqx.filter(b, eqx.is_inexact_array))
    )
    return all(np.array_equal(x, y) for x, y in pairs)


def test_optimize_is_a_hand_written_optax_loop_bit_for_bit():
    adam = optax.adam(1e-2)
    sol = jf.optimize(FLOW, NET, adam, steps=40, ts=[0, 20, 40])
    assert _bitwise(_hand_written(adam, 40), sol.final)
    assert list(sol.ts) == [0.0, 20.0, 40.0] and sol.solver == "optax(full batch)"
    assert sol.metrics["loss"][2] < sol.metrics["loss"][0]
    key = jax.random.key(7)
    momentum = optax.sgd(0.1, momentum=0.9)
    sol = jf.optimize(
        FLOW, NET, momentum, steps=30, lr=0.1, batch_size=5, key=key, ts=[0.0, 3.0]
    )
    assert _bitwise(_hand_written(momentum, 30, (key, 5)), sol.final)
    assert float(sol.t_final) == 3.0 and list(sol.ts) == [0.0, 3.0]
    # Another key draws other batches.
    other = jf.optimize(
        FLOW, NET, momentum, steps=30, lr=0.1, batch_size=5, key=jax.random.key(8)
    )
    assert not _bitwise(eqx.filter(sol.final, eqx.is_inexact_array), other.final)
    # Gradient descent is the special case optax.sgd, bit for bit.
    gd = jf.gradient_descent(FLOW, NET, lr=0.05, steps=20)
    same = jf.optimize(FLOW, NET, optax.sgd(0.05), steps=20, lr=0.05)
    assert _bitwise(eqx.filter(gd.final, eqx.is_inexact_array), same.final)
    assert np.array_equal(gd.ts, same.ts)


def test_optimize_refuses_bad_arguments_by_name():
    sgd = optax.sgd(0.1)
    cases = [
        (
            dict(optimizer="adam"),
            r"`optimizer` must be an optax.GradientTransformation",
        ),
        (dict(batch_size=0, key=jax.random.key(0)), r"`batch_size` must be .* got 0"),
        (dict(batch_size=17, key=jax.random.key(0)), r"in \[1, 16\].* got 17"),
        (dict(batch_size=4), r"`batch_size` needs a `key`"),
        (dict(lr=-1.0), r"`lr` must be a finite float > 0, got -1.0"),
        (dict(steps=0), r"`steps` must be a positive int, got 0"),
        (dict(ts=[0.0, 11.0]), r"`ts` must be .* inside \[0.0, 10"),
    ]
    for given, message in cases:
        kwargs = dict(optimizer=sgd, steps=10) | given
        with pytest.raises(ValueError, match=message):
            jf.optimize(FLOW, NET, **kwargs)
    flow = jf.GradientFlow(lambda m, d: jnp.sum(d["x"] * m.v), {"x": jnp.ones(6)})
    with pytest.raises(ValueError, match=r"rows of a jaxflow.Dataset; .* dict"):
        jf.optimize(flow, NET, sgd, steps=3, batch_size=2, key=jax.random.key(0))


@pytest.mark.slow
def test_minibatch_sgd_mean_path_converges_to_the_flow_at_order_one():
    """The mean of SGD over its batches is the flow plus O(lr): the error of the mean
    of 4,096 runs at t = 1 halves as lr halves (the batches' own noise in the mean,
    its standard error, is under a fifth of each error: 7-15% here)."""
    T, runs = 1.0, 4096
    net = jf.models.TwoLayerReLU(4, 6, scale=0.5, key=jax.random.key(5))
    flow_end = jf.solve(FLOW, net, t1=T, rtol=1e-12, ts=[T]).final
    reference = jnp.concatenate([x.ravel() for x in jax.tree.leaves(
        eqx.filter(flow_end, eqx.is_inexact_array))])  # fmt: skip

    def run(lr, key):
        sgd = optax.sgd(lr)
        sol = jf.optimize(
            FLOW, net, sgd, steps=round(T / lr), lr=lr, batch_size=8, key=key, ts=[T]
        )
        leaves = jax.tree.leaves(eqx.filter(sol.final, eqx.is_inexact_array))
        return jnp.concatenate([x.ravel() for x in leaves])

    errors, noise = [], []
    for lr in (0.04, 0.02, 0.01):
        ends = jax.vmap(lambda k: run(lr, k))(jax.random.split(jax.random.key(0), runs))
        errors.append(float(jnp.linalg.norm(ends.mean(0) - reference)))
        noise.append(float(jnp.linalg.norm(ends.std(0)) / np.sqrt(runs)))
    ratios = np.array(errors[:-1]) / np.array(errors[1:])
    assert np.all((ratios > 1.6) & (ratios < 2.5)), (errors, ratios)
    assert np.all(np.array(noise) < 0.2 * np.array(errors)), (noise, errors)
