"""Masked losses and metrics against NumPy, and optimizers' clipping and schedules."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import rnn_jax as rj
from rnn_jax.train import losses


def test_masked_mse_and_cross_entropy_match_numpy():
    rng = np.random.default_rng(0)
    predictions, targets = rng.normal(size=(5, 3, 2)), rng.normal(size=(5, 3, 2))
    mask = (rng.uniform(size=(5, 3)) > 0.4).astype(np.float32)
    total, weight = losses.mse(jnp.asarray(predictions), jnp.asarray(targets), jnp.asarray(mask))
    expected = ((predictions - targets) ** 2).mean(-1)[mask > 0].mean()
    np.testing.assert_allclose(float(total / weight), expected, rtol=1e-5)

    logits, labels = rng.normal(size=(5, 3, 4)), rng.integers(0, 4, (5, 3))
    total, weight = losses.cross_entropy(jnp.asarray(logits), jnp.asarray(labels), mask)
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    picked = np.take_along_axis(log_p, labels[..., None], -1)[..., 0]
    np.testing.assert_allclose(float(total / weight), -picked[mask > 0].mean(), rtol=1e-5)


def test_accuracy_counts_masked_steps_and_whole_sequences():
    labels = jnp.array([[1, 2], [0, 1], [2, 2]])  # [T=3, B=2]
    tokens = jnp.array([[1, 2], [0, 0], [0, 2]])
    mask = jnp.array([[1, 1], [1, 1], [0, 1]])
    total, weight = losses.accuracy(tokens, labels, mask)
    assert (float(total), float(weight)) == (4.0, 5.0)
    total, weight = losses.sequence_accuracy(tokens, labels, mask)
    assert (float(total), float(weight)) == (1.0, 2.0)  # the first is right where it counts
    logits = jax.nn.one_hot(tokens, 3)
    assert float(losses.accuracy(logits, labels, mask)[0]) == 4.0
    halves = jnp.zeros((4, 2))  # two equally likely classes: one bit each
    total, weight = losses.bits_per_char(halves, jnp.array([0, 1, 1, 0]), jnp.ones(4))
    np.testing.assert_allclose(losses.finish({"bpc": (total, weight)})["bpc"], 1.0, rtol=1e-6)


def test_clipping_by_global_norm_is_on_by_default():
    optimizer, _ = rj.train.make_optimizer("sgd", 1.0, momentum=0.0)
    params = {"a": jnp.zeros(3), "b": jnp.zeros(2)}
    grads = {"a": jnp.full(3, 100.0), "b": jnp.full(2, -50.0)}
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    np.testing.assert_allclose(float(optax.tree.norm(updates)), 1.0, rtol=1e-5)
    unclipped, _ = rj.train.make_optimizer("sgd", 1.0, momentum=0.0, clip_norm=None)
    updates, _ = unclipped.update(grads, unclipped.init(params), params)
    assert float(optax.tree.norm(updates)) > 100


def test_schedules_warm_up_and_decay():
    _, cosine = rj.train.make_optimizer("adam", 0.1, steps=100, schedule_name="cosine", warmup=10)
    assert float(cosine(0)) == 0.0 and abs(float(cosine(10)) - 0.1) < 1e-7
    assert abs(float(cosine(100)) - 0.001) < 1e-6
    _, linear = rj.train.make_optimizer("rmsprop", 0.1, steps=50, schedule_name="linear")
    assert float(linear(50)) == 0.0
    _, exponential = rj.train.make_optimizer("adamw", 0.1, steps=50, schedule_name="exponential")
    np.testing.assert_allclose(float(exponential(50)), 0.001, rtol=1e-4)
