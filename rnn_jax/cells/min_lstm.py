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

from rnn_jax.cells.base import (
    Cell,
    Initializer,
    LinearRecurrence,
    check_positive_int,
    glorot_uniform,
    split_cell,
    zeros,
    zeros_state,
)
from rnn_jax.cells.dense import input_projection, kernel_input_size
from rnn_jax.cells.min_gru import log_positive, positive


class MinLSTMParams(NamedTuple):
    kernel: jax.Array  # [F, 3H], gates f, i, h~
    bias: jax.Array  # [3H]


def _linear_form(H: int):
    """The ``(a, b)`` maps of a minLSTM over projected inputs ``xp [..., 3H]``.

    With ``d = softplus(-k_f) - softplus(-k_i) = log(i / f)``:
    ``f' = sigmoid(-d)``, ``i' = sigmoid(d)``, ``log f' = -softplus(d)``,
    ``log i' = -softplus(-d)``, all finite for any pre-activations.
    """

    def split(xp):
        kf, ki, v = xp[..., :H], xp[..., H : 2 * H], xp[..., 2 * H :]
        return jax.nn.softplus(-kf) - jax.nn.softplus(-ki), v

    def coefficients_of(xp):
        d, v = split(xp)
        return jax.nn.sigmoid(-d), jax.nn.sigmoid(d) * positive(v)

    def log_coefficients_of(xp):
        d, v = split(xp)
        return -jax.nn.softplus(d), -jax.nn.softplus(-d) + log_positive(v)

    return coefficients_of, log_coefficients_of


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
    check_positive_int("hidden_size", hidden_size)
    H = hidden_size
    coefficients_of, log_coefficients_of = _linear_form(H)

    def init(key, input_size):
        check_positive_int("input_size", input_size)
        k_in, k_bias = jax.random.split(key)
        return MinLSTMParams(
            kernel=kernel_init(k_in, (input_size, 3 * H), dtype),
            bias=bias_init(k_bias, (3 * H,), dtype),
        )

    def project(params, x):  # the coefficients of all steps at once, outside any loop
        return coefficients_of(input_projection(params, x))

    def recur(params, h, ab):
        del params
        a, b = ab
        h = a * h + b
        return h, h

    return split_cell(
        init=init,
        initial_state=zeros_state(H),
        project=project,
        recur=recur,
        input_size=kernel_input_size,
        name="min_lstm",
        config={"hidden_size": hidden_size},
        linear=LinearRecurrence(
            coefficients=project,
            output=lambda params, hs, xs: hs,
            log_coefficients=lambda params, xs: log_coefficients_of(input_projection(params, xs)),
        ),
    )
