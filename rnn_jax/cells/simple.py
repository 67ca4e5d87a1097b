"""The Elman network: ``h_t = act(x_t W + h_{t-1} U + b)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnn_jax._validate import positive_int
from rnn_jax.cells.activations import resolve_activation
from rnn_jax.cells.arrays import zeros_state
from rnn_jax.cells.bound import bound
from rnn_jax.cells.capabilities import Gates
from rnn_jax.cells.cell import Cell, split_cell
from rnn_jax.cells.config import Config
from rnn_jax.cells.dense import (
    DenseInit,
    dense_params,
    identity,
    input_projection,
    kernel_input_size,
    recurrent_kernel,
    same_keras_weights,
    summed_bias_layout,
)
from rnn_jax.cells.initializers import Initializer, glorot_uniform, stacked_orthogonal, zeros
from rnn_jax.cells.layouts import KerasLayout

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


def combine(params, h, xp, hu, *, act):
    """``Gates.combine`` of the Elman cell: ``h = act(xp + hu)``, which reads no params."""
    del params, h
    h = act(xp + hu)
    return h, h


def simple_gates(act: Callable[[jax.Array], jax.Array]) -> Gates:
    """The `Gates` of an Elman cell with activation ``act``."""
    return Gates(kernel=recurrent_kernel, fed_back=identity, combine=bound(combine, act=act))


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
    positive_int("hidden_size", hidden_size)
    act = resolve_activation("activation", activation)
    init = DenseInit(kernel_init, recurrent_init, bias_init, dtype)
    config = Config(hidden_size=hidden_size, activation=activation)
    return split_cell(
        init=bound(
            dense_params, params_type=SimpleParams, hidden_size=hidden_size, gates=1, init=init
        ),
        initial_state=zeros_state(hidden_size),
        project=input_projection,
        gates=simple_gates(act),
        input_size=kernel_input_size,
        name="simple",
        config=config,
        cudnn_layout=(
            summed_bias_layout(_CUDNN_MODES[activation], hidden_size, SimpleParams)
            if activation in _CUDNN_MODES
            else None
        ),
        keras_layout=KerasLayout(
            "SimpleRNN",
            Config(units=hidden_size, activation=activation),
            *same_keras_weights(SimpleParams),
        ),
    )
