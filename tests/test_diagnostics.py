"""Gradient flow: the probe's gradient is dL/dh_t exactly, and the picture it gives is right."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_jax as rj
from rnn_jax import diagnostics

TASK = rj.data.adding(length=16)


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_probe_gradients_equal_the_gradient_with_respect_to_the_state(name):
    cell = getattr(rj, name)(8)
    model, _ = diagnostics.probed_model(cell, TASK)
    params = model.init(jax.random.key(0))
    norms = diagnostics.gradient_norms(cell, TASK, batch_size=4, params=params)
    batch = next(iter(TASK.test.batches(4)))
    xs, targets = jnp.asarray(batch.inputs), jnp.asarray(batch.targets)

    @partial(jax.jit, static_argnums=0)
    def direct(t):
        """dL/dh_t by cutting the sequence at t and differentiating the rest in h_t."""
        carry, _ = jax.lax.scan(
            lambda c, x: cell.step(params.body, c, x), cell.initial_state(params.body, (4,)), xs[:t]
        )

        def rest(h):
            c = carry._replace(h=h) if hasattr(carry, "h") else h
            _, ys = jax.lax.scan(lambda c, x: cell.step(params.body, c, x), c, xs[t:])
            prediction = ys[-1] @ params.head.kernel + params.head.bias
            return jnp.sum((prediction - targets) ** 2)

        h = carry.h if hasattr(carry, "h") else carry
        return jnp.mean(jnp.linalg.norm(jax.grad(rest)(h), axis=-1))

    for t in (1, 7, 15):  # h_t is the state after step t
        np.testing.assert_allclose(float(direct(t)), norms[t - 1], rtol=2e-4)


def test_probe_changes_nothing_at_zero():
    cell = rj.lstm(6)
    probed = diagnostics.probe(cell, 6)
    params = probed.init(jax.random.key(0), 2 + 6)
    xs = jax.random.normal(jax.random.key(1), (5, 3, 2))
    _, ys = rj.scan(cell, params, xs)
    _, probed_ys = rj.scan(probed, params, jnp.concatenate([xs, jnp.zeros((5, 3, 6))], -1))
    np.testing.assert_allclose(probed_ys, ys, rtol=1e-6)


def test_the_elman_gradient_vanishes_over_long_spans():
    norms = diagnostics.gradient_norms(rj.simple(16), rj.data.adding(length=60), batch_size=8)
    assert norms.shape == (60,) and np.all(np.isfinite(norms))
    assert norms[0] < norms[-1] / 10


def test_gradient_flow_refuses_token_tasks():
    with pytest.raises(ValueError, match="float inputs"):
        diagnostics.probed_model(rj.gru(4), rj.data.translation())
