"""Layers and models over packed episodes (resets) and masked steps: exact against running
each episode on its own."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_jax as rj

F, H = 3, 4
EPISODES = (3, 4)  # two episodes packed into one sequence of 7 steps


def close(got, want, tol=2e-5):
    jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=tol, atol=tol), got, want)


@pytest.mark.parametrize(
    "build",
    [
        lambda: rj.bidirectional(rj.gru(H)),
        lambda: rj.stack([rj.bidirectional(rj.lstm(H)), rj.rnn(rj.gru(H), reverse=True)]),
    ],
    ids=["bidirectional", "stack"],
)
def test_a_packed_sequence_equals_its_episodes_run_apart(build):
    layer = build()
    params = layer.init(jax.random.key(0), F)
    xs = jax.random.normal(jax.random.key(1), (sum(EPISODES), 1, F))
    resets = jnp.zeros((sum(EPISODES), 1), bool).at[EPISODES[0]].set(True)
    _, packed = jax.jit(lambda p, x: layer.apply(p, x, resets=resets))(params, xs)
    apart = [layer.apply(params, xs[:3])[1], layer.apply(params, xs[3:])[1]]
    close(packed, jnp.concatenate(apart))


@pytest.mark.parametrize("direction", [rj.gru(H), rj.rnn(rj.gru(H))], ids=["cell", "layer"])
def test_masked_steps_are_skipped_by_layers_and_pooling(direction):
    # a layer's backward direction is a reversed_layer, whose flip carries the mask along
    model = rj.models.classifier(rj.bidirectional(direction), 2, input_size=F, pooling="mean")
    params = model.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (6, 2, F))
    mask = jnp.array([[1, 1], [0, 1], [1, 1], [0, 1], [1, 0], [1, 0]], bool)
    _, logits = model.apply(params, xs, mask=mask)
    for b in range(2):
        kept = xs[np.asarray(mask[:, b]), b][:, None]  # the sequence without its holes
        _, want = model.apply(params, kept)
        close(logits[b], want[0])


def test_a_reversed_layer_refuses_resets_in_words():
    layer = rj.bidirectional(rj.rnn(rj.gru(H)))
    resets = jnp.zeros((6, 2), bool).at[3].set(True)
    with pytest.raises(ValueError, match="reversed_layer .* no exact form for resets"):
        layer.apply(layer.init(jax.random.key(0), F), jnp.ones((6, 2, F)), resets=resets)
