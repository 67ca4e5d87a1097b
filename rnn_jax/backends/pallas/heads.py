"""The fused kernel's view of a cell: ``num_heads`` blocks of the recurrent matrix.

The fused kernel runs one program per (head, batch tile) and keeps that
head's ``[R_head, G*H_head]`` block of the recurrent matrix on chip. A dense
cell (``rj.lstm``, ``rj.gru``, ``rj.simple``, any cell with `Gates`) is one
head; the block-diagonal cells of `rnn_jax.cells.multihead` carry their own
`HeadedGates`.
"""

from __future__ import annotations

import jax

from rnn_jax.cells.capabilities import Gates, HeadedGates
from rnn_jax.cells.cell import Cell


def _add_head_axis(tree):
    return jax.tree.map(lambda x: x[None], tree)


def _drop_head_axis(tree):
    return jax.tree.map(lambda x: x[0], tree)


def dense_heads(gates: Gates) -> HeadedGates:
    """The one-head view of a dense cell's `Gates`: every leaf gets a leading axis of size 1.

    Example:
        >>> heads = dense_heads(rj.lstm(32).gates)
        >>> heads.num_heads
        1
    """
    return HeadedGates(
        num_heads=1,
        gates=gates,
        head_params=_add_head_axis,
        to_heads=_add_head_axis,
        from_heads=_drop_head_axis,
    )


def head_view(cell: Cell) -> HeadedGates:
    """The `HeadedGates` of a cell with `Gates`: its declared ``heads``, or the one-head view."""
    if cell.gates.heads is not None:
        return cell.gates.heads
    return dense_heads(cell.gates)


def recurrent_blocks(cell: Cell, params) -> jax.Array:
    """The recurrent matrix of ``cell`` as the fused kernel holds it: ``[heads, R_head, G*H_head]``.

    Example:
        >>> cell = rj.lstm(16)
        >>> recurrent_blocks(cell, cell.init(jax.random.key(0), 4)).shape
        (1, 16, 64)
    """
    heads = head_view(cell)
    return jax.vmap(heads.gates.kernel)(heads.head_params(params))
