"""minGRU (Feng et al. 2024, "Were RNNs All We Needed?"): a GRU whose gates see only the input.

``z = sigmoid(x W_z + b_z)``, ``h~ = g(x W_h + b_h)``, ``h = (1 - z) * h_prev + z * h~``
with ``g(v) = v + 0.5`` for ``v >= 0`` and ``sigmoid(v)`` below, so ``h~ > 0``. The
state is linear in ``h_prev``: ``a = 1 - z``, ``b = z * h~``, both positive, which
is what the ``parallel`` backend's associative and log-space scans use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnn_jax.cells.base import (
    Cell,
    Initializer,
    LinearRecurrence,
    check_positive_int,
    diagonal_recur,
    glorot_uniform,
    split_cell,
    zeros,
    zeros_state,
)
from rnn_jax.cells.dense import input_projection, kernel_input_size


class MinGRUParams(NamedTuple):
    kernel: jax.Array  # [F, 2H], gates z, h~
    bias: jax.Array  # [2H]


def positive(v: jax.Array) -> jax.Array:
    """The paper's ``g``: ``v + 0.5`` for ``v >= 0``, ``sigmoid(v)`` below (continuous, > 0)."""
    return jnp.where(v >= 0, jax.nn.relu(v) + 0.5, jax.nn.sigmoid(v))


def log_positive(v: jax.Array) -> jax.Array:
    """``log(positive(v))``, computed without overflow or NaN gradients on either side."""
    return jnp.where(v >= 0, jnp.log(jax.nn.relu(v) + 0.5), -jax.nn.softplus(-v))


def _linear_form(H: int):
    """The ``(a, b)`` maps of a minGRU over projected inputs ``xp [..., 2H]``."""

    def coefficients_of(xp):
        k, v = xp[..., :H], xp[..., H:]
        return jax.nn.sigmoid(-k), jax.nn.sigmoid(k) * positive(v)

    def log_coefficients_of(xp):
        k, v = xp[..., :H], xp[..., H:]
        return -jax.nn.softplus(k), -jax.nn.softplus(-k) + log_positive(v)

    return coefficients_of, log_coefficients_of


def min_gru(
    hidden_size: int,
    *,
    kernel_init: Initializer = glorot_uniform,
    bias_init: Initializer = zeros,
    dtype=jnp.float32,
) -> Cell:
    """minGRU cell (Feng et al. 2024) in its log-space-stable form.

    Carry and output: ``h: [*batch, hidden_size]``. Parameters: ``kernel [F, 2H]``
    (gates z, h~) and ``bias [2H]``; no recurrent weights, so the whole
    sequence's coefficients come from one matmul.

    The cell exposes ``linear`` with ``coefficients`` ``a = sigmoid(-k)``,
    ``b = sigmoid(k) * g(v)`` and ``log_coefficients``
    ``log a = -softplus(k)``, ``log b = -softplus(-k) + log g(v)`` (``k, v`` the
    two projected halves). Since ``a, b > 0``, a scan in log space never
    overflows; the initial state may still have any sign, because the
    ``parallel`` backend adds its contribution ``(prod a) * h0`` separately
    (see `rnn_jax.backends.parallel`).

    Example:
        >>> cell = rj.min_gru(32)
        >>> params = cell.init(jax.random.key(0), 8)
        >>> carry, ys = rj.scan(cell, params, jnp.ones((100, 4, 8)), backend="parallel")
        >>> ys.shape
        (100, 4, 32)
    """
    return input_gated_cell(
        "min_gru", hidden_size, 2, MinGRUParams, _linear_form, kernel_init, bias_init, dtype
    )


def input_gated_cell(
    name: str,
    hidden_size: int,
    gates: int,
    params_type: type,
    linear_form: Callable[[int], tuple[Callable, Callable]],
    kernel_init: Initializer,
    bias_init: Initializer,
    dtype,
) -> Cell:
    """A cell whose gates see only the input (minGRU, minLSTM): ``h = a * h + b``.

    ``params_type(kernel [F, gates*H], bias [gates*H])`` holds the weights;
    ``linear_form(H)`` gives the maps from the projected inputs to ``(a, b)``
    and to ``(log a, log b)``.
    """
    check_positive_int("hidden_size", hidden_size)
    H = hidden_size
    coefficients_of, log_coefficients_of = linear_form(H)

    def init(key, input_size):
        check_positive_int("input_size", input_size)
        k_in, k_bias = jax.random.split(key)
        return params_type(
            kernel=kernel_init(k_in, (input_size, gates * H), dtype),
            bias=bias_init(k_bias, (gates * H,), dtype),
        )

    def project(params, x):  # the coefficients of all steps at once, outside any loop
        return coefficients_of(input_projection(params, x))

    return split_cell(
        init=init,
        initial_state=zeros_state(H),
        project=project,
        recur=diagonal_recur,
        input_size=kernel_input_size,
        name=name,
        config={"hidden_size": hidden_size},
        linear=LinearRecurrence(
            coefficients=project,
            output=lambda params, hs, xs: hs,
            log_coefficients=lambda params, xs: log_coefficients_of(input_projection(params, xs)),
        ),
    )
