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


V = 6  # a vocabulary, one-hot as the Flax seq2seq example feeds it


def one_hot(ids):
    return jax.nn.one_hot(ids, V)


def test_seq2seq_reads_one_hot_vectors_as_embedding_by_the_identity():
    """Real-valued sources and one-hot decoder inputs are the token model whose embedding
    tables are the identity."""
    options = {"target_vocab": V, "attention": "multiplicative"}
    tokens = seq2seq(rj.gru(8), rj.gru(8), source_vocab=V, embed_size=V, **options)
    vectors = seq2seq(rj.gru(8), rj.gru(8), source_size=V, target_inputs="one_hot", **options)
    params = tokens.init(jax.random.key(0))
    params = params._replace(source_embed=jnp.eye(V), target_embed=jnp.eye(V))
    as_vectors = params._replace(source_embed=None, target_embed=None)
    shapes = jax.tree.map(jnp.shape, vectors.init(jax.random.key(0)))
    assert jax.tree.map(jnp.shape, as_vectors) == shapes
    source = jax.random.randint(jax.random.key(1), (5, 3), 0, V)
    decoder_inputs = jax.random.randint(jax.random.key(2), (4, 3), 0, V)
    length = jnp.array([5, 2, 4])
    _, want = tokens.apply(params, (source, decoder_inputs), length=length)
    _, got = vectors.apply(as_vectors, (one_hot(source), one_hot(decoder_inputs)), length=length)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(
        vectors.decode(as_vectors, one_hot(source), length, 4),
        tokens.decode(params, source, length, 4),
    )
    with pytest.raises(TypeError, match="source must be integer token ids.*source_size="):
        tokens.apply(params, (one_hot(source), decoder_inputs))
    with pytest.raises(ValueError, match=r"decoder_inputs must be real-valued features \[..., 6\]"):
        vectors.apply(as_vectors, (one_hot(source), decoder_inputs))


def bridged_model():
    return seq2seq(
        rj.lstm(8),
        rj.lstm(8),
        source_size=V,
        target_vocab=V,
        target_inputs="one_hot",
        attention=None,
        bridge=True,
    )


def test_seq2seq_bridge_starts_the_decoder_from_the_encoders_final_state():
    model = bridged_model()
    params = model.init(jax.random.key(0))
    source = jax.random.normal(jax.random.key(1), (5, 3, V))
    decoder_inputs = one_hot(jax.random.randint(jax.random.key(2), (4, 3), 0, V))
    length = jnp.array([5, 2, 4])
    _, logits = jax.jit(model.apply)(params, (source, decoder_inputs), length=length)

    @jax.jit
    def by_hand(params):  # Sutskever et al.: encode, then decode from the final state alone
        cell = rj.lstm(8)
        final, _ = rj.scan(cell, params.encoder, source, length=length, backend="reference")
        _, outs = rj.scan(
            cell, params.decoder, decoder_inputs, initial_state=final, backend="reference"
        )
        return rj.models.dense(params.head, outs)

    np.testing.assert_allclose(logits, by_hand(params), rtol=1e-5, atol=1e-6)
    for encoder, words in [(rj.bidirectional(rj.lstm(8)), "several"), (rj.lstm(6), r"\(6,\)")]:
        mismatched = seq2seq(
            encoder, rj.lstm(8), source_size=V, target_vocab=V, attention=None, bridge=True
        )
        with pytest.raises(ValueError, match=f"bridge=True starts the decoder.*{words}"):
            mismatched.init(jax.random.key(0))


def test_sampled_decoding_draws_with_a_key_per_step_and_its_logits_train_as_teacher_forcing():
    """The Flax example's training: the decoder feeds back tokens it samples, and the loss reads
    the logits of that run. They are the teacher-forced logits on the drawn tokens, gradients
    included (no gradient flows through a drawn token)."""
    model = bridged_model()
    params = model.init(jax.random.key(0))
    source = jax.random.normal(jax.random.key(1), (3, 5, V))  # batch-major, as Flax's
    length, key, steps = jnp.array([5, 2, 4]), jax.random.key(7), 4
    labels = jax.random.randint(jax.random.key(2), (3, steps), 0, V)

    def free_loss(params):
        run = model.decode(
            params, source, length, steps, begin=2, key=key, return_logits=True, time_major=False
        )
        tokens, logits = run
        return jnp.sum(jax.nn.log_softmax(logits) * one_hot(labels)), (tokens, logits)

    def forced_loss(params, tokens):
        fed = jnp.concatenate([jnp.full((3, 1), 2), tokens[:, :-1]], axis=1)
        _, logits = model.apply(params, (source, one_hot(fed)), length=length, time_major=False)
        return jnp.sum(jax.nn.log_softmax(logits) * one_hot(labels)), logits

    (_, (tokens, logits)), grads = jax.jit(jax.value_and_grad(free_loss, has_aux=True))(params)
    (_, forced), want = jax.jit(jax.value_and_grad(forced_loss, has_aux=True))(params, tokens)
    assert tokens.shape == (3, steps) and logits.shape == (3, steps, V)
    np.testing.assert_allclose(logits, forced, rtol=1e-5, atol=1e-6)
    jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6), grads, want)
    keys = jax.random.split(key, steps)  # one key per step, split before the loop
    drawn = jnp.stack([draw(keys[t], logits[:, t], 1.0, None) for t in range(steps)], axis=1)
    np.testing.assert_array_equal(tokens, drawn)
    greedy = model.decode(params, source, length, steps, begin=2, time_major=False)
    np.testing.assert_array_equal(greedy[:, 0], jnp.argmax(logits[:, 0], -1))


def test_models_take_batch_major_data_with_time_major_false():
    xs = jax.random.normal(jax.random.key(1), (7, 3, 2))
    mask = jax.random.bernoulli(jax.random.key(2), 0.8, (7, 3))
    for model in [classifier(rj.gru(8), 3, input_size=2), tagger(rj.lstm(8), 4, input_size=2)]:
        params = model.init(jax.random.key(0))
        _, want = model.apply(params, xs, mask=mask)
        _, got = model.apply(params, xs.swapaxes(0, 1), mask=mask.T, time_major=False)
        np.testing.assert_allclose(got, want if want.ndim == 2 else want.swapaxes(0, 1), rtol=1e-6)
    # Token ids with two batch axes: [*batch, T] in, [*batch, T, outputs] out, as rj.scan's.
    model = tagger(rj.gru(8), 4, vocab_size=5)
    params = model.init(jax.random.key(0))
    ids = jax.random.randint(jax.random.key(3), (7, 2, 3), 0, 5)
    _, want = model.apply(params, ids)
    _, got = model.apply(params, jnp.moveaxis(ids, 0, -1), time_major=False)
    np.testing.assert_allclose(got, jnp.moveaxis(want, 0, -2), rtol=1e-6)
