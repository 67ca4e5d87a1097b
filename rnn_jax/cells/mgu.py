"""Minimal gated unit (Zhou et al. 2016): a GRU with one gate."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnn_jax.cells.base import (
    Cell,
    Initializer,
    check_positive_int,
    glorot_uniform,
    resolve_activation,
    split_cell,
    stacked_orthogonal,
    zeros,
    zeros_state,
)
from rnn_jax.cells.dense import init_gate_weights, input_projection, kernel_input_size


class MGUParams(NamedTuple):
    kernel: jax.Array  # [F, 2H], gates f, n
    recurrent_kernel: jax.Array  # [H, 2H]
    bias: jax.Array  # [2H]


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
    check_positive_int("hidden_size", hidden_size)
    act = resolve_activation("activation", activation)
    gate = resolve_activation("gate_activation", gate_activation)
    H = hidden_size

    def init(key, input_size):
        return MGUParams(
            *init_gate_weights(
                key,
                input_size,
                H,
                2,
                kernel_init=kernel_init,
                recurrent_init=recurrent_init,
                bias_init=bias_init,
                dtype=dtype,
            )
        )

    def recur(params, h, xp):
        xf, xn = xp[..., :H], xp[..., H:]
        f = gate(xf + h @ params.recurrent_kernel[:, :H])
        n = act(xn + (f * h) @ params.recurrent_kernel[:, H:])
        h = (1.0 - f) * h + f * n
        return h, h

    return split_cell(
        init=init,
        initial_state=zeros_state(H),
        project=input_projection,
        recur=recur,
        input_size=kernel_input_size,
        name="mgu",
        config={
            "hidden_size": hidden_size,
            "activation": activation,
            "gate_activation": gate_activation,
        },
    )
