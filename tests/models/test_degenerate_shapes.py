"""Models over degenerate shapes: no steps, no sequences, no valid step run without an
internal error and give finite outputs and gradients; a sequence without a valid step pools
to zeros, so a classifier then outputs its head's bias."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import pytest

import rnn_jax as rj

H = 3
SHAPES = [(0, 2), (3, 0), (3, 2)]  # (T, B); lengths all 0


@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
def test_a_classifier_pools_a_sequence_without_valid_steps_to_zeros(pooling):
    model = rj.models.classifier(rj.gru(H), 2, input_size=2, pooling=pooling)
    params = model.init(jax.random.key(0))

    @jax.jit
    def logits_and_grads(params, xs, length):
        def loss(params):
            logits = model.apply(params, xs, length=length)[1]
            return jnp.sum(jnp.sin(logits)), logits

        return jax.grad(loss, has_aux=True)(params)

    for steps, batch in SHAPES:
        xs, length = jnp.ones((steps, batch, 2)), jnp.zeros((batch,), jnp.int32)
        grads, logits = logits_and_grads(params, xs, length)
        chex.assert_trees_all_equal(logits, jnp.broadcast_to(params.head.bias, (batch, 2)))
        chex.assert_tree_all_finite(grads)


@pytest.mark.parametrize("attention", [None, "additive"])
def test_seq2seq_without_source_steps_target_steps_or_sequences(attention):
    model = rj.models.seq2seq(
        rj.gru(H), rj.gru(H), source_vocab=5, target_vocab=5, embed_size=4, attention=attention
    )
    params = model.init(jax.random.key(0))
    apply = jax.jit(model.apply)
    for source, target, batch in [(0, 2, 2), (3, 0, 2), (3, 2, 0)]:
        inputs = (jnp.ones((source, batch), jnp.int32), jnp.ones((target, batch), jnp.int32))
        length = jnp.full((batch,), source, jnp.int32)
        _, logits = apply(params, inputs, length=length)
        assert logits.shape == (target, batch, 5)
        chex.assert_tree_all_finite(logits)


def test_a_tagger_over_no_steps_and_no_sequences():
    model = rj.models.tagger(rj.bidirectional(rj.gru(H)), 2, vocab_size=7)
    params = model.init(jax.random.key(0))
    apply = jax.jit(model.apply)
    for steps, batch in SHAPES:
        _, logits = apply(params, jnp.zeros((steps, batch), jnp.int32))
        assert logits.shape == (steps, batch, 2)
