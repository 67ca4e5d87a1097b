"""Models: pooling and heads against hand-written references, sampling and decoding by feedback."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_jax as rj
from rnn_jax.models import classifier, draw, generator, sample, seq2seq, tagger


def test_classifier_reads_each_sequence_at_its_last_valid_step():
    cell = rj.gru(8)
    model = classifier(cell, 3, input_size=2)
    params = model.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (7, 4, 2))
    length = jnp.array([7, 3, 1, 5])
    _, logits = jax.jit(model.apply)(params, xs, length=length)
    _, unpadded = jax.jit(lambda p, x: rj.scan(cell, p, x, backend="reference"))(params.body, xs)
    last = unpadded[length - 1, jnp.arange(4)]  # each sequence's output at its last valid step
    expected = rj.models.dense(params.head, last)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)


def test_mean_and_max_pooling_ignore_padding():
    ys = jnp.arange(12.0).reshape(4, 3, 1)  # [T, B, H]
    length = jnp.array([4, 2, 1])
    np.testing.assert_allclose(rj.models.pool(ys, length, "mean")[:, 0], [4.5, 2.5, 2.0])
    np.testing.assert_allclose(rj.models.pool(ys, length, "max")[:, 0], [9.0, 4.0, 2.0])
    np.testing.assert_allclose(rj.models.pool(ys, length, "last")[:, 0], [9.0, 4.0, 2.0])


def test_tagger_over_tokens_and_bidirectional_layers():
    model = tagger(rj.bidirectional(rj.lstm(6)), 5, vocab_size=11, embed_size=4)
    params = model.init(jax.random.key(0))
    ids = jnp.array([[1, 2, 3], [4, 5, 6]]).T  # [T=3, B=2]
    _, logits = jax.jit(model.apply)(params, ids)
    assert logits.shape == (3, 2, 5)
    xs = params.embed[ids]
    _, ys = jax.jit(rj.bidirectional(rj.lstm(6)).apply)(params.body, xs)
    np.testing.assert_allclose(logits, rj.models.dense(params.head, ys), rtol=1e-5)


def test_greedy_sampling_is_the_argmax_fed_back():
    model = generator(rj.stack([rj.lstm(16), rj.gru(16)]), vocab_size=9, embed_size=8)
    params = model.init(jax.random.key(0))
    prompt = jnp.array([1, 4, 2])
    write = jax.jit(
        lambda p, k, t, top_k: sample(model, p, k, prompt, 6, temperature=t, top_k=top_k),
        static_argnums=(2, 3),
    )
    tokens = write(params, jax.random.key(1), 0.0, None)
    # Reading prompt and output in one pass, each position's argmax is the next token written.
    _, logits = jax.jit(model.apply)(params, jnp.concatenate([prompt, tokens]))
    np.testing.assert_array_equal(tokens, jnp.argmax(logits[2:-1], axis=-1))
    np.testing.assert_array_equal(write(params, jax.random.key(5), 1.0, 1), tokens)


def test_draw_keeps_to_the_top_k_and_sharpens_with_temperature():
    logits = jnp.array([0.0, 3.0, 1.0, 2.9, -1.0])
    keys = jax.random.split(jax.random.key(0), 2000)
    drawn = jax.vmap(lambda k: draw(k, logits, 1.0, 2))(keys)
    assert set(np.unique(drawn).tolist()) == {1, 3}
    cold = jax.vmap(lambda k: draw(k, logits, 0.05, None))(keys)
    assert np.mean(cold == 1) > 0.8
    with pytest.raises(ValueError, match="prompt"):
        sample(generator(rj.gru(4), 5), None, keys[0], jnp.zeros((0,), jnp.int32), 3)


@pytest.mark.parametrize("attention", ["additive", "multiplicative", None])
def test_seq2seq_decoding_feeds_back_and_ignores_source_padding(attention):
    model = seq2seq(
        rj.bidirectional(rj.gru(8)),
        rj.lstm(8),
        source_vocab=7,
        target_vocab=7,
        embed_size=6,
        attention=attention,
    )
    params = model.init(jax.random.key(0))
    source = jax.random.randint(jax.random.key(1), (5, 3), 3, 7)
    length = jnp.array([5, 3, 2])
    tokens = jax.jit(model.decode, static_argnums=3)(params, source, length, 4)
    decoder_inputs = jnp.concatenate([jnp.ones((1, 3), jnp.int32), tokens[:-1]])
    apply = jax.jit(lambda p, src: model.apply(p, (src, decoder_inputs), length=length)[1])
    logits = apply(params, source)
    np.testing.assert_array_equal(jnp.argmax(logits, -1), tokens)  # teacher forcing agrees
    noisy = jnp.where(jnp.arange(5)[:, None] < length[None], source, 6)
    np.testing.assert_allclose(apply(params, noisy), logits, rtol=1e-5, atol=1e-6)
