"""Models over one sequence layer: many-to-one classifier, many-to-many tagger and forecaster,
one-to-many generator (a language model that samples with ``lax.scan``)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnn_jax.backends.masking import valid_steps
from rnn_jax.cells.cell import Cell
from rnn_jax.cells.config import Config
from rnn_jax.layers.base import Layer, output_size, step_arguments
from rnn_jax.layers.rnn import as_layer
from rnn_jax.models.base import (
    Dense,
    Model,
    dense,
    dense_init,
    from_time_major,
    resolve_inputs,
    to_time_major,
)


class SequenceParams(NamedTuple):
    embed: jax.Array | None  # [vocab, E] for token inputs
    body: Any  # the layer's params
    head: Dense  # [H, outputs]


POOLINGS = ("last", "mean", "max")


def pool(
    ys: jax.Array, length: jax.Array | None, how: str, mask: jax.Array | None = None
) -> jax.Array:
    """``ys: [T, *batch, H]`` reduced over the valid steps (by ``length [*batch]`` and ``mask
    [T, *batch]``, as in ``rj.scan``): the last valid step, the mean or the max; zeros for a
    sequence without a valid step (``T = 0`` included).

    Example:
        >>> ys = jnp.arange(4.0).reshape(4, 1, 1)
        >>> float(pool(ys, jnp.array([3]), "last")[0, 0]), float(pool(ys, None, "mean")[0, 0])
        (2.0, 1.5)
    """
    steps = ys.shape[0]
    if steps == 0:
        return jnp.zeros(ys.shape[1:], ys.dtype)
    valid = valid_steps(length, mask, steps)
    if valid is None:
        valid = jnp.ones(ys.shape[:-1], bool)
    if how == "last":  # the latest valid step (the first one where none is)
        index = steps - 1 - jnp.argmax(jnp.flip(valid, axis=0), axis=0)
        index = jnp.where(jnp.any(valid, axis=0), index, 0)[None, ..., None]
        return jnp.take_along_axis(ys, jnp.broadcast_to(index, (1, *ys.shape[1:])), axis=0)[0]
    counted = valid[..., None]
    if how == "mean":
        total = jnp.maximum(jnp.sum(valid, axis=0), 1)[..., None]
        return jnp.sum(ys * counted, axis=0) / total
    return jnp.where(jnp.any(counted, axis=0), jnp.max(jnp.where(counted, ys, -jnp.inf), axis=0), 0)


def _sequence_model(
    body: Cell | Layer,
    num_outputs: int,
    *,
    input_size: int | None,
    vocab_size: int | None,
    embed_size: int,
    pooling: str | None,
    kind: str,
) -> Model:
    layer = as_layer(body)
    reader = resolve_inputs(input_size, vocab_size, embed_size)
    if pooling is not None and pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}; got {pooling!r}")

    def init(key):
        k_embed, k_body, k_head = jax.random.split(key, 3)
        params = layer.init(k_body, reader.size)
        width = output_size(layer, params, reader.size)
        return SequenceParams(reader.init(k_embed), params, dense_init(k_head, width, num_outputs))

    def apply(
        params,
        inputs,
        *,
        length=None,
        initial_state=None,
        key=None,
        resets=None,
        mask=None,
        time_major=True,
    ):
        # The model pools over time itself, so it reads time-major data whatever comes.
        inputs = to_time_major(inputs, reader.feature_rank, time_major)
        resets, mask = to_time_major((resets, mask), 0, time_major)
        xs = reader(params.embed, inputs)
        state, ys = layer.apply(
            params.body,
            xs,
            length=length,
            initial_state=initial_state,
            key=key,
            **step_arguments(resets, mask),
        )
        if pooling is not None:
            return state, dense(params.head, pool(ys, length, pooling, mask))
        return state, from_time_major(dense(params.head, ys), 1, time_major)

    spec = {
        "kind": kind,
        "layer": layer,
        "outputs": num_outputs,
        "pooling": pooling,
        "input_size": input_size,
        "vocab_size": vocab_size,
        "embed_size": embed_size,
    }
    return Model(init=init, apply=apply, spec=Config(spec))


def classifier(
    body: Cell | Layer,
    num_outputs: int,
    *,
    input_size: int | None = None,
    vocab_size: int | None = None,
    embed_size: int = 32,
    pooling: str = "last",
) -> Model:
    """Many-to-one: a layer over the sequence, pooled over time, then a dense head.

    ``apply(params, inputs [T, B, F] or ids [T, B]) -> (state, outputs [B, num_outputs])``
    (logits for classes, values for regression). ``pooling`` picks the output
    at each sequence's last valid step (``"last"``), or the mean or max over
    its valid steps.

    Example:
        >>> model = rj.models.classifier(rj.lstm(32), 10, input_size=1)
        >>> params = model.init(jax.random.key(0))
        >>> _, logits = model.apply(params, jnp.ones((64, 8, 1)))
        >>> logits.shape
        (8, 10)
    """
    return _sequence_model(
        body,
        num_outputs,
        input_size=input_size,
        vocab_size=vocab_size,
        embed_size=embed_size,
        pooling=pooling,
        kind="classifier",
    )


def tagger(
    body: Cell | Layer,
    num_outputs: int,
    *,
    input_size: int | None = None,
    vocab_size: int | None = None,
    embed_size: int = 32,
) -> Model:
    """Many-to-many: a dense head on the layer's output at every step.

    ``apply(params, inputs) -> (state, outputs [T, B, num_outputs])``. Tags
    (logits) or, as `forecaster`, values.

    Example:
        >>> model = rj.models.tagger(rj.bidirectional(rj.gru(16)), 5, vocab_size=100)
        >>> params = model.init(jax.random.key(0))
        >>> _, logits = model.apply(params, jnp.zeros((12, 3), jnp.int32))
        >>> logits.shape
        (12, 3, 5)
    """
    return _sequence_model(
        body,
        num_outputs,
        input_size=input_size,
        vocab_size=vocab_size,
        embed_size=embed_size,
        pooling=None,
        kind="tagger",
    )


def forecaster(body: Cell | Layer, input_size: int, num_outputs: int | None = None) -> Model:
    """Many-to-many regression: ``num_outputs`` values (default ``input_size``) at every step."""
    model = tagger(body, num_outputs or input_size, input_size=input_size)
    return model._replace(spec=model.spec.replace(kind="forecaster"))


def generator(body: Cell | Layer, vocab_size: int, *, embed_size: int = 32) -> Model:
    """One-to-many: a language model, next-token logits at every step; sample with `sample`.

    Example:
        >>> model = rj.models.generator(rj.lstm(32), vocab_size=20)
        >>> params = model.init(jax.random.key(0))
        >>> tokens = rj.models.sample(model, params, jax.random.key(1), jnp.array([3, 4]), 10)
        >>> tokens.shape
        (10,)
    """
    model = tagger(body, vocab_size, vocab_size=vocab_size, embed_size=embed_size)
    return model._replace(spec=model.spec.replace(kind="generator"))


def check_sampling(temperature: float, top_k: int | None) -> None:
    """Refuses, naming it, a negative ``temperature`` or a ``top_k`` that is not a positive int."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0; got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be a positive int or None; got {top_k}")


