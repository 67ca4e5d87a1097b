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
per-head view that a fused kernel uses to keep only the blocks on chip. A
head's ``combine`` gets `HeadWeights`, exactly what it reads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnn_jax._validate import positive_int
from rnn_jax.cells.activations import resolve_activation
from rnn_jax.cells.arrays import zeros_state
from rnn_jax.cells.bound import bound
from rnn_jax.cells.capabilities import Gates, HeadedGates, PyTree
from rnn_jax.cells.cell import Cell, split_cell
from rnn_jax.cells.config import Config
from rnn_jax.cells.dense import DenseInit, input_projection, kernel_input_size
from rnn_jax.cells.gru import gru_gates
from rnn_jax.cells.initializers import Initializer, glorot_uniform, stacked_orthogonal, zeros
from rnn_jax.cells.lstm import LSTMOptions, lstm_gates, lstm_state
from rnn_jax.cells.simple import simple_gates


class MultiHeadParams(NamedTuple):
    kernel: jax.Array  # [F, NH*G*Hh], head-major columns (head, gate, unit)
    recurrent_kernel: jax.Array  # [NH, Hh, G*Hh]: one dense block per head
    bias: jax.Array  # [NH*G*Hh]
    recurrent_bias: jax.Array | None = None  # [NH*G*Hh]: GRU only (reset after)


class HeadWeights(NamedTuple):
    """What one head's gates read: its block of the recurrent matrix, and for a GRU its
    recurrent bias (`head_weights` gives them for all heads, with a leading head axis)."""

    recurrent_kernel: jax.Array  # [Hh, G*Hh]
    recurrent_bias: jax.Array | None = None  # [G*Hh]


class Heads(NamedTuple):
    """A multi-head cell's per-head parts and shape."""

    num_heads: int
    gate_count: int
    gates: Gates  # one head's, over `HeadWeights`
    initial_state: Callable[..., PyTree]  # one head's ``initial_state(head_weights, batch_shape)``
    recurrent_bias: bool  # whether there is a recurrent bias (the GRU)
    extra_bias: Callable[[int], jax.Array] | None  # added to each head's bias block at init


