"""Shared parameter construction for cells with ``x @ W + h @ U + b`` gates."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rnn_jax.cells.base import CudnnLayout, CudnnWeights, Initializer, add_bias, check_positive_int


def init_gate_weights(
    key: jax.Array,
    input_size: int,
    hidden_size: int,
    gates: int,
    *,
    kernel_init: Initializer,
    recurrent_init: Initializer,
    bias_init: Initializer,
    dtype: jnp.dtype,
    recurrent_size: int | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Returns ``(kernel [F, G*H], recurrent_kernel [R, G*H], bias [G*H])``.

    Gates are concatenated along the last axis in cuDNN/PyTorch/Keras order, so
    a PyTorch ``weight_ih`` is ``kernel.T``. ``recurrent_size`` (default ``H``)
    is the size of the state fed back, which differs from ``H`` for LSTMP.
    """
    check_positive_int("input_size", input_size)
    k_in, k_rec, k_bias = jax.random.split(key, 3)
    width = gates * hidden_size
    kernel = kernel_init(k_in, (input_size, width), dtype)
    recurrent = recurrent_init(k_rec, (recurrent_size or hidden_size, width), dtype)
    bias = bias_init(k_bias, (width,), dtype)
    return kernel, recurrent, bias


def input_projection(params, x: jax.Array) -> jax.Array:
    """``x @ kernel + bias`` over any leading axes: the carry-free part of a gated step."""
    return add_bias(x @ params.kernel, params.bias)


def kernel_input_size(params) -> int:
    """The feature size a cell's ``kernel`` expects."""
    return params.kernel.shape[0]


def recurrent_kernel(params) -> jax.Array:
    """``params.recurrent_kernel``: the ``Gates.kernel`` of the dense cells."""
    return params.recurrent_kernel


def identity(carry):
    """``Gates.fed_back`` of cells whose carry is the state ``h`` itself."""
    return carry


def summed_bias_layout(mode: str, hidden_size: int, params_type) -> CudnnLayout:
    """The `CudnnLayout` of a cell with ``kernel``, ``recurrent_kernel`` and one summed ``bias``.

    PyTorch's two biases add up to ours; exported, ``bias_hh`` is zero.
    """

    def to_weights(params) -> CudnnWeights:
        return CudnnWeights(
            params.kernel.T, params.recurrent_kernel.T, params.bias, jnp.zeros_like(params.bias)
        )

    def from_weights(weights: CudnnWeights):
        return params_type(
            kernel=weights.weight_ih.T,
            recurrent_kernel=weights.weight_hh.T,
            bias=weights.bias_ih + weights.bias_hh,
        )

    return CudnnLayout(mode, hidden_size, 0, to_weights, from_weights)
