"""Block-diagonal multi-head recurrences: LSTM, GRU and Elman cells split into heads.

A multi-head cell of ``hidden_size = num_heads * head_size`` units is
``num_heads`` independent dense cells of ``head_size`` units that share the
input: the input projection is one dense ``[F, num_heads * G * head_size]``
matmul, the recurrent matrix is block-diagonal (one ``[head_size, G *
head_size]`` block per head), as in FlashRNN and xLSTM's sLSTM. Each head's
gate math is the dense cell's own ``Gates.combine``, so ``num_heads=1`` is the
dense cell with its recurrent kernel stored as ``[1, H, G*H]``.

Feature layouts are head-major: the state ``h [*batch, H]`` holds head 0's
units, then head 1's, ...; the projected input ``xp [*batch, num_heads * G *
head_size]`` holds head 0's gates (in the dense cell's gate order), then head
1's.

The cells expose the dense `Gates` contract (their ``kernel`` is the full
block-diagonal ``[H, G*H]`` matrix, so every backend that uses ``Gates`` runs
them unchanged) and, in its typed ``heads`` field, a `HeadedGates`: the
per-head view that a fused kernel uses to keep only the blocks on chip.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnn_jax.cells.base import (
    Cell,
    Gates,
    HeadedGates,
    Initializer,
    PyTree,
    check_positive_int,
    glorot_uniform,
    split_cell,
    stacked_orthogonal,
    zeros,
)
from rnn_jax.cells.dense import input_projection, kernel_input_size
from rnn_jax.cells.gru import GRUParams, gru
from rnn_jax.cells.lstm import LSTMParams, lstm
from rnn_jax.cells.simple import SimpleParams, simple


class MultiHeadParams(NamedTuple):
    kernel: jax.Array  # [F, NH*G*Hh], head-major columns (head, gate, unit)
    recurrent_kernel: jax.Array  # [NH, Hh, G*Hh]: one dense block per head
    bias: jax.Array  # [NH*G*Hh]
    recurrent_bias: jax.Array | None = None  # [NH*G*Hh]: GRU only (reset after)


def split_heads(num_heads: int) -> Callable[[PyTree], PyTree]:
    """``[*lead, num_heads * X]`` leaves to ``[num_heads, *lead, X]`` (head-major features)."""

    def split(x):
        x = x.reshape(*x.shape[:-1], num_heads, x.shape[-1] // num_heads)
        return jnp.moveaxis(x, -2, 0)

    return lambda tree: jax.tree.map(split, tree)


def merge_heads(tree: PyTree) -> PyTree:
    """``[num_heads, *lead, X]`` leaves to ``[*lead, num_heads * X]`` (inverse of `split_heads`)."""

    def merge(x):
        x = jnp.moveaxis(x, 0, -2)
        return x.reshape(*x.shape[:-2], x.shape[-2] * x.shape[-1])

    return jax.tree.map(merge, tree)


def block_diagonal(blocks: jax.Array) -> jax.Array:
    """``[NH, R, C]`` blocks to the dense ``[NH*R, NH*C]`` block-diagonal matrix."""
    nh, r, c = blocks.shape
    eye = jnp.eye(nh, dtype=blocks.dtype)
    return jnp.einsum("nrc,nm->nrmc", blocks, eye).reshape(nh * r, nh * c)


def multihead_cell(
    *,
    name: str,
    head_gates: Gates,
    head_state: Callable[..., PyTree],
    head_params: Callable[[MultiHeadParams], PyTree],
    hidden_size: int,
    num_heads: int,
    gate_count: int,
    with_recurrent_bias: bool,
    extra_bias: Callable[[int], jax.Array] | None,
    kernel_init: Initializer,
    recurrent_init: Initializer,
    bias_init: Initializer,
    dtype: Any,
    config: dict[str, Any],
) -> Cell:
    """The cell of ``num_heads`` independent heads of ``hidden_size // num_heads`` units.

    ``head_gates`` and ``head_state`` (an ``initial_state``) are one head's, over
    the parameters ``head_params`` gives a head; the input projection is one
    dense ``[F, num_heads * gate_count * head_size]`` matmul plus the bias
    (``extra_bias(head_size)`` added to every head's block at init).
    """
    NH, G = num_heads, gate_count
    Hh = hidden_size // num_heads
    to_heads = split_heads(NH)

    def init(key, input_size):
        check_positive_int("input_size", input_size)
        k_in, k_rec, k_bias, k_rbias = jax.random.split(key, 4)
        kernel = kernel_init(k_in, (input_size, NH * G * Hh), dtype)
        recurrent = jnp.stack(
            [recurrent_init(k, (Hh, G * Hh), dtype) for k in jax.random.split(k_rec, NH)]
        )
        bias = bias_init(k_bias, (NH * G * Hh,), dtype)
        if extra_bias is not None:
            bias = bias + jnp.tile(extra_bias(Hh).astype(dtype), NH)
        rbias = bias_init(k_rbias, (NH * G * Hh,), dtype) if with_recurrent_bias else None
        return MultiHeadParams(kernel, recurrent, bias, rbias)

    def initial_state(params, batch_shape=()):
        one_head = head_state(head_params(params), tuple(batch_shape))
        return jax.tree.map(
            lambda x: jnp.zeros((*x.shape[:-1], NH * x.shape[-1]), x.dtype), one_head
        )

    def dense_kernel(params):
        return block_diagonal(params.recurrent_kernel)

    def fed_back(carry):
        return merge_heads(head_gates.fed_back(to_heads(carry)))

    def combine(params, carry, xp, hu):
        new, y = jax.vmap(head_gates.combine)(
            head_params(params), to_heads(carry), to_heads(xp), to_heads(hu)
        )
        return merge_heads(new), merge_heads(y)

    heads = HeadedGates(
        num_heads=NH,
        gates=head_gates,
        head_params=head_params,
        to_heads=to_heads,
        from_heads=merge_heads,
    )
    return split_cell(
        init=init,
        initial_state=initial_state,
        project=input_projection,
        gates=Gates(dense_kernel, fed_back, combine, heads=heads),
        input_size=kernel_input_size,
        name=name,
        config=config,
    )


def check_heads(hidden_size: int, num_heads: int) -> None:
    check_positive_int("hidden_size", hidden_size)
    check_positive_int("num_heads", num_heads)
    if hidden_size % num_heads:
        raise ValueError(
            f"hidden_size must be a multiple of num_heads={num_heads}; got {hidden_size}"
        )


def multihead_lstm(
    hidden_size: int,
    num_heads: int,
    *,
    forget_bias: float = 1.0,
    kernel_init: Initializer = glorot_uniform,
    recurrent_init: Initializer = stacked_orthogonal,
    bias_init: Initializer = zeros,
    dtype=jnp.float32,
) -> Cell:
    """LSTM with a block-diagonal recurrent matrix of ``num_heads`` heads (FlashRNN, sLSTM).

    Each head is a dense ``rj.lstm(hidden_size // num_heads)``; the input
    projection is shared and dense. Carry ``LSTMState(h, c)``, both
    ``[*batch, hidden_size]`` with head-major units; output ``h``.

    Example:
        >>> cell = rj.multihead_lstm(768, num_heads=12)
        >>> params = cell.init(jax.random.key(0), 768)
        >>> params.recurrent_kernel.shape
        (12, 64, 256)
    """
    check_heads(hidden_size, num_heads)
    Hh = hidden_size // num_heads

    def head_params(params):
        return LSTMParams(kernel=None, recurrent_kernel=params.recurrent_kernel, bias=None)

    head = lstm(Hh)
    return multihead_cell(
        name="multihead_lstm",
        head_gates=head.gates,
        head_state=head.initial_state,
        head_params=head_params,
        hidden_size=hidden_size,
        num_heads=num_heads,
        gate_count=4,
        with_recurrent_bias=False,
        extra_bias=lambda h: jnp.concatenate(
            [jnp.zeros(h), jnp.full(h, forget_bias), jnp.zeros(2 * h)]
        ),
        kernel_init=kernel_init,
        recurrent_init=recurrent_init,
        bias_init=bias_init,
        dtype=dtype,
        config={"hidden_size": hidden_size, "num_heads": num_heads, "forget_bias": forget_bias},
    )


def multihead_gru(
    hidden_size: int,
    num_heads: int,
    *,
    kernel_init: Initializer = glorot_uniform,
    recurrent_init: Initializer = stacked_orthogonal,
    bias_init: Initializer = zeros,
    dtype=jnp.float32,
) -> Cell:
    """GRU (reset gate after the recurrent matmul) with ``num_heads`` block-diagonal heads.

    Each head is a dense ``rj.gru(hidden_size // num_heads)`` with its own
    recurrent bias block. Carry and output ``h: [*batch, hidden_size]``.

    Example:
        >>> cell = rj.multihead_gru(64, num_heads=4)
        >>> cell.init(jax.random.key(0), 8).recurrent_kernel.shape
        (4, 16, 48)
    """
    check_heads(hidden_size, num_heads)
    Hh = hidden_size // num_heads
    NH = num_heads

    def head_params(params):
        return GRUParams(
            kernel=None,
            recurrent_kernel=params.recurrent_kernel,
            bias=None,
            recurrent_bias=params.recurrent_bias.reshape(NH, 3 * Hh),
        )

    head = gru(Hh)
    return multihead_cell(
        name="multihead_gru",
        head_gates=head.gates,
        head_state=head.initial_state,
        head_params=head_params,
        hidden_size=hidden_size,
        num_heads=num_heads,
        gate_count=3,
        with_recurrent_bias=True,
        extra_bias=None,
        kernel_init=kernel_init,
        recurrent_init=recurrent_init,
        bias_init=bias_init,
        dtype=dtype,
        config={"hidden_size": hidden_size, "num_heads": num_heads},
    )


def multihead_simple(
    hidden_size: int,
    num_heads: int,
    *,
    activation: str | Callable[[jax.Array], jax.Array] = "tanh",
    kernel_init: Initializer = glorot_uniform,
    recurrent_init: Initializer = stacked_orthogonal,
    bias_init: Initializer = zeros,
    dtype=jnp.float32,
) -> Cell:
    """Elman RNN with ``num_heads`` block-diagonal heads: ``h = act(x W + b + h U_blockdiag)``.

    Carry and output ``h: [*batch, hidden_size]``.

    Example:
        >>> cell = rj.multihead_simple(32, num_heads=2)
        >>> cell.init(jax.random.key(0), 8).recurrent_kernel.shape
        (2, 16, 16)
    """
    check_heads(hidden_size, num_heads)
    Hh = hidden_size // num_heads

    def head_params(params):
        return SimpleParams(kernel=None, recurrent_kernel=params.recurrent_kernel, bias=None)

    head = simple(Hh, activation=activation)
    return multihead_cell(
        name="multihead_simple",
        head_gates=head.gates,
        head_state=head.initial_state,
        head_params=head_params,
        hidden_size=hidden_size,
        num_heads=num_heads,
        gate_count=1,
        with_recurrent_bias=False,
        extra_bias=None,
        kernel_init=kernel_init,
        recurrent_init=recurrent_init,
        bias_init=bias_init,
        dtype=dtype,
        config={"hidden_size": hidden_size, "num_heads": num_heads, "activation": activation},
    )


__all__ = [
    "MultiHeadParams",
    "block_diagonal",
    "merge_heads",
    "multihead_cell",
    "multihead_gru",
    "multihead_lstm",
    "multihead_simple",
    "split_heads",
]
