"""Shared parts of the cells with ``x @ W + h @ U + b`` gates: weights, projection, layouts."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnn_jax._validate import positive_int
from rnn_jax.cells.activations import identity
from rnn_jax.cells.arrays import add_bias
from rnn_jax.cells.bound import bound
from rnn_jax.cells.initializers import Initializer
from rnn_jax.cells.layouts import CudnnLayout, CudnnWeights, KerasWeights

__all__ = [
    "DenseInit",
    "dense_params",
    "identity",
    "init_gate_weights",
    "input_projection",
    "kernel_input_size",
    "recurrent_kernel",
    "same_keras_weights",
    "summed_bias_layout",
]


class DenseInit(NamedTuple):
    """How a dense gated cell initialises its weights (the factories' init options)."""

    kernel_init: Initializer
    recurrent_init: Initializer
    bias_init: Initializer
    dtype: jnp.dtype


def init_gate_weights(
    key: jax.Array,
    input_size: int,
    hidden_size: int,
    gates: int,
    init: DenseInit,
    recurrent_size: int | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Returns ``(kernel [F, G*H], recurrent_kernel [R, G*H], bias [G*H])``.

    Gates are concatenated along the last axis in cuDNN/PyTorch/Keras order, so
    a PyTorch ``weight_ih`` is ``kernel.T``. ``recurrent_size`` (default ``H``)
    is the size of the state fed back, which differs from ``H`` for LSTMP.
    """
    positive_int("input_size", input_size)
    k_in, k_rec, k_bias = jax.random.split(key, 3)
    width = gates * hidden_size
    kernel = init.kernel_init(k_in, (input_size, width), init.dtype)
    recurrent = init.recurrent_init(k_rec, (recurrent_size or hidden_size, width), init.dtype)
    bias = init.bias_init(k_bias, (width,), init.dtype)
    return kernel, recurrent, bias


def dense_params(key, input_size, *, params_type, hidden_size: int, gates: int, init: DenseInit):
    """``init`` of a cell whose params are ``params_type(kernel, recurrent_kernel, bias)``."""
    return params_type(*init_gate_weights(key, input_size, hidden_size, gates, init))


def input_projection(params, x: jax.Array) -> jax.Array:
    """``x @ kernel + bias`` over any leading axes: the carry-free part of a gated step."""
    return add_bias(x @ params.kernel, params.bias)


def kernel_input_size(params) -> int:
    """The feature size a cell's ``kernel`` expects."""
    return params.kernel.shape[0]


def recurrent_kernel(params) -> jax.Array:
    """``params.recurrent_kernel``: the ``Gates.kernel`` of the dense cells."""
    return params.recurrent_kernel


def _summed_to_weights(params) -> CudnnWeights:
    bias = params.bias
    return CudnnWeights(params.kernel.T, params.recurrent_kernel.T, bias, jnp.zeros_like(bias))


def _summed_from_weights(weights: CudnnWeights, *, params_type):
    return params_type(
        kernel=weights.weight_ih.T,
        recurrent_kernel=weights.weight_hh.T,
        bias=weights.bias_ih + weights.bias_hh,
    )


def summed_bias_layout(mode: str, hidden_size: int, params_type) -> CudnnLayout:
    """The `CudnnLayout` of a cell with ``kernel``, ``recurrent_kernel`` and one summed ``bias``.

    PyTorch's two biases add up to ours; exported, ``bias_hh`` is zero.
    """
    from_weights = bound(_summed_from_weights, params_type=params_type)
    return CudnnLayout(mode, hidden_size, 0, _summed_to_weights, from_weights)


def _same_to_keras(params) -> KerasWeights:
    return KerasWeights(params.kernel, params.recurrent_kernel, params.bias)


def _same_from_keras(weights: KerasWeights, *, params_type):
    return params_type(
        kernel=weights.kernel, recurrent_kernel=weights.recurrent_kernel, bias=weights.bias
    )


def same_keras_weights(params_type) -> tuple:
    """``(to_weights, from_weights)`` of a `KerasLayout` whose weights are the cell's
    ``kernel``, ``recurrent_kernel`` and ``bias`` as they are (Keras' SimpleRNN, LSTM,
    ConvLSTM)."""
    return _same_to_keras, bound(_same_from_keras, params_type=params_type)
