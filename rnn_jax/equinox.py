"""Equinox modules over the pure core, and Equinox's own cells in and out.

`RNN` wraps any cell or `Layer` the Equinox way: the module is the pytree of
its parameters (the layer's own params pytree is its field), the layer is a
static field, ``__call__`` takes one sequence ``[T, F]`` and ``jax.vmap``
makes batches (folded into one batched scan, as ``rj.scan`` promises).
``eqx.filter_jit``, ``eqx.filter_grad`` and optax over
``eqx.filter(model, eqx.is_array)`` work on it as on any Equinox model.

`from_equinox` and `to_equinox` move weights between ``eqx.nn.LSTMCell`` /
``eqx.nn.GRUCell`` and the rnn_jax cells computing the same step. Equinox
stores PyTorch's shapes (``weight_ih [G*H, F]``, ``weight_hh [G*H, H]``) and
gate orders (LSTM i, f, g, o; GRU r, z, n with the reset after the recurrent
matmul), so both go through the cells' `rnn_jax.cells.CudnnLayout`. Its
GRU's one ``bias [3H]`` plus ``bias_n [H]`` is PyTorch's ``bias_ih`` and
``bias_hh = (0, 0, bias_n)``; going back, the recurrent biases of r and z
(which only ever add to the input ones) fold into ``bias``.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from rnn_jax.cells.cell import Cell, described
from rnn_jax.cells.gru import gru
from rnn_jax.cells.layouts import CudnnWeights
from rnn_jax.cells.lstm import lstm
from rnn_jax.layers.base import Layer, feature_rank, step_arguments
from rnn_jax.layers.rnn import as_layer

__all__ = ["RNN", "from_equinox", "to_equinox"]


class RNN(eqx.Module):
    """Equinox module running ``layer`` over one time-major sequence ``xs: [T, F]``.

    ``model(xs, length=None, mask=None, initial_state=None, key=None)``
    returns ``(final_state, ys)`` as ``layer.apply`` does for one sequence:
    ``length`` a scalar (steps past it output zeros), ``mask: [T]`` bools,
    ``key`` turning the layer's dropout on. Batches are ``jax.vmap(model)``
    over ``[B, T, F]`` (and ``length: [B]``); ``model.params`` is the
    layer's params pytree.

    Example:
        >>> model = RNN(rj.lstm(16), input_size=8, key=jax.random.key(0))
        >>> state, ys = model(jnp.ones((10, 8)), length=7)
        >>> ys.shape, state.h.shape
        ((10, 16), (16,))
        >>> states, ys = jax.vmap(model)(jnp.ones((4, 10, 8)))
        >>> ys.shape
        (4, 10, 16)
    """

    params: Any
    layer: Layer = eqx.field(static=True)

    def __init__(self, layer: Cell | Layer, input_size: int, *, key: jax.Array):
        self.layer = as_layer(layer)
        self.params = self.layer.init(key, input_size)

    def __call__(
        self,
        xs: jax.Array,
        *,
        length: jax.Array | int | None = None,
        mask: jax.Array | None = None,
        initial_state: Any = None,
        key: jax.Array | None = None,
    ) -> tuple[Any, jax.Array]:
        rank = 1 + feature_rank(self.layer)
        if jnp.ndim(xs) != rank:
            raise ValueError(
                f"xs must be one sequence of rank {rank} ([T, *features]); got shape "
                f"{jnp.shape(xs)}: for a batch, call jax.vmap(model) over [B, T, *features]"
            )
        if length is not None:
            length = jnp.asarray(length)
        return self.layer.apply(
            self.params,
            xs,
            length=length,
            initial_state=initial_state,
            key=key,
            **step_arguments(mask=mask),
        )


def from_equinox(module: eqx.nn.LSTMCell | eqx.nn.GRUCell) -> tuple[Cell, Any]:
    """``(cell, params)`` computing what ``eqx.nn.LSTMCell`` or ``eqx.nn.GRUCell`` computes.

    ``cell.step(params, carry, x)`` is ``module(x, hidden)``: an LSTM's carry
    ``LSTMState(h, c)`` is Equinox's ``(h, c)``. Without ``use_bias`` the
    biases are zeros.

    Example:
        >>> import equinox as eqx
        >>> cell, params = from_equinox(eqx.nn.GRUCell(4, 8, key=jax.random.key(0)))
        >>> carry, y = cell.step(params, jnp.zeros(8), jnp.ones(4))
        >>> y.shape
        (8,)
    """
    if not isinstance(module, eqx.nn.LSTMCell | eqx.nn.GRUCell):
        raise TypeError(
            f"module must be an eqx.nn.LSTMCell or eqx.nn.GRUCell; got {type(module).__name__}"
        )
    H = module.hidden_size
    width = module.weight_ih.shape[0]
    bias = module.bias if module.use_bias else jnp.zeros((width,), module.weight_ih.dtype)
    if isinstance(module, eqx.nn.LSTMCell):
        cell, recurrent_bias = lstm(H), jnp.zeros_like(bias)
    else:
        bias_n = module.bias_n if module.use_bias else jnp.zeros((H,), bias.dtype)
        cell, recurrent_bias = gru(H), jnp.concatenate([jnp.zeros((2 * H,), bias.dtype), bias_n])
    weights = CudnnWeights(module.weight_ih, module.weight_hh, bias, recurrent_bias)
    return cell, cell.cudnn_layout.from_weights(weights)


def to_equinox(cell: Cell, params: Any) -> eqx.nn.LSTMCell | eqx.nn.GRUCell:
    """The ``eqx.nn.LSTMCell`` or ``eqx.nn.GRUCell`` (``use_bias=True``) computing ``cell``.

    ``cell`` must compute exactly PyTorch's LSTM (``rj.lstm`` without
    peepholes, projection or layer norm) or GRU (``rj.gru()``, reset after
    the matmul): a cell whose ``cudnn_layout`` says so. Anything else raises
    a ValueError.

    Example:
        >>> cell = rj.lstm(8)
        >>> module = to_equinox(cell, cell.init(jax.random.key(0), 4))
        >>> module.weight_ih.shape
        (32, 4)
    """
    layout = cell.cudnn_layout
    if layout is None or layout.mode not in ("lstm", "gru") or layout.proj_size:
        raise ValueError(
            "to_equinox needs a cell computing eqx.nn.LSTMCell or GRUCell exactly (rj.lstm "
            "without peepholes, projection or layer norm; rj.gru with reset_after=True; "
            f"default activations); got {described(cell)}"
        )
    weights = layout.to_weights(params)
    size, inputs = layout.hidden_size, weights.weight_ih.shape[1]
    dtype, key = weights.weight_ih.dtype, jax.random.key(0)  # every weight is overwritten
    if layout.mode == "lstm":
        module = eqx.nn.LSTMCell(inputs, size, dtype=dtype, key=key)
        values = (weights.weight_ih, weights.weight_hh, weights.bias_ih + weights.bias_hh)
        return eqx.tree_at(lambda m: (m.weight_ih, m.weight_hh, m.bias), module, values)
    H = size
    module = eqx.nn.GRUCell(inputs, size, dtype=dtype, key=key)
    bias = weights.bias_ih + weights.bias_hh.at[2 * H :].set(0)
    values = (weights.weight_ih, weights.weight_hh, bias, weights.bias_hh[2 * H :])
    return eqx.tree_at(lambda m: (m.weight_ih, m.weight_hh, m.bias, m.bias_n), module, values)
