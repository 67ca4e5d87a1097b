"""The Elman network: ``h_t = act(x_t W + h_{t-1} U + b)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnn_jax.cells.base import (
    Cell,
    Gates,
    Initializer,
    check_positive_int,
    glorot_uniform,
    resolve_activation,
    split_cell,
    stacked_orthogonal,
    zeros,
    zeros_state,
)
from rnn_jax.cells.dense import (
    identity,
    init_gate_weights,
    input_projection,
    kernel_input_size,
    recurrent_kernel,
    summed_bias_layout,
)

# Activations cuDNN and PyTorch have for their plain RNN, by the mode they name.
_CUDNN_MODES = {
    "tanh": "rnn_tanh",
    jnp.tanh: "rnn_tanh",
    "relu": "rnn_relu",
    jax.nn.relu: "rnn_relu",
}


class SimpleParams(NamedTuple):
    kernel: jax.Array  # [F, H]
    recurrent_kernel: jax.Array  # [H, H]
    bias: jax.Array  # [H]


def simple(
    hidden_size: int,
    *,
    activation: str | Callable[[jax.Array], jax.Array] = "tanh",
    kernel_init: Initializer = glorot_uniform,
    recurrent_init: Initializer = stacked_orthogonal,
    bias_init: Initializer = zeros,
    dtype=jnp.float32,
) -> Cell:
    """Elman RNN cell (Keras ``SimpleRNN``, PyTorch ``nn.RNN``).

    Carry and output: ``h: [*batch, hidden_size]``. ``activation`` is ``"tanh"``
    (default), ``"relu"`` or any callable.

    Example:
        >>> cell = rj.simple(32, activation="relu")
        >>> params = cell.init(jax.random.key(0), 32)
        >>> rj.count_params(params)
        2080
    """
    check_positive_int("hidden_size", hidden_size)
    act = resolve_activation("activation", activation)

    def init(key, input_size):
        return SimpleParams(
            *init_gate_weights(
                key,
                input_size,
                hidden_size,
                1,
                kernel_init=kernel_init,
                recurrent_init=recurrent_init,
                bias_init=bias_init,
                dtype=dtype,
            )
        )

    def combine(params, h, xp, hu):
        del params, h
        h = act(xp + hu)
        return h, h

    return split_cell(
        init=init,
        initial_state=zeros_state(hidden_size),
        project=input_projection,
        gates=Gates(kernel=recurrent_kernel, fed_back=identity, combine=combine),
        input_size=kernel_input_size,
        name="simple",
        config={"hidden_size": hidden_size, "activation": activation},
        cudnn_layout=(
            summed_bias_layout(_CUDNN_MODES[activation], hidden_size, SimpleParams)
            if activation in _CUDNN_MODES
            else None
        ),
    )
