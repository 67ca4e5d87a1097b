"""Independently recurrent network (Li et al. 2018): ``h_t = relu(x_t W + u * h_{t-1} + b)``.

Li et al. set the recurrent weights for the length ``T`` of the sequences
learned: with relu, ``|u| <= 2 ** (1 / T)`` keeps the gradient through ``T``
steps from exploding (``u ** T <= 2``), and ``u`` starts uniform in ``[0, 2 **
(1 / T)]``, so some units keep their state over the whole sequence from the
start. ``rj.indrnn(H, time_steps=T)`` is that setup; their adding-problem
network stacks two such relu layers (``rj.stack``, or ``--layers 2``).
"""

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
    recurrent_init: Initializer | None = None,
    bias_init: Initializer = zeros,
    dtype=jnp.float32,
    time_steps: int | None = None,
) -> Cell:
    """IndRNN cell: each unit recurs only on itself through a weight ``u``.

    The paper's recurrent-weight bounds keep ``|u|`` in
    ``[recurrent_min_abs, recurrent_max_abs]``. The bound is applied to ``u``
    in every step (a projection that optimizers cannot step outside of), so
    stored parameters may lie outside it. Carry and output:
    ``h: [*batch, hidden_size]``.

    - ``time_steps``: Li et al.'s setup for sequences of ``T`` steps:
      ``recurrent_max_abs = 2 ** (1 / T)`` (unless given) and ``u`` drawn
      uniform in ``[0, recurrent_max_abs]`` (unless ``recurrent_init`` is given).
    - ``recurrent_init``: default uniform in ``[0, 1]`` without ``time_steps``.

    Example:
        >>> cell = rj.indrnn(64, time_steps=784)
        >>> params = cell.init(jax.random.key(0), 1)
        >>> params.recurrent_weight.shape, float(params.recurrent_weight.max()) <= 2 ** (1 / 784)
        ((64,), True)
    """
    check_positive_int("hidden_size", hidden_size)
    if time_steps is not None:
        check_positive_int("time_steps", time_steps)
        if recurrent_max_abs is None:
            recurrent_max_abs = 2.0 ** (1.0 / time_steps)
        if recurrent_init is None:
            recurrent_init = jax.nn.initializers.uniform(recurrent_max_abs)
    recurrent_init = recurrent_init or unit_uniform
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
            "time_steps": time_steps,
        },
    )
