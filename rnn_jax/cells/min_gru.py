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

from rnn_jax._validate import positive_int
from rnn_jax.cells.arrays import zeros_state
from rnn_jax.cells.bound import bound
from rnn_jax.cells.capabilities import LinearRecurrence, diagonal_recur, states_as_outputs
from rnn_jax.cells.cell import Cell, split_cell
from rnn_jax.cells.config import Config
from rnn_jax.cells.dense import input_projection, kernel_input_size
from rnn_jax.cells.initializers import Initializer, glorot_uniform, zeros


class MinGRUParams(NamedTuple):
    kernel: jax.Array  # [F, 2H], gates z, h~
    bias: jax.Array  # [2H]


def positive(v: jax.Array) -> jax.Array:
    """The paper's ``g``: ``v + 0.5`` for ``v >= 0``, ``sigmoid(v)`` below (continuous, > 0)."""
    return jnp.where(v >= 0, jax.nn.relu(v) + 0.5, jax.nn.sigmoid(v))


def log_positive(v: jax.Array) -> jax.Array:
    """``log(positive(v))``, computed without overflow or NaN gradients on either side."""
    return jnp.where(v >= 0, jnp.log(jax.nn.relu(v) + 0.5), -jax.nn.softplus(-v))


def coefficients_of(xp: jax.Array) -> tuple[jax.Array, jax.Array]:
    """A minGRU's ``(a, b)`` from its projected inputs ``xp [..., 2H]`` (halves ``k``, ``v``)."""
    k, v = jnp.split(xp, 2, axis=-1)
    return jax.nn.sigmoid(-k), jax.nn.sigmoid(k) * positive(v)


def log_coefficients_of(xp: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(log a, log b)`` of `coefficients_of`, finite for any pre-activations."""
    k, v = jnp.split(xp, 2, axis=-1)
    return -jax.nn.softplus(k), -jax.nn.softplus(-k) + log_positive(v)


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
        "min_gru",
        hidden_size,
        MinGRUParams,
        (coefficients_of, log_coefficients_of),
        init=InputGatedInit(2, kernel_init, bias_init, dtype),
    )


class InputGatedInit(NamedTuple):
    """How an input-gated cell initialises ``kernel [F, gates*H]`` and ``bias [gates*H]``."""

    gates: int
    kernel_init: Initializer
    bias_init: Initializer
    dtype: jnp.dtype


def init_input_gated(key, input_size, *, params_type, hidden_size, init: InputGatedInit):
    """``init`` of an input-gated cell: ``params_type(kernel, bias)``."""
    positive_int("input_size", input_size)
    k_in, k_bias = jax.random.split(key)
    width = init.gates * hidden_size
    return params_type(
        kernel=init.kernel_init(k_in, (input_size, width), init.dtype),
        bias=init.bias_init(k_bias, (width,), init.dtype),
    )


def projected(params, x, *, form: Callable):
    """``form`` of the projected inputs ``x @ kernel + bias``, for all steps at once."""
    return form(input_projection(params, x))


def input_gated_cell(
    name: str, hidden_size: int, params_type: type, forms: tuple, *, init: InputGatedInit
) -> Cell:
    """A cell whose gates see only the input (minGRU, minLSTM): ``h = a * h + b``.

    ``params_type(kernel [F, gates*H], bias [gates*H])`` holds the weights;
    ``forms`` are the maps from the projected inputs to ``(a, b)`` and to
    ``(log a, log b)``.
    """
    positive_int("hidden_size", hidden_size)
    coefficients, log_coefficients = (bound(projected, form=form) for form in forms)
    return split_cell(
        init=bound(init_input_gated, params_type=params_type, hidden_size=hidden_size, init=init),
        initial_state=zeros_state(hidden_size),
        project=coefficients,
        recur=diagonal_recur,
        input_size=kernel_input_size,
        name=name,
        config=Config(hidden_size=hidden_size),
        linear=LinearRecurrence(
            coefficients=coefficients, output=states_as_outputs, log_coefficients=log_coefficients
        ),
    )