def _split(x: jax.Array, num_heads: int) -> jax.Array:
    x = x.reshape(*x.shape[:-1], num_heads, x.shape[-1] // num_heads)
    return jnp.moveaxis(x, -2, 0)


def _split_tree(tree: PyTree, *, num_heads: int) -> PyTree:
    return jax.tree.map(lambda x: _split(x, num_heads), tree)


def split_heads(num_heads: int) -> Callable[[PyTree], PyTree]:
    """``[*lead, num_heads * X]`` leaves to ``[num_heads, *lead, X]`` (head-major features)."""
    return bound(_split_tree, num_heads=num_heads)


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


def head_weights(params: MultiHeadParams) -> HeadWeights:
    """Every head's `HeadWeights`, leaves with a leading ``[num_heads]`` axis."""
    num_heads = params.recurrent_kernel.shape[0]
    rbias = params.recurrent_bias
    return HeadWeights(
        params.recurrent_kernel, None if rbias is None else rbias.reshape(num_heads, -1)
    )


def init_multihead(key, input_size, *, heads: Heads, hidden_size: int, init: DenseInit):
    """``init`` of a multi-head cell: a dense input kernel, one recurrent block per head."""
    positive_int("input_size", input_size)
    NH, G, dtype = heads.num_heads, heads.gate_count, init.dtype
    Hh = hidden_size // NH
    k_in, k_rec, k_bias, k_rbias = jax.random.split(key, 4)
    kernel = init.kernel_init(k_in, (input_size, NH * G * Hh), dtype)
    blocks = [init.recurrent_init(k, (Hh, G * Hh), dtype) for k in jax.random.split(k_rec, NH)]
    bias = init.bias_init(k_bias, (NH * G * Hh,), dtype)
    if heads.extra_bias is not None:
        bias = bias + jnp.tile(heads.extra_bias(Hh).astype(dtype), NH)
    rbias = init.bias_init(k_rbias, (NH * G * Hh,), dtype) if heads.recurrent_bias else None
    return MultiHeadParams(kernel, jnp.stack(blocks), bias, rbias)


def multihead_state(params, batch_shape=(), *, heads: Heads):
    """``initial_state``: one head's carry, each leaf ``num_heads`` times as wide."""
    one_head = heads.initial_state(head_weights(params), tuple(batch_shape))
    widen = lambda x: jnp.zeros((*x.shape[:-1], heads.num_heads * x.shape[-1]), x.dtype)
    return jax.tree.map(widen, one_head)


def dense_kernel(params: MultiHeadParams) -> jax.Array:
    """``Gates.kernel``: the block-diagonal ``[H, G*H]`` recurrent matrix."""
    return block_diagonal(params.recurrent_kernel)


def fed_back(carry, *, heads: Heads):
    """``Gates.fed_back``: each head's fed-back state, side by side."""
    return merge_heads(heads.gates.fed_back(_split_tree(carry, num_heads=heads.num_heads)))


def combine(params, carry, xp, hu, *, heads: Heads):
    """``Gates.combine``: each head's ``combine`` on its own slices, merged."""
    to_heads = split_heads(heads.num_heads)
    new, y = jax.vmap(heads.gates.combine)(
        head_weights(params), to_heads(carry), to_heads(xp), to_heads(hu)
    )
    return merge_heads(new), merge_heads(y)


def multihead_cell(
    *, name: str, heads: Heads, hidden_size: int, init: DenseInit, config: Config
) -> Cell:
    """The cell of ``heads.num_heads`` independent heads of ``hidden_size // num_heads`` units.

    The input projection is one dense ``[F, num_heads * gate_count * head_size]``
    matmul plus the bias (``heads.extra_bias(head_size)`` added to every head's
    block at init); each head runs ``heads.gates`` over its `HeadWeights`.
    """
    headed = HeadedGates(
        num_heads=heads.num_heads,
        gates=heads.gates,
        head_params=head_weights,
        to_heads=split_heads(heads.num_heads),
        from_heads=merge_heads,
    )
    gates = Gates(
        dense_kernel, bound(fed_back, heads=heads), bound(combine, heads=heads), heads=headed
    )
    return split_cell(
        init=bound(init_multihead, heads=heads, hidden_size=hidden_size, init=init),
        initial_state=bound(multihead_state, heads=heads),
        project=input_projection,
        gates=gates,
        input_size=kernel_input_size,
        name=name,
        config=config,
    )


def check_heads(hidden_size: int, num_heads: int) -> int:
    """The head size ``hidden_size // num_heads``, once both are positive ints and it divides."""
    positive_int("hidden_size", hidden_size)
    positive_int("num_heads", num_heads)
    if hidden_size % num_heads:
        raise ValueError(
            f"hidden_size must be a multiple of num_heads={num_heads}; got {hidden_size}"
        )
    return hidden_size // num_heads


def lstm_forget_bias(head_size: int, *, forget_bias: float) -> jax.Array:
    """One LSTM head's bias offsets: ``forget_bias`` on the forget gate, zeros elsewhere."""
    h = head_size
    return jnp.concatenate([jnp.zeros(h), jnp.full(h, forget_bias), jnp.zeros(2 * h)])


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
    Hh = check_heads(hidden_size, num_heads)
    heads = Heads(
        num_heads,
        gate_count=4,
        gates=lstm_gates(LSTMOptions(Hh, act=jnp.tanh, gate=jax.nn.sigmoid)),
        initial_state=bound(lstm_state, hidden_size=Hh, out_size=Hh),
        recurrent_bias=False,
        extra_bias=bound(lstm_forget_bias, forget_bias=forget_bias),
    )
    return multihead_cell(
        name="multihead_lstm",
        heads=heads,
        hidden_size=hidden_size,
        init=DenseInit(kernel_init, recurrent_init, bias_init, dtype),
        config=Config(hidden_size=hidden_size, num_heads=num_heads, forget_bias=forget_bias),
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
    Hh = check_heads(hidden_size, num_heads)
    heads = Heads(
        num_heads,
        gate_count=3,
        gates=gru_gates(jnp.tanh, jax.nn.sigmoid),
        initial_state=zeros_state(Hh),
        recurrent_bias=True,
        extra_bias=None,
    )
    return multihead_cell(
        name="multihead_gru",
        heads=heads,
        hidden_size=hidden_size,
        init=DenseInit(kernel_init, recurrent_init, bias_init, dtype),
        config=Config(hidden_size=hidden_size, num_heads=num_heads),
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
    Hh = check_heads(hidden_size, num_heads)
    heads = Heads(
        num_heads,
        gate_count=1,
        gates=simple_gates(resolve_activation("activation", activation)),
        initial_state=zeros_state(Hh),
        recurrent_bias=False,
        extra_bias=None,
    )
    return multihead_cell(
        name="multihead_simple",
        heads=heads,
        hidden_size=hidden_size,
        init=DenseInit(kernel_init, recurrent_init, bias_init, dtype),
        config=Config(hidden_size=hidden_size, num_heads=num_heads, activation=activation),
    )


__all__ = [
    "HeadWeights",
    "Heads",
    "MultiHeadParams",
    "block_diagonal",
    "head_weights",
    "merge_heads",
    "multihead_cell",
    "multihead_gru",
    "multihead_lstm",
    "multihead_simple",
    "split_heads",
]