def draw(key: jax.Array, logits: jax.Array, temperature: float, top_k: int | None) -> jax.Array:
    """One token per row of ``logits [..., V]``: argmax at temperature 0, else a sample
    from ``softmax(logits / temperature)`` restricted to the ``top_k`` largest."""
    if temperature == 0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def sample(
    model: Model,
    params: Any,
    key: jax.Array,
    prompt: jax.Array,
    steps: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
) -> jax.Array:
    """Tokens a generator writes after ``prompt``, each fed back as the next input.

    ``prompt: [P]`` or ``[P, B]`` token ids (``P >= 1``) is read in one pass;
    then a ``lax.scan`` of ``steps`` steps draws a token (`draw`) and feeds it
    back through ``model.apply`` with the carried state. Returns ``[steps]``
    or ``[steps, B]``. Jit-compatible with ``steps``, ``temperature`` and
    ``top_k`` static.
    """
    prompt = jnp.asarray(prompt)
    if prompt.ndim not in (1, 2) or prompt.shape[0] < 1:
        raise ValueError(f"prompt must be token ids [P] or [P, B] with P >= 1; got {prompt.shape}")
    check_sampling(temperature, top_k)
    state, logits = model.apply(params, prompt)

    def step(carry, k):
        state, last = carry
        token = draw(k, last, temperature, top_k)
        state, out = model.apply(params, token[None], initial_state=state)
        return (state, out[0]), token

    _, tokens = jax.lax.scan(step, (state, logits[-1]), jax.random.split(key, steps))
    return tokens
