"""Encoder–decoder with additive (Bahdanau et al. 2015) or multiplicative (Luong et al. 2015)
attention.

The decoder is a `Cell` built around the decoder cell for each batch: it
closes over the encoder's outputs (the memory), so ``rj.scan`` runs it with
teacher forcing and ``lax.scan`` runs it greedily, feeding each output back.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnn_jax._driver import scan
from rnn_jax.backends.masking import valid_steps
from rnn_jax.cells.base import Cell, Config
from rnn_jax.layers.base import Layer, as_layer, output_size
from rnn_jax.models.base import Dense, Model, dense, dense_init, embedding_init
from rnn_jax.models.sequence import pool

ATTENTIONS = ("additive", "multiplicative", None)


class AdditiveParams(NamedTuple):
    memory: jax.Array  # [M, A]
    query: jax.Array  # [H, A]
    score: jax.Array  # [A]


class MultiplicativeParams(NamedTuple):
    kernel: jax.Array  # [M, H]: score = s . (m W)
    combine: Dense  # [M + H, H]: the attentional state tanh(W [c; s])


class Seq2SeqParams(NamedTuple):
    source_embed: jax.Array  # [V_src, E]
    target_embed: jax.Array  # [V_tgt, E]
    encoder: Any
    decoder: Any
    attention: AdditiveParams | MultiplicativeParams | None
    head: Dense


def attend(scores: jax.Array, memory: jax.Array, valid: jax.Array | None) -> jax.Array:
    """Softmax over source steps of ``scores [S, B]`` (masked by ``valid``); context ``[B, M]``."""
    if valid is not None:
        scores = jnp.where(valid, scores, -1e30)
    weights = jax.nn.softmax(scores, axis=0)
    return jnp.sum(weights[..., None] * memory, axis=0)


def cell_output_size(cell: Cell, params: Any, input_size: int) -> int:
    """The size of ``cell.step``'s output for ``input_size`` inputs (shape-only)."""

    def run(p):
        return cell.step(p, cell.initial_state(p, ()), jnp.zeros((input_size,)))[1]

    return jax.eval_shape(run, params).shape[-1]


