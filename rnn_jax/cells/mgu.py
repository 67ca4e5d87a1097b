"""Minimal gated unit (Zhou et al. 2016): a GRU with one gate."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnn_jax._validate import positive_int
from rnn_jax.cells.activations import resolve_activation
from rnn_jax.cells.arrays import zeros_state
from rnn_jax.cells.bound import bound
from rnn_jax.cells.cell import Cell, split_cell
from rnn_jax.cells.config import Config
from rnn_jax.cells.dense import DenseInit, dense_params, input_projection, kernel_input_size
from rnn_jax.cells.initializers import Initializer, glorot_uniform, stacked_orthogonal, zeros


class MGUParams(NamedTuple):
    kernel: jax.Array  # [F, 2H], gates f, n
    recurrent_kernel: jax.Array  # [H, 2H]
    bias: jax.Array  # [2H]


def recur(params, h, xp, *, act, gate):
    """``recur`` of an MGU over ``xp [*batch, 2H]`` (gates f, n)."""
    H = h.shape[-1]
    xf, xn = xp[..., :H], xp[..., H:]
    f = gate(xf + h @ params.recurrent_kernel[:, :H])
    n = act(xn + (f * h) @ params.recurrent_kernel[:, H:])
    h = (1.0 - f) * h + f * n
    return h, h


def mgu(
    hidden_size: int,
    *,
    activation: str | Callable[[jax.Array], jax.Array] = "tanh",
    gate_activation: str | Callable[[jax.Array], jax.Array] = "sigmoid",
    kernel_init: Initializer = glorot_uniform,
    recurrent_init: Initializer = stacked_orthogonal,
    bias_init: Initializer = zeros,
    dtype=jnp.float32,
) -> Cell:
    """Minimal gated unit: ``f = gate(x W_f + h U_f + b_f)``,
    ``n = act(x W_n + (f * h) U_n + b_n)``, ``h' = (1 - f) * h + f * n``.

    Carry and output: ``h: [*batch, hidden_size]``.

    Example:
        >>> cell = rj.mgu(32)
        >>> rj.count_params(cell.init(jax.random.key(0), 8))
        2624
    """
    positive_int("hidden_size", hidden_size)
    act = resolve_activation("activation", activation)
    gate = resolve_activation("gate_activation", gate_activation)
    init = DenseInit(kernel_init, recurrent_init, bias_init, dtype)
    return split_cell(
        init=bound(
            dense_params, params_type=MGUParams, hidden_size=hidden_size, gates=2, init=init
        ),
        initial_state=zeros_state(hidden_size),
        project=input_projection,
        recur=bound(recur, act=act, gate=gate),
        input_size=kernel_input_size,
        name="mgu",
        config=Config(
            hidden_size=hidden_size, activation=activation, gate_activation=gate_activation
        ),
    )
