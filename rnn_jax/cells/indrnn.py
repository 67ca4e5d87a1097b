"""Independently recurrent network (Li et al. 2018): ``h_t = relu(x_t W + u * h_{t-1} + b)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnn_jax.cells.base import (
    Cell,
    Initializer,
    along,
    check_positive_int,
    glorot_uniform,
    resolve_activation,
    split_cell,
    zeros,
    zeros_state,
)
from rnn_jax.cells.dense import input_projection, kernel_input_size

unit_uniform = jax.nn.initializers.uniform(1.0)


class IndRNNParams(NamedTuple):
    kernel: jax.Array  # [F, H]
    recurrent_weight: jax.Array  # [H]: one recurrent weight per unit
    bias: jax.Array  # [H]


def indrnn(
    hidden_size: int,
    *,
    activation: str | Callable[[jax.Array], jax.Array] = "relu",
    recurrent_max_abs: float | None = None,
    recurrent_min_abs: float = 0.0,
    kernel_init: Initializer = glorot_uniform,
    recurrent_init: Initializer = unit_uniform,
    bias_init: Initializer = zeros,
    dtype=jnp.float32,
) -> Cell:
    """IndRNN cell: each unit recurs only on itself through a weight ``u``.

    The paper's recurrent-weight bounds keep ``|u|`` in
    ``[recurrent_min_abs, recurrent_max_abs]``; for a sequence of length T and
    relu, ``recurrent_max_abs = 2 ** (1 / T)`` keeps gradients from exploding.
    The bound is applied to ``u`` in every step (a projection that optimizers
    cannot step outside of), so stored parameters may lie outside it.
    Carry and output: ``h: [*batch, hidden_size]``.

    Example:
        >>> cell = rj.indrnn(64, recurrent_max_abs=2 ** (1 / 784))
        >>> params = cell.init(jax.random.key(0), 1)
        >>> params.recurrent_weight.shape
        (64,)
    """
    check_positive_int("hidden_size", hidden_size)
    if recurrent_max_abs is not None and not recurrent_max_abs > recurrent_min_abs >= 0:
        raise ValueError(
            "recurrent_max_abs must exceed recurrent_min_abs >= 0; got "
            f"recurrent_max_abs={recurrent_max_abs}, recurrent_min_abs={recurrent_min_abs}"
        )
    act = resolve_activation("activation", activation)
    H = hidden_size

    def init(key, input_size):
        check_positive_int("input_size", input_size)
        k_in, k_rec, k_bias = jax.random.split(key, 3)
        return IndRNNParams(
            kernel=kernel_init(k_in, (input_size, H), dtype),
            recurrent_weight=recurrent_init(k_rec, (H,), dtype),
            bias=bias_init(k_bias, (H,), dtype),
        )

    def bounded(u):
        magnitude = jnp.abs(u)
        if recurrent_max_abs is not None:
            magnitude = jnp.minimum(magnitude, recurrent_max_abs)
        return jnp.sign(u) * jnp.maximum(magnitude, recurrent_min_abs)

    def recur(params, h, xp):
        h = act(xp + along(bounded(params.recurrent_weight), h) * h)
        return h, h

    return split_cell(
        init=init,
        initial_state=zeros_state(H),
        project=input_projection,
        recur=recur,
        input_size=kernel_input_size,
        name="indrnn",
        config={
            "hidden_size": hidden_size,
            "activation": activation,
            "recurrent_max_abs": recurrent_max_abs,
            "recurrent_min_abs": recurrent_min_abs,
        },
    )
