"""sLSTM (Beck et al. 2024, "xLSTM"): exponential gating with a normaliser and a stabiliser.

Per unit, with pre-activations ``x W + h_{t-1} R + b`` split into gates
``i~, f~, z~, o~`` (xLSTM's order)::

    c_t = f_t c_{t-1} + i_t tanh(z~)      i_t = exp(i~)
    n_t = f_t n_{t-1} + i_t               f_t = sigmoid(f~)  (or exp(f~))
    h_t = sigmoid(o~) * c_t / n_t

``exp(i~)`` overflows float32 above 88, so the state is kept stabilised: the
stabiliser ``m_t = max(log f_t + m_{t-1}, i~)`` is carried, ``c`` and ``n``
are stored scaled by ``exp(-m_t)`` (the input gate becomes ``exp(i~ - m_t)``
and the forget gate ``exp(log f_t + m_{t-1} - m_t)``, neither above 1), and
``h``, a ratio of the two, is unchanged. An empty memory (``n = 0``, the
initial state) has nothing to scale: its stabiliser counts as ``-inf``, so
the first step stores ``tanh(z~)`` with weight 1.

The recurrence is block-diagonal with ``num_heads`` heads (`multihead_cell`):
each head's gates read only that head's ``h``, so the cell exposes `Gates`
with their per-head view and runs on every backend that takes `Gates`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnn_jax._validate import one_of
from rnn_jax.cells.arrays import dtype_of
from rnn_jax.cells.bound import bound
from rnn_jax.cells.capabilities import Gates
from rnn_jax.cells.cell import Cell
from rnn_jax.cells.config import Config
from rnn_jax.cells.dense import DenseInit, recurrent_kernel
from rnn_jax.cells.initializers import Initializer, glorot_uniform, zeros
from rnn_jax.cells.lstm import fed_back_h
from rnn_jax.cells.multihead import Heads, check_heads, multihead_cell

FORGET_GATES = ("sigmoid", "exp")


class SLSTMState(NamedTuple):
    h: jax.Array  # [*batch, H]: the output, fed back
    c: jax.Array  # [*batch, H]: the cell, scaled by exp(-m)
    n: jax.Array  # [*batch, H]: the normaliser, scaled by exp(-m)
    m: jax.Array  # [*batch, H]: the stabiliser


def powerlaw_forget_bias(head_size: int) -> jax.Array:
    """xLSTM's forget-gate bias for one head: from 5 down to -7 along a power law (exponent 0.3).

    Units from long memory (``sigmoid(5) = 0.993``) to almost none, as the
    official code initialises the first block of a stack.

    Example:
        >>> [round(b, 2) for b in powerlaw_forget_bias(3).tolist()]
        [5.0, -4.75, -7.0]
    """
    position = jnp.arange(head_size) / max(head_size - 1, 1)
    return 5.0 - 12.0 * position**0.3


def combine(params, carry: SLSTMState, xp, hu, *, sigmoid_forget: bool):
    """One head's stabilised sLSTM step on ``[*batch, 4*Hh]``; it reads no params."""
    del params
    i_raw, f_raw, z_raw, o_raw = jnp.split(xp + hu, 4, axis=-1)
    log_f = jax.nn.log_sigmoid(f_raw) if sigmoid_forget else f_raw
    m_before = jnp.where(carry.n == 0, -jnp.inf, carry.m)
    carried = log_f + m_before
    m = jnp.maximum(carried, i_raw)
    i = jnp.exp(i_raw - m)
    f = jnp.exp(carried - m)
    c = f * carry.c + i * jnp.tanh(z_raw)
    n = f * carry.n + i
    h = jax.nn.sigmoid(o_raw) * c / n
    return SLSTMState(h, c, n, m), h


def slstm_gates(forget_gate: str) -> Gates:
    """One head's `Gates`: ``combine`` is the stabilised sLSTM step on ``[*batch, 4*Hh]``."""
    sigmoid_forget = one_of("forget_gate", forget_gate, FORGET_GATES) == "sigmoid"
    return Gates(
        kernel=recurrent_kernel,
        fed_back=fed_back_h,
        combine=bound(combine, sigmoid_forget=sigmoid_forget),
    )


def forget_bias_of(head_size: int, *, forget_bias: str | float) -> jax.Array:
    """One head's bias offsets: the forget gate's (`powerlaw_forget_bias` or one number),
    zeros for the gates i, z, o."""
    if forget_bias == "powerlaw":
        forget = powerlaw_forget_bias(head_size)
    else:
        forget = jnp.full((head_size,), float(forget_bias))
    blank = jnp.zeros((head_size,))
    return jnp.concatenate([blank, forget, blank, blank])


def slstm_state(params, batch_shape=(), *, head_size: int) -> SLSTMState:
    """One head's ``initial_state``: zeros ``h, c, n, m``, each ``[*batch, head_size]``."""
    zero = jnp.zeros((*tuple(batch_shape), head_size), dtype_of(params))
    return SLSTMState(zero, zero, zero, zero)


def slstm(
    hidden_size: int,
    num_heads: int = 1,
    *,
    forget_gate: str = "sigmoid",
    forget_bias: str | float = "powerlaw",
    kernel_init: Initializer = glorot_uniform,
    recurrent_init: Initializer = zeros,
    bias_init: Initializer = zeros,
    dtype=jnp.float32,
) -> Cell:
    """sLSTM cell (Beck et al. 2024) of ``hidden_size`` units in ``num_heads`` heads.

    Parameters as `multihead_lstm`'s (`MultiHeadParams`): ``kernel [F, 4H]``,
    ``recurrent_kernel [num_heads, Hh, 4 Hh]``, ``bias [4H]``, columns head by
    head in xLSTM's gate order i, f, z, o. Carry ``SLSTMState(h, c, n, m)``,
    each ``[*batch, hidden_size]``; the output is ``h``.

    - ``forget_gate``: ``"sigmoid"`` (``log f = log sigmoid(f~)``, as xLSTM's
      code) or ``"exp"`` (``log f = f~``, the paper's other choice).
    - ``forget_bias``: ``"powerlaw"`` (`powerlaw_forget_bias`, xLSTM's default)
      or one number for every unit.
    - Defaults follow the official cell: recurrent weights start at zero.

    Example:
        >>> cell = rj.slstm(64, num_heads=4)
        >>> params = cell.init(jax.random.key(0), 8)
        >>> carry, ys = rj.scan(cell, params, 100.0 * jnp.ones((500, 2, 8)))
        >>> params.recurrent_kernel.shape, bool(jnp.isfinite(ys).all())
        ((4, 16, 64), True)
    """
    Hh = check_heads(hidden_size, num_heads)
    if forget_bias != "powerlaw" and not isinstance(forget_bias, int | float):
        raise ValueError(f"forget_bias must be 'powerlaw' or a number; got {forget_bias!r}")
    heads = Heads(
        num_heads,
        gate_count=4,
        gates=slstm_gates(forget_gate),
        initial_state=bound(slstm_state, head_size=Hh),
        recurrent_bias=False,
        extra_bias=bound(forget_bias_of, forget_bias=forget_bias),
    )
    return multihead_cell(
        name="slstm",
        heads=heads,
        hidden_size=hidden_size,
        init=DenseInit(kernel_init, recurrent_init, bias_init, dtype),
        config=Config(
            hidden_size=hidden_size,
            num_heads=num_heads,
            forget_gate=forget_gate,
            forget_bias=forget_bias,
        ),
    )


__all__ = ["FORGET_GATES", "SLSTMState", "powerlaw_forget_bias", "slstm", "slstm_gates"]
