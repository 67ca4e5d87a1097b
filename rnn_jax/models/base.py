"""The `Model` shape, and the dense heads and embeddings models put around layers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnn_jax.cells.base import Config, add_bias


class Model(NamedTuple):
    """A model: ``init(key) -> params`` and ``apply(params, inputs, *, length=None,
    initial_state=None, key=None) -> (final_state, outputs)``.

    ``inputs`` are time-major (``[T, B, F]`` floats or ``[T, B]`` token ids);
    ``key`` turns dropout on. ``decode`` is present on models that produce
    sequences without teacher forcing (seq2seq: greedy decoding); ``spec``
    records how the model was built.
    """

    init: Callable[[jax.Array], Any]
    apply: Callable[..., tuple[Any, Any]]
    spec: Config = Config()
    decode: Callable[..., jax.Array] | None = None


class Dense(NamedTuple):
    kernel: jax.Array  # [in, out]
    bias: jax.Array  # [out]


def dense_init(key: jax.Array, in_size: int, out_size: int) -> Dense:
    """A Glorot-uniform ``[in, out]`` kernel and a zero bias."""
    kernel = jax.nn.initializers.glorot_uniform()(key, (in_size, out_size), jnp.float32)
    return Dense(kernel, jnp.zeros((out_size,), jnp.float32))


def dense(params: Dense, x: jax.Array) -> jax.Array:
    """``x @ kernel + bias`` over any leading axes."""
    return add_bias(x @ params.kernel, params.bias)


def embedding_init(key: jax.Array, vocab_size: int, size: int) -> jax.Array:
    """An embedding table ``[vocab_size, size]`` of N(0, 1) rows."""
    return jax.random.normal(key, (vocab_size, size), jnp.float32)


class Inputs(NamedTuple):
    """How a model reads its inputs: float features, or token ids through an embedding."""

    size: int  # features fed to the first layer
    vocab_size: int | None

    def init(self, key: jax.Array) -> jax.Array | None:
        return None if self.vocab_size is None else embedding_init(key, self.vocab_size, self.size)

    def __call__(self, table: jax.Array | None, inputs: jax.Array) -> jax.Array:
        if table is None:
            return inputs
        return jnp.take(table, inputs, axis=0)


def resolve_inputs(input_size: int | None, vocab_size: int | None, embed_size: int) -> Inputs:
    """`Inputs` from exactly one of ``input_size`` (floats) and ``vocab_size`` (tokens)."""
    if (input_size is None) == (vocab_size is None):
        raise ValueError(
            "give exactly one of input_size (float features) and vocab_size (token ids); "
            f"got input_size={input_size}, vocab_size={vocab_size}"
        )
    if vocab_size is not None:
        return Inputs(embed_size, vocab_size)
    return Inputs(input_size, None)
