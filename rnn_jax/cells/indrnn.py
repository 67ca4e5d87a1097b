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

from rnn_jax._validate import optional_positive_int, positive_int
from rnn_jax.cells.activations import resolve_activation
from rnn_jax.cells.arrays import along, zeros_state
from rnn_jax.cells.bound import bound
from rnn_jax.cells.cell import Cell, split_cell
from rnn_jax.cells.config import Config
from rnn_jax.cells.dense import input_projection, kernel_input_size
from rnn_jax.cells.initializers import Initializer, glorot_uniform, uniform, zeros


class IndRNNParams(NamedTuple):
    kernel: jax.Array  # [F, H]
    recurrent_weight: jax.Array  # [H]: one recurrent weight per unit
    bias: jax.Array  # [H]


def init_indrnn(key, input_size, *, hidden_size, kernel_init, recurrent_init, bias_init, dtype):
    """``init`` of an IndRNN: ``kernel [F, H]``, ``recurrent_weight [H]``, ``bias [H]``."""
    positive_int("input_size", input_size)
    k_in, k_rec, k_bias = jax.random.split(key, 3)
    return IndRNNParams(
        kernel=kernel_init(k_in, (input_size, hidden_size), dtype),
        recurrent_weight=recurrent_init(k_rec, (hidden_size,), dtype),
        bias=bias_init(k_bias, (hidden_size,), dtype),
    )


def bounded(u: jax.Array, max_abs: float | None, min_abs: float) -> jax.Array:
    """``u`` with ``|u|`` clipped into ``[min_abs, max_abs]`` (no upper bound for None)."""
    magnitude = jnp.abs(u)
    if max_abs is not None:
        magnitude = jnp.minimum(magnitude, max_abs)
    return jnp.sign(u) * jnp.maximum(magnitude, min_abs)


def recur(params, h, xp, *, act, max_abs, min_abs):
    """``recur`` of an IndRNN: ``h = act(xp + u * h)`` with ``u`` bounded."""
    u = bounded(params.recurrent_weight, max_abs, min_abs)
    h = act(xp + along(u, h) * h)
    return h, h


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
    positive_int("hidden_size", hidden_size)
    if optional_positive_int("time_steps", time_steps) is not None and recurrent_max_abs is None:
        recurrent_max_abs = 2.0 ** (1.0 / time_steps)
    if recurrent_init is None:
        recurrent_init = uniform(1.0 if time_steps is None else recurrent_max_abs)
    if recurrent_max_abs is not None and not recurrent_max_abs > recurrent_min_abs >= 0:
        raise ValueError(
            "recurrent_max_abs must exceed recurrent_min_abs >= 0; got "
            f"recurrent_max_abs={recurrent_max_abs}, recurrent_min_abs={recurrent_min_abs}"
        )
    act = resolve_activation("activation", activation)
    return split_cell(
        init=bound(
            init_indrnn,
            hidden_size=hidden_size,
            kernel_init=kernel_init,
            recurrent_init=recurrent_init,
            bias_init=bias_init,
            dtype=dtype,
        ),
        initial_state=zeros_state(hidden_size),
        project=input_projection,
        recur=bound(recur, act=act, max_abs=recurrent_max_abs, min_abs=recurrent_min_abs),
        input_size=kernel_input_size,
        name="indrnn",
        config=Config(
            hidden_size=hidden_size,
            activation=activation,
            recurrent_max_abs=recurrent_max_abs,
            recurrent_min_abs=recurrent_min_abs,
            time_steps=time_steps,
        ),
    )
