"""Encoder–decoder: the decoder reads the encoder through attention, additive (Bahdanau et al.
2015) or multiplicative (Luong et al. 2015), through the encoder's last output fed at every step
(Cho et al. 2014), or only through its final state (the bridge of Sutskever et al. 2014).

The decoder is a `Cell` built around the decoder cell for each batch: it closes over the
encoder's outputs (the memory), so ``rj.scan`` runs it with teacher forcing and ``lax.scan``
runs it free, feeding back each token drawn from its logits. A cell cannot draw: the decode
loop does, greedily or with one key per step split before the loop.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp

from rnn_jax._driver import scan
from rnn_jax.backends.masking import valid_steps
from rnn_jax.cells.cell import Cell
from rnn_jax.cells.config import Config
from rnn_jax.layers.base import Layer, output_size, step_arguments
from rnn_jax.layers.rnn import as_layer
from rnn_jax.models.base import (
    Dense,
    Inputs,
    Model,
    dense,
    dense_init,
    from_time_major,
    resolve_inputs,
    to_time_major,
)
from rnn_jax.models.sequence import check_sampling, draw, pool

ATTENTIONS = ("additive", "multiplicative", None)
TARGET_INPUTS = ("ids", "one_hot")


class AdditiveParams(NamedTuple):
    memory: jax.Array  # [M, A]
    query: jax.Array  # [H, A]
    score: jax.Array  # [A]


class MultiplicativeParams(NamedTuple):
    kernel: jax.Array  # [M, H]: score = s . (m W)
    combine: Dense  # [M + H, H]: the attentional state tanh(W [c; s])


class Seq2SeqParams(NamedTuple):
    source_embed: jax.Array | None  # [V_src, E]; None for real-valued sources
    target_embed: jax.Array | None  # [V_tgt, E]; None for one-hot decoder inputs
    encoder: Any
    decoder: Any
    attention: AdditiveParams | MultiplicativeParams | None
    head: Dense


class Plan(NamedTuple):
    """What `seq2seq` checked and built, read by the functions that init and run the model.

    ``reading`` is how the decoder reads the encoder at each step:
    ``"additive"``, ``"multiplicative"``, ``"last"`` (the encoder's last
    output fed at every step) or ``"state"`` (the bridge alone).
    """

    encoder: Layer
    decoder: Cell
    source: Inputs
    target: Inputs
    target_vocab: int
    reading: Literal["additive", "multiplicative", "last", "state"]
    attention_size: int | None
    bridge: bool


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


def fed_size(reading: str, memory: int, hidden: int) -> int:
    """Features the decoder cell reads beside each input: the context, the previous attentional
    state (Luong's input feeding) or nothing."""
    return {"additive": memory, "last": memory, "multiplicative": hidden, "state": 0}[reading]


def head_size(reading: str, memory: int, hidden: int) -> int:
    """Features the output head reads: ``[s; c]`` where a context is fed, else one state."""
    return hidden + memory if reading in ("additive", "last") else hidden


def init_attention(plan: Plan, keys: jax.Array, memory: int, hidden: int):
    """Attention parameters from ``keys[0:3]``: additive ``(W_m, W_s, v)``, multiplicative
    ``(W, W_c)``, or None."""
    glorot = jax.nn.initializers.glorot_uniform()
    if plan.reading == "additive":
        size = plan.attention_size or hidden
        return AdditiveParams(
            glorot(keys[0], (memory, size)),
            glorot(keys[1], (hidden, size)),
            jax.random.normal(keys[2], (size,)) / jnp.sqrt(size),
        )
    if plan.reading == "multiplicative":
        combine = dense_init(keys[1], memory + hidden, hidden)
        return MultiplicativeParams(glorot(keys[0], (memory, hidden)), combine)
    return None


def check_bridge(plan: Plan, encoder_params: Any, decoder_params: Any) -> None:
    """The encoder's final state must be a carry of the decoder, leaf for leaf."""
    zeros = jnp.zeros((1, plan.source.size))
    final = jax.eval_shape(lambda p: plan.encoder.apply(p, zeros)[0], encoder_params)
    carry = jax.eval_shape(lambda p: plan.decoder.initial_state(p, ()), decoder_params)

    def shapes(tree):
        return jax.tree.map(lambda leaf: leaf.shape, tree)

    if jax.tree.structure(final) != jax.tree.structure(carry) or shapes(final) != shapes(carry):
        raise ValueError(
            "bridge=True starts the decoder from the encoder's final state, so that state must "
            f"be a carry of the decoder cell: the encoder's is {shapes(final)}, the decoder's "
            f"carry {shapes(carry)} (a bidirectional or stacked encoder has several)"
        )


def init_params(plan: Plan, key: jax.Array) -> Seq2SeqParams:
    """The model's parameters; the keys go where they always went, so a seed keeps its model."""
    keys = jax.random.split(key, 8)
    p_enc = plan.encoder.init(keys[0], plan.source.size)
    memory = output_size(plan.encoder, p_enc, plan.source.size)
    probe = plan.decoder.init(keys[1], plan.target.size)
    hidden = cell_output_size(plan.decoder, probe, plan.target.size)
    p_dec = plan.decoder.init(keys[1], plan.target.size + fed_size(plan.reading, memory, hidden))
    if plan.bridge:
        check_bridge(plan, p_enc, p_dec)
    return Seq2SeqParams(
        source_embed=plan.source.init(keys[5]),
        target_embed=plan.target.init(keys[6]),
        encoder=p_enc,
        decoder=p_dec,
        attention=init_attention(plan, keys[2:5], memory, hidden),
        head=dense_init(keys[7], head_size(plan.reading, memory, hidden), plan.target_vocab),
    )


def context_reader(plan: Plan, att: Any, memory: jax.Array, length, mask):
    """``query [B, H] -> context [B, M]`` over the source's valid steps (by ``length`` and
    ``mask``); the memory's side of the scores is computed once per sequence."""
    valid = valid_steps(length, mask, memory.shape[0])
    if plan.reading == "additive":
        keys = memory @ att.memory  # [S, B, A]
        return lambda q: attend(jnp.tanh(keys + (q @ att.query)[None]) @ att.score, memory, valid)
    if plan.reading == "multiplicative":
        keys = memory @ att.kernel  # [S, B, H]
        return lambda q: attend(jnp.sum(keys * q[None], axis=-1), memory, valid)
    last = pool(memory, length, "last", mask)
    return lambda q: last


def context_step(decoder: Cell, context, p: Seq2SeqParams, carry, x):
    """Additive attention (queried by the previous output) and the last output: the context
    joins the cell's input and its output."""
    cell_carry, previous = carry
    c = context(previous)
    cell_carry, s = decoder.step(p.decoder, cell_carry, jnp.concatenate([x, c], -1))
    return (cell_carry, s), jnp.concatenate([s, c], -1)


def input_feeding_step(decoder: Cell, context, p: Seq2SeqParams, carry, x):
    """Luong: the cell reads the previous attentional state; ``h~ = tanh(W_c [c(s); s])``."""
    cell_carry, previous = carry
    cell_carry, s = decoder.step(p.decoder, cell_carry, jnp.concatenate([x, previous], -1))
    h_tilde = jnp.tanh(dense(p.attention.combine, jnp.concatenate([context(s), s], -1)))
    return (cell_carry, h_tilde), h_tilde


def state_step(decoder: Cell, context, p: Seq2SeqParams, carry, x):
    """The bridge alone: the source reached the decoder through its initial state."""
    del context
    cell_carry, _ = carry
    cell_carry, s = decoder.step(p.decoder, cell_carry, x)
    return (cell_carry, s), s


STEPS = {
    "additive": context_step,
    "last": context_step,
    "multiplicative": input_feeding_step,
    "state": state_step,
}


def prepare(plan: Plan, params: Seq2SeqParams, source, length, key, resets, mask):
    """Encodes ``source [S, B, ...]``; returns the decoder `Cell` reading the encoder and its
    carry ``(cell carry, previous output)``: the encoder's final state with the bridge, else
    the decoder cell's initial state."""
    xs = plan.source(params.source_embed, source)
    final, memory = plan.encoder.apply(
        params.encoder, xs, length=length, key=key, **step_arguments(resets, mask)
    )  # memory: [S, B, M]
    batch_shape = memory.shape[1:-1]
    context = None
    if plan.reading != "state":
        context = context_reader(plan, params.attention, memory, length, mask)
    # The decoder's output size, read off the head that reads it (`head_size`).
    hidden = params.head.kernel.shape[0] - head_size(plan.reading, memory.shape[-1], 0)
    start = final if plan.bridge else plan.decoder.initial_state(params.decoder, batch_shape)
    carry = (start, jnp.zeros((*batch_shape, hidden), memory.dtype))
    cell = Cell(
        init=lambda key, size: params,
        initial_state=lambda p, batch_shape=(): carry,
        step=partial(STEPS[plan.reading], plan.decoder, context),
        name=f"{plan.decoder.name} decoder reading the encoder's {plan.reading}",
    )
    return cell, carry


def teacher_forced(
    plan: Plan,
    params: Seq2SeqParams,
    inputs,
    *,
    length=None,
    initial_state=None,
    key=None,
    resets=None,
    mask=None,
    time_major=True,
):
    """``inputs = (source, decoder_inputs)`` -> ``(decoder_state, logits [T, B, V])``;
    ``length``, ``resets`` and ``mask`` describe the source."""
    source, decoder_inputs = inputs
    source = to_time_major(source, plan.source.feature_rank, time_major)
    decoder_inputs = to_time_major(decoder_inputs, plan.target.feature_rank, time_major)
    resets, mask = to_time_major((resets, mask), 0, time_major)
    cell, carry = prepare(plan, params, source, length, key, resets, mask)
    xs = plan.target(params.target_embed, decoder_inputs)
    start = carry if initial_state is None else initial_state
    state, outs = scan(cell, params, xs, initial_state=start)
    return state, from_time_major(dense(params.head, outs), 1, time_major)


def free_running(
    plan: Plan,
    params: Seq2SeqParams,
    source,
    length=None,
    steps=None,
    begin=1,
    *,
    key=None,
    temperature=1.0,
    top_k=None,
    return_logits=False,
    resets=None,
    mask=None,
    time_major=True,
):
    """Tokens ``[steps, B]`` decoded from ``begin``, each drawn token fed back: the argmax
    without ``key``, else drawn by `draw` with one key per step (split before the loop);
    with ``return_logits``, ``(tokens, logits [steps, B, V])``, differentiable in ``params``."""
    check_sampling(temperature, top_k)
    source = to_time_major(source, plan.source.feature_rank, time_major)
    resets, mask = to_time_major((resets, mask), 0, time_major)
    cell, carry = prepare(plan, params, source, length, None, resets, mask)
    steps = steps or source.shape[0] + 1
    first = jnp.broadcast_to(jnp.asarray(begin, jnp.int32), carry[1].shape[:-1])
    keys = None if key is None else jax.random.split(key, steps)

    def body(state, step_key):
        carry, token = state
        carry, out = cell.step(params, carry, plan.target.of_tokens(params.target_embed, token))
        logits = dense(params.head, out)
        if step_key is None:
            token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        else:
            token = draw(step_key, logits, temperature, top_k)
        return (carry, token), ((token, logits) if return_logits else token)

    _, drawn = jax.lax.scan(body, (carry, first), keys, length=steps)
    if not return_logits:
        return from_time_major(drawn, 0, time_major)
    tokens, logits = drawn
    return from_time_major(tokens, 0, time_major), from_time_major(logits, 1, time_major)


def target_reader(target_inputs: str, target_vocab: int, embed_size: int) -> Inputs:
    """How the decoder reads its inputs: embedded ids, or vectors over the target vocabulary."""
    if target_inputs == "ids":
        return Inputs(embed_size, target_vocab, "decoder_inputs", "target_inputs='one_hot'")
    if target_inputs == "one_hot":
        return Inputs(target_vocab, None, "decoder_inputs")
    raise ValueError(f"target_inputs must be one of {TARGET_INPUTS}; got {target_inputs!r}")


def seq2seq(
    encoder: Cell | Layer,
    decoder: Cell,
    *,
    source_vocab: int | None = None,
    target_vocab: int,
    embed_size: int = 32,
    attention: Literal["additive", "multiplicative"] | None = "additive",
    attention_size: int | None = None,
    source_size: int | None = None,
    target_inputs: Literal["ids", "one_hot"] = "ids",
    bridge: bool = False,
) -> Model:
    """Encoder–decoder, with attention or the encoder-state bridge.

    ``apply(params, (source, decoder_inputs), length=source_length [B])``
    returns ``(decoder_state, logits [T, B, target_vocab])`` with teacher
    forcing: ``decoder_inputs`` are the targets shifted right behind a begin
    token. ``decode(params, source, length, steps, begin=1, *, key=None,
    temperature=1.0, top_k=None, return_logits=False)`` feeds each token back
    (a ``lax.scan``): greedy without ``key``, else sampled (`draw`) with one
    key per step; ``tokens [steps, B]``, or ``(tokens, logits)``. Both take
    ``resets`` and ``mask`` for the source, and ``time_major=False`` for
    batch-major data in and out.

    - Source: token ids ``[S, B]`` (``source_vocab``, embedded) or
      real-valued features ``[S, B, source_size]``: give exactly one.
    - Decoder inputs: ids ``[T, B]`` (``target_inputs="ids"``, embedded), or
      vectors over the target vocabulary ``[T, B, target_vocab]``
      (``"one_hot"``, read as they are; ``decode`` feeds tokens back one-hot).
    - ``bridge``: the decoder starts from the encoder's final state
      (Sutskever et al. 2014; Keras' seq2seq tutorial), which must be a carry
      of the decoder cell (encoder ``rj.lstm(H)``, decoder ``rj.lstm(H)``).
    - ``attention="additive"`` (Bahdanau): the context of step t is attended
      from the decoder's previous output, ``score = v . tanh(m W_m + s W_s)``;
      the cell reads ``[x_t; c_t]`` and the head sees ``[s_t; c_t]``.
    - ``"multiplicative"`` (Luong, "general"): the cell reads
      ``[x_t; h~_{t-1}]`` (input feeding), then ``score = s_t . (m W)`` and
      ``h~_t = tanh(W_c [c_t; s_t])`` feeds the head.
    - ``None``: with the bridge, the source reaches the decoder through its
      state alone; without, the encoder's output at the last valid source
      step is the context at every step (Cho et al. 2014).

    Example:
        >>> model = rj.models.seq2seq(rj.bidirectional(rj.gru(16)), rj.gru(16),
        ...                           source_vocab=13, target_vocab=13)
        >>> params = model.init(jax.random.key(0))
        >>> src, dec = jnp.ones((7, 2), jnp.int32), jnp.ones((8, 2), jnp.int32)
        >>> _, logits = model.apply(params, (src, dec), length=jnp.array([7, 4]))
        >>> logits.shape
        (8, 2, 13)
        >>> bridged = rj.models.seq2seq(rj.lstm(16), rj.lstm(16), source_size=5,
        ...     target_vocab=13, target_inputs="one_hot", attention=None, bridge=True)
        >>> params = bridged.init(jax.random.key(0))
        >>> bridged.decode(params, jnp.ones((2, 7, 5)), steps=4, key=jax.random.key(1),
        ...                time_major=False).shape
        (2, 4)
    """
    if attention not in ATTENTIONS:
        raise ValueError(f"attention must be one of {ATTENTIONS}; got {attention!r}")
    if not isinstance(decoder, Cell):
        raise TypeError(f"decoder must be an rnn_jax Cell; got {type(decoder).__name__}")
    source = resolve_inputs(
        source_size,
        source_vocab,
        embed_size,
        name="source",
        options=("source_size", "source_vocab"),
    )
    target = target_reader(target_inputs, target_vocab, embed_size)
    plan = Plan(
        encoder=as_layer(encoder),
        decoder=decoder,
        source=source,
        target=target,
        target_vocab=target_vocab,
        reading=attention or ("state" if bridge else "last"),
        attention_size=attention_size,
        bridge=bool(bridge),
    )
    spec = {
        "kind": "seq2seq",
        "encoder": plan.encoder,
        "decoder": decoder,
        "attention": attention,
        "source_vocab": source_vocab,
        "source_size": source_size,
        "target_vocab": target_vocab,
        "target_inputs": target_inputs,
        "embed_size": embed_size,
        "bridge": plan.bridge,
    }
    return Model(
        init=partial(init_params, plan),
        apply=partial(teacher_forced, plan),
        spec=Config(spec),
        decode=partial(free_running, plan),
    )