def seq2seq(
    encoder: Cell | Layer,
    decoder: Cell,
    *,
    source_vocab: int,
    target_vocab: int,
    embed_size: int = 32,
    attention: str | None = "additive",
    attention_size: int | None = None,
) -> Model:
    """Encoder–decoder over token ids, with attention.

    ``apply(params, (source [S, B], decoder_inputs [T, B]), length=source_length [B])``
    returns ``(decoder_state, logits [T, B, target_vocab])`` with teacher
    forcing: ``decoder_inputs`` are the targets shifted right behind a begin
    token. ``decode(params, source, length, steps, begin=1) -> tokens [steps, B]``
    decodes greedily, each output fed back by a ``lax.scan``.

    - ``"additive"`` (Bahdanau): the context of step t is attended from the
      decoder's previous output, ``score = v . tanh(m W_m + s W_s)``; the cell
      reads ``[embed(y_{t-1}); c_t]`` and the head sees ``[s_t; c_t]``.
    - ``"multiplicative"`` (Luong, "general"): the cell reads
      ``[embed(y_{t-1}); h~_{t-1}]`` (input feeding), then
      ``score = s_t . (m W)`` and ``h~_t = tanh(W_c [c_t; s_t])`` feeds the head.
    - ``None``: no attention; the context is the encoder's output at the last
      valid source step, fed at every step (Cho et al. 2014).

    Example:
        >>> model = rj.models.seq2seq(rj.bidirectional(rj.gru(16)), rj.gru(16),
        ...                           source_vocab=13, target_vocab=13)
        >>> params = model.init(jax.random.key(0))
        >>> src, dec = jnp.ones((7, 2), jnp.int32), jnp.ones((8, 2), jnp.int32)
        >>> _, logits = model.apply(params, (src, dec), length=jnp.array([7, 4]))
        >>> logits.shape
        (8, 2, 13)
    """
    if attention not in ATTENTIONS:
        raise ValueError(f"attention must be one of {ATTENTIONS}; got {attention!r}")
    if not isinstance(decoder, Cell):
        raise TypeError(f"decoder must be an rnn_jax Cell; got {type(decoder).__name__}")
    enc = as_layer(encoder)
    glorot = jax.nn.initializers.glorot_uniform()

    def init(key):
        keys = jax.random.split(key, 8)
        p_enc = enc.init(keys[0], embed_size)
        memory = output_size(enc, p_enc, embed_size)
        # Luong's input feeding makes the decoder's input size its own output size.
        hidden = cell_output_size(decoder, decoder.init(keys[1], embed_size), embed_size)
        fed = hidden if attention == "multiplicative" else memory
        p_dec = decoder.init(keys[1], embed_size + fed)
        if attention == "additive":
            size = attention_size or hidden
            p_att = AdditiveParams(
                glorot(keys[2], (memory, size)),
                glorot(keys[3], (hidden, size)),
                jax.random.normal(keys[4], (size,)) / jnp.sqrt(size),
            )
        elif attention == "multiplicative":
            p_att = MultiplicativeParams(
                glorot(keys[2], (memory, hidden)), dense_init(keys[3], memory + hidden, hidden)
            )
        else:
            p_att = None
        head_in = hidden if attention == "multiplicative" else hidden + memory
        return Seq2SeqParams(
            source_embed=embedding_init(keys[5], source_vocab, embed_size),
            target_embed=embedding_init(keys[6], target_vocab, embed_size),
            encoder=p_enc,
            decoder=p_dec,
            attention=p_att,
            head=dense_init(keys[7], head_in, target_vocab),
        )

    def prepare(params, source, length, key, resets=None, mask=None):
        """Encodes the source; returns the attending decoder `Cell` and its initial carry.

        Attention reads only the source's valid steps (by ``length`` and ``mask``)."""
        xs = jnp.take(params.source_embed, source, axis=0)
        _, memory = enc.apply(
            params.encoder, xs, length=length, key=key, resets=resets, mask=mask
        )  # [S, B, M]
        steps, batch_shape = memory.shape[0], memory.shape[1:-1]
        valid = valid_steps(length, mask, steps)
        att = params.attention
        if attention == "additive":
            keys = memory @ att.memory  # [S, B, A], once per sequence
            context = lambda q: attend(
                jnp.tanh(keys + (q @ att.query)[None]) @ att.score, memory, valid
            )
        elif attention == "multiplicative":
            keys = memory @ att.kernel  # [S, B, H]
            context = lambda q: attend(jnp.sum(keys * q[None], axis=-1), memory, valid)
        else:
            last = pool(memory, length, "last", mask)
            context = lambda q: last

        def step(p, carry, x):
            cell_carry, previous = carry
            if attention == "multiplicative":
                cell_carry, s = decoder.step(
                    p.decoder, cell_carry, jnp.concatenate([x, previous], -1)
                )
                h_tilde = jnp.tanh(dense(p.attention.combine, jnp.concatenate([context(s), s], -1)))
                return (cell_carry, h_tilde), h_tilde
            c = context(previous)
            cell_carry, s = decoder.step(p.decoder, cell_carry, jnp.concatenate([x, c], -1))
            return (cell_carry, s), jnp.concatenate([s, c], -1)

        fed = att.kernel.shape[-1] if attention == "multiplicative" else memory.shape[-1]
        hidden = cell_output_size(decoder, params.decoder, embed_size + fed)
        carry = (
            decoder.initial_state(params.decoder, batch_shape),
            jnp.zeros((*batch_shape, hidden), memory.dtype),
        )
        cell = Cell(
            init=lambda key, size: params,
            initial_state=lambda p, batch_shape=(): carry,
            step=step,
            name=f"{decoder.name} decoder with {attention} attention",
        )
        return cell, carry

    def apply(params, inputs, *, length=None, initial_state=None, key=None, resets=None, mask=None):
        """``inputs = (source [S, B], decoder_inputs [T, B])``; ``length``, ``resets`` and
        ``mask`` describe the source."""
        source, decoder_inputs = inputs
        cell, carry = prepare(params, source, length, key, resets, mask)
        xs = jnp.take(params.target_embed, decoder_inputs, axis=0)
        state, outs = scan(
            cell, params, xs, initial_state=carry if initial_state is None else initial_state
        )
        return state, dense(params.head, outs)

    def decode(params, source, length=None, steps=None, begin=1, *, resets=None, mask=None):
        cell, carry = prepare(params, source, length, None, resets, mask)
        first = jnp.full(source.shape[1:], begin, jnp.int32)

        def body(state, _):
            carry, token = state
            carry, out = cell.step(params, carry, jnp.take(params.target_embed, token, axis=0))
            token = jnp.argmax(dense(params.head, out), axis=-1).astype(jnp.int32)
            return (carry, token), token

        _, tokens = jax.lax.scan(body, (carry, first), None, length=steps or source.shape[0] + 1)
        return tokens

    spec = {
        "kind": "seq2seq",
        "encoder": enc,
        "decoder": decoder,
        "attention": attention,
        "source_vocab": source_vocab,
        "target_vocab": target_vocab,
        "embed_size": embed_size,
    }
    return Model(init=init, apply=apply, spec=Config(spec), decode=decode)
