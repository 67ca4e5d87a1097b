"""minLSTM (Feng et al. 2024, "Were RNNs All We Needed?"): an LSTM whose gates see only the input.

``f = sigmoid(x W_f + b_f)``, ``i = sigmoid(x W_i + b_i)``, ``h~ = g(x W_h + b_h)``,
normalised gates ``f' = f / (f + i)``, ``i' = i / (f + i)`` (the paper's
length-independent scaling) and ``h = f' * h_prev + i' * h~``. The state is linear in
``h_prev`` with positive coefficients ``a = f'``, ``b = i' * h~``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnn_jax.cells.cell import Cell
from rnn_jax.cells.initializers import Initializer, glorot_uniform, zeros
from rnn_jax.cells.min_gru import InputGatedInit, input_gated_cell, log_positive, positive


class MinLSTMParams(NamedTuple):
    kernel: jax.Array  # [F, 3H], gates f, i, h~
    bias: jax.Array  # [3H]


def _log_ratio(xp: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(d, v)`` from ``xp [..., 3H]``: ``d = softplus(-k_f) - softplus(-k_i) = log(i / f)``."""
    kf, ki, v = jnp.split(xp, 3, axis=-1)
    return jax.nn.softplus(-kf) - jax.nn.softplus(-ki), v


def coefficients_of(xp: jax.Array) -> tuple[jax.Array, jax.Array]:
    """A minLSTM's ``(a, b)``: ``f' = sigmoid(-d)``, ``i' = sigmoid(d)``, finite."""
    d, v = _log_ratio(xp)
    return jax.nn.sigmoid(-d), jax.nn.sigmoid(d) * positive(v)


def log_coefficients_of(xp: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(log a, log b)``: ``log f' = -softplus(d)``, ``log i' = -softplus(-d)``, finite."""
    d, v = _log_ratio(xp)
    return -jax.nn.softplus(d), -jax.nn.softplus(-d) + log_positive(v)


def min_lstm(
    hidden_size: int,
    *,
    kernel_init: Initializer = glorot_uniform,
    bias_init: Initializer = zeros,
    dtype=jnp.float32,
) -> Cell:
    """minLSTM cell (Feng et al. 2024) in its log-space-stable form.

    Carry and output: ``h: [*batch, hidden_size]``. Parameters: ``kernel [F, 3H]``
    (gates f, i, h~) and ``bias [3H]``. ``linear`` gives
    ``a = f / (f + i)``, ``b = i / (f + i) * g(v)`` and their logarithms; as for
    `min_gru`, the initial state may have any sign.

    Example:
        >>> cell = rj.min_lstm(32)
        >>> params = cell.init(jax.random.key(0), 8)
        >>> params.kernel.shape
        (8, 96)
    """
    return input_gated_cell(
        "min_lstm",
        hidden_size,
        MinLSTMParams,
        (coefficients_of, log_coefficients_of),
        init=InputGatedInit(3, kernel_init, bias_init, dtype),
    )
