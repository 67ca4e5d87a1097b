"""Array helpers shared by the cells: broadcasts written out, carry dtypes, zero carries."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rnn_jax.cells.bound import bound
from rnn_jax.cells.capabilities import Params


def along(vector: jax.Array, y: jax.Array) -> jax.Array:
    """``vector [*tail]`` with leading unit axes, to broadcast against ``y [*lead, *tail]``.

    Broadcasts are written out so cells also run under
    ``jax_numpy_rank_promotion="raise"`` (as Equinox runs its tests).
    """
    return vector.reshape((1,) * (y.ndim - vector.ndim) + vector.shape)


def add_bias(y: jax.Array, bias: jax.Array) -> jax.Array:
    """``y + bias`` for ``y [*lead, G]`` and ``bias [G]``."""
    return y + along(bias, y)


def dtype_of(params: Params) -> jnp.dtype:
    """The dtype of a cell's carry: float32 or wider, whatever the parameters' dtype.

    Low-precision (bf16/fp16) parameters keep a float32 state, the usual
    mixed-precision contract for recurrences.
    """
    leaves = [leaf for leaf in jax.tree.leaves(params) if jnp.issubdtype(leaf.dtype, jnp.floating)]
    if not leaves:
        return jnp.dtype(jnp.float32)
    return jnp.promote_types(leaves[0].dtype, jnp.float32)


def zeros_carry(params: Params, batch_shape=(), *, hidden_size: int) -> jax.Array:
    """The zero carry ``[*batch_shape, hidden_size]`` in the dtype `dtype_of` ``params`` gives."""
    return jnp.zeros((*tuple(batch_shape), hidden_size), dtype_of(params))


def zeros_state(hidden_size: int) -> bound:
    """``initial_state`` for cells whose carry is one ``[*batch, hidden_size]`` array.

    Example:
        >>> zeros_state(3)(jnp.ones(2), (4,)).shape, zeros_state(3) == zeros_state(3)
        ((4, 3), True)
    """
    return bound(zeros_carry, hidden_size=hidden_size)
