"""The `Model` shape, and the dense heads and embeddings models put around layers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnn_jax.cells.arrays import add_bias
from rnn_jax.cells.config import Config


class Model(NamedTuple):
    """A model: ``init(key) -> params`` and ``apply(params, inputs, *, length=None,
    initial_state=None, key=None, time_major=True) -> (final_state, outputs)``.

    ``inputs`` are time-major (``[T, B, F]`` floats or ``[T, B]`` token ids),
    or batch-major with ``time_major=False`` (``[*batch, T, F]`` or
    ``[*batch, T]``, as ``rj.scan``'s; outputs then come batch-major too);
    ``key`` turns dropout on. ``decode`` is present on models that
    produce sequences without teacher forcing (seq2seq: each drawn token fed
    back, greedy or sampled); ``spec`` records how the model was built.
    """

    init: Callable[[jax.Array], Any]
    apply: Callable[..., tuple[Any, Any]]
    spec: Config = Config()
    decode: Callable[..., Any] | None = None


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


def to_time_major(tree: Any, feature_rank: int, time_major: bool) -> Any:
    """The arrays of ``tree``, batch-major ``[*batch, T, *features]`` with ``feature_rank``
    feature axes, as time-major ``[T, *batch, *features]``; ``tree`` itself when
    ``time_major`` (``rj.scan``'s convention). Nones pass.

    Example:
        >>> to_time_major(jnp.zeros((2, 5, 3)), 1, time_major=False).shape
        (5, 2, 3)
    """
    if time_major:
        return tree
    return jax.tree.map(lambda x: jnp.moveaxis(x, x.ndim - 1 - feature_rank, 0), tree)


def from_time_major(tree: Any, feature_rank: int, time_major: bool) -> Any:
    """The inverse of `to_time_major`: ``[T, *batch, *features]`` back to batch-major."""
    if time_major:
        return tree
    return jax.tree.map(lambda x: jnp.moveaxis(x, 0, x.ndim - 1 - feature_rank), tree)


class Inputs(NamedTuple):
    """How a model reads its inputs: float features, or token ids through an embedding.

    ``name`` and ``hint`` (the option that builds a model for real-valued
    inputs) make the errors say what came and what to do.
    """

    size: int  # features fed to the first layer
    vocab_size: int | None
    name: str = "inputs"
    hint: str = "input_size="

    @property
    def feature_rank(self) -> int:
        """Feature axes of one step's input: none for token ids, one for features."""
        return 0 if self.vocab_size is not None else 1

    def init(self, key: jax.Array) -> jax.Array | None:
        return None if self.vocab_size is None else embedding_init(key, self.vocab_size, self.size)

    def __call__(self, table: jax.Array | None, inputs: jax.Array) -> jax.Array:
        """``[*lead, size]`` features from ``inputs``: floats as they are, ids embedded."""
        inputs = jnp.asarray(inputs)
        if table is None:
            if not jnp.issubdtype(inputs.dtype, jnp.floating) or inputs.shape[-1:] != (self.size,):
                raise ValueError(
                    f"{self.name} must be real-valued features [..., {self.size}]; "
                    f"got {inputs.dtype}{list(inputs.shape)}"
                )
            return inputs
        if not jnp.issubdtype(inputs.dtype, jnp.integer):
            raise TypeError(
                f"{self.name} must be integer token ids below {self.vocab_size}; got "
                f"{inputs.dtype}{list(inputs.shape)} (for real-valued {self.name}, build the "
                f"model with {self.hint})"
            )
        return jnp.take(table, inputs, axis=0)

    def of_tokens(self, table: jax.Array | None, ids: jax.Array) -> jax.Array:
        """Token ``ids`` as inputs: embedded, or one-hot over ``size`` classes without a table
        (the reading of a decoder fed one-hot vectors)."""
        if table is None:
            return jax.nn.one_hot(ids, self.size, dtype=jnp.float32)
        return jnp.take(table, ids, axis=0)


def resolve_inputs(
    input_size: int | None,
    vocab_size: int | None,
    embed_size: int,
    *,
    name: str = "inputs",
    options: tuple[str, str] = ("input_size", "vocab_size"),
) -> Inputs:
    """`Inputs` from exactly one of ``input_size`` (floats) and ``vocab_size`` (tokens), given
    to the model as the ``options`` (their names in its signature)."""
    if (input_size is None) == (vocab_size is None):
        floats, tokens = options
        raise ValueError(
            f"give exactly one of {floats} (float features) and {tokens} (token ids); "
            f"got {floats}={input_size}, {tokens}={vocab_size}"
        )
    hint = f"{options[0]}="
    if vocab_size is not None:
        return Inputs(embed_size, vocab_size, name, hint)
    return Inputs(input_size, None, name, hint)
