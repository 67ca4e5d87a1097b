"""Convolutional LSTM (Shi et al. 2015): an LSTM whose matmuls are 2-D convolutions.

Inputs and states are images ``[*batch, height, width, channels]`` (the cell's
three feature axes, ``feature_rank = 3``); the gates are

    z = conv(x, W) + conv(h, U) + b          (padding "SAME", stride 1)
    i, f, g, o = split(z)    c = sigmoid(f) c + sigmoid(i) tanh(g)    h = sigmoid(o) tanh(c)

with the gate order i, f, g, o and the kernels ``[kh, kw, in, 4F]`` of Keras's
``ConvLSTM2D`` (so its weights load unchanged); the gate arithmetic is
`rj.lstm`'s own. Shi et al.'s peepholes (``W_c * c``, elementwise over the
image) are not part of it, as they are not of Keras's and Flax's cells.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnn_jax.cells.base import (
    Cell,
    Initializer,
    add_bias,
    check_positive_int,
    dtype_of,
    glorot_uniform,
    split_cell,
    zeros,
)
from rnn_jax.cells.lstm import LSTMParams, LSTMState, lstm

orthogonal = jax.nn.initializers.orthogonal()


class ConvLSTMParams(NamedTuple):
    kernel: jax.Array  # [kh, kw, C, 4F]: the input convolution, gates i, f, g, o
    recurrent_kernel: jax.Array  # [kh, kw, F, 4F]: the state convolution
    bias: jax.Array  # [4F]


def conv2d(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """``x [*lead, H, W, C]`` convolved with ``kernel [kh, kw, C, O]`` ("SAME", stride 1)."""
    lead, image = x.shape[:-3], x.shape[-3:]
    y = jax.lax.conv_general_dilated(
        x.reshape(-1, *image),
        kernel,
        window_strides=(1, 1),
        padding="SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    return y.reshape(*lead, *y.shape[1:])


def _pair(name: str, value) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints; got {value!r}")
    for item in pair:
        check_positive_int(name, item)
    return pair


def conv_lstm(
    features: int,
    kernel_size: int | tuple[int, int],
    *,
    spatial_shape: tuple[int, int],
    forget_bias: float = 1.0,
    kernel_init: Initializer = glorot_uniform,
    recurrent_init: Initializer = orthogonal,
    bias_init: Initializer = zeros,
    dtype=jnp.float32,
) -> Cell:
    """ConvLSTM cell (Shi et al. 2015) of ``features`` channels over images of ``spatial_shape``.

    ``xs: [T, *batch, height, width, channels]`` with ``(height, width) =
    spatial_shape``; carry ``LSTMState(h, c)``, both ``[*batch, height, width,
    features]``; output ``h``. ``kernel_size``: one int or ``(kh, kw)``, for
    both convolutions. The forget-gate bias starts at ``forget_bias`` (Keras's
    ``unit_forget_bias``).

    Example:
        >>> cell = rj.conv_lstm(8, 3, spatial_shape=(16, 16))
        >>> params = cell.init(jax.random.key(0), 3)
        >>> carry, ys = rj.scan(cell, params, jnp.ones((10, 2, 16, 16, 3)))
        >>> params.kernel.shape, ys.shape
        ((3, 3, 3, 32), (10, 2, 16, 16, 8))
    """
    check_positive_int("features", features)
    kh, kw = _pair("kernel_size", kernel_size)
    height, width = _pair("spatial_shape", spatial_shape)
    F = features
    gates = lstm(F).gates  # the gate arithmetic of an LSTM, on the last axis of [*, H, W, 4F]
    no_weights = LSTMParams(kernel=None, recurrent_kernel=None, bias=None)

    def init(key, input_size):
        check_positive_int("input_size", input_size)
        k_in, k_rec, k_bias = jax.random.split(key, 3)
        bias = bias_init(k_bias, (4 * F,), dtype).at[F : 2 * F].add(forget_bias)
        return ConvLSTMParams(
            kernel=kernel_init(k_in, (kh, kw, input_size, 4 * F), dtype),
            recurrent_kernel=recurrent_init(k_rec, (kh, kw, F, 4 * F), dtype),
            bias=bias,
        )

    def initial_state(params, batch_shape=()):
        zero = jnp.zeros((*tuple(batch_shape), height, width, F), dtype_of(params))
        return LSTMState(zero, zero)

    def project(params, x):
        if tuple(x.shape[-3:-1]) != (height, width):
            raise ValueError(
                f"x must have images of spatial_shape {(height, width)} in its axes -3 and -2 "
                f"for the conv_lstm cell; got shape {tuple(x.shape)}"
            )
        return add_bias(conv2d(x, params.kernel), params.bias)

    def recur(params, carry, xp):
        return gates.combine(no_weights, carry, xp, conv2d(carry.h, params.recurrent_kernel))

    return split_cell(
        init=init,
        initial_state=initial_state,
        project=project,
        recur=recur,
        input_size=lambda params: params.kernel.shape[2],
        name="conv_lstm",
        config={
            "features": features,
            "kernel_size": (kh, kw),
            "spatial_shape": (height, width),
            "forget_bias": forget_bias,
        },
        feature_rank=3,
    )


__all__ = ["ConvLSTMParams", "conv2d", "conv_lstm"]
