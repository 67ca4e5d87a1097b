"""The ``checkpointed`` backend: the reference's values and gradients, and O(√T) memory."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_jax as rj
from rnn_jax.backends import Checkpointed
from rnn_jax.backends.checkpointed import segment_size

T, B, F, H = 11, 3, 4, 5
LENGTH = np.array([11, 0, 6])

CELLS = {
    "lstm": rj.lstm(H),
    "gru": rj.gru(H),
    "simple": rj.simple(H),
    "mgu": rj.mgu(H),  # no Gates: segments run the hoisted scan under autodiff
}


def grads_and_outputs(cell, backend, length, reverse):
    rng = np.random.default_rng(0)
    shapes = jax.eval_shape(lambda key: cell.init(key, F), jax.random.key(0))
    params = jax.tree.map(lambda s: jnp.asarray(0.5 * rng.standard_normal(s.shape)), shapes)
    xs = jnp.asarray(rng.standard_normal((T, B, F)), jnp.float32)

    def loss(params, xs):
        final, ys = rj.scan(cell, params, xs, length=length, reverse=reverse, backend=backend)
        out = jax.tree.leaves((final, ys))
        return sum(jnp.sum(jnp.sin(o)) for o in out), (final, ys)

    return jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True))(params, xs)


@pytest.mark.parametrize(
    ("name", "segment", "lengths", "reverse"),
    [
        ("lstm", None, True, False),  # 4 segments of 3 steps: one padded step
        ("lstm", 5, False, True),
        ("gru", 2, True, True),
        ("simple", 11, False, False),  # one segment
        ("mgu", 4, True, True),
    ],
)
def test_matches_reference(name, segment, lengths, reverse):
    cell = CELLS[name]
    length = jnp.asarray(LENGTH) if lengths else None
    got = grads_and_outputs(cell, Checkpointed(segment=segment), length, reverse)
    want = grads_and_outputs(cell, "reference", length, reverse)
    chex.assert_trees_all_close(got, want, rtol=5e-5, atol=5e-5)


def test_segment_size_is_ceil_sqrt():
    assert [segment_size(t) for t in (1, 2, 4, 5, 16384, 16385)] == [1, 2, 2, 3, 128, 129]
    with pytest.raises(ValueError, match="segment"):
        Checkpointed(segment=0)


def temp_bytes(backend, steps=16_384):
    """Temporary memory XLA plans for a gradient of a loss on the final state."""
    cell = rj.lstm(16)
    params = cell.init(jax.random.key(0), 4)
    xs = jnp.zeros((steps, 2, 4))

    def loss(params):
        final, _ = rj.scan(cell, params, xs, backend=backend)
        return jnp.sum(final.h**2)

    compiled = jax.jit(jax.grad(loss)).lower(params).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_memory_for_a_gradient_at_16k_steps_is_an_eighth_of_sequential():
    sequential, checkpointed_ = temp_bytes("sequential"), temp_bytes("checkpointed")
    assert checkpointed_ * 8 <= sequential, (checkpointed_, sequential)
    # And it is O(√T): nowhere near one stored step per time step (16384 * 2 * 16 floats).
    assert checkpointed_ < 16_384 * 2 * 16 * 4 / 4
