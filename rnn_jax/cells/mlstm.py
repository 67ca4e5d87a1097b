"""mLSTM (Beck et al. 2024, "xLSTM"): a matrix memory written with exponential input gates.

Per head of ``d = hidden_size // num_heads`` units, from the input ``x``::

    q = x W_q + b_q,   k = (x W_k + b_k) / sqrt(d),   v = x W_v + b_v
    i = exp(x w_i + b_i),   f = sigmoid(x w_f + b_f)   (or exp)      scalars
    C_t = f C_{t-1} + i k v^T,   n_t = f n_{t-1} + i k
    h_t = o * q^T C_t / max(|q . n_t|, 1),   o = sigmoid(x W_o + b_o)

(``C`` as xLSTM's code holds it, keys by values; the paper writes its
transpose). Nothing recurs through a weight matrix: the gates see only the
input, so the memory is linear in ``(C, n)`` and the cell declares its
`MatrixMemory`, which the ``parallel`` backend solves chunk by chunk. The
step keeps the memory stabilised (`MatrixMemoryState`: ``C`` and ``n`` times
``exp(-m)``) so the exponential input gate never overflows.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnn_jax.cells.base import (
    Cell,
    Initializer,
    MatrixMemory,
    MatrixMemoryState,
    MemoryInputs,
    add_bias,
    dtype_of,
    glorot_uniform,
    memory_read_out,
    split_cell,
)
from rnn_jax.cells.dense import kernel_input_size
from rnn_jax.cells.multihead import check_heads
from rnn_jax.cells.slstm import FORGET_GATES


class MLSTMParams(NamedTuple):
    kernel: jax.Array  # [F, 4H]: q, k, v, o, each head-major
    bias: jax.Array  # [4H]
    gate_kernel: jax.Array  # [F, 2NH]: input gates, then forget gates, one per head
    gate_bias: jax.Array  # [2NH]


class MLSTMInputs(NamedTuple):
    """An mLSTM's projected input: what the memory reads and writes, and the output gate."""

    memory: MemoryInputs
    o: jax.Array  # [*lead, H]: the output gate, sigmoid applied


def memory_step(state: MatrixMemoryState, x: MemoryInputs):
    """One stabilised step of a `MatrixMemory`: ``(new_state, h [*batch, NH, dv])``."""
    m = jnp.maximum(x.log_f + state.m, x.log_i)
    f = jnp.exp(x.log_f + state.m - m)
    i = jnp.exp(x.log_i - m)
    c = f[..., None, None] * state.c + i[..., None, None] * (x.k[..., :, None] * x.v[..., None, :])
    n = f[..., None] * state.n + i[..., None] * x.k
    read = jnp.einsum("...a,...ab->...b", x.q, c)
    return MatrixMemoryState(c, n, m), memory_read_out(read, jnp.sum(x.q * n, axis=-1), m)


def mlstm(
    hidden_size: int,
    num_heads: int = 1,
    *,
    forget_gate: str = "sigmoid",
    kernel_init: Initializer = glorot_uniform,
    dtype=jnp.float32,
) -> Cell:
    """mLSTM cell (Beck et al. 2024): ``num_heads`` matrix memories of ``d x d`` each.

    ``d = hidden_size // num_heads``. Carry `MatrixMemoryState` ``(c [*batch,
    NH, d, d], n [*batch, NH, d], m [*batch, NH])``; output ``[*batch,
    hidden_size]``, heads side by side. ``forget_gate``: ``"sigmoid"`` (as
    xLSTM's code) or ``"exp"``. Initialisation as the official cell: the gate
    weights zero, the input-gate biases ``N(0, 0.1^2)``, the forget-gate biases
    evenly from 3 to 6 over the heads; ``kernel_init`` for ``q, k, v, o``.

    Example:
        >>> cell = rj.mlstm(32, num_heads=4)
        >>> params = cell.init(jax.random.key(0), 8)
        >>> carry, ys = rj.scan(cell, params, jnp.ones((100, 2, 8)), backend="parallel")
        >>> carry.c.shape, ys.shape
        ((2, 4, 8, 8), (100, 2, 32))
    """
    check_heads(hidden_size, num_heads)
    if forget_gate not in FORGET_GATES:
        raise ValueError(f"forget_gate must be one of {FORGET_GATES}; got {forget_gate!r}")
    H, NH = hidden_size, num_heads
    d = H // NH
    sigmoid_forget = forget_gate == "sigmoid"

    def init(key, input_size):
        k_kernel, k_input = jax.random.split(key)
        input_bias = 0.1 * jax.random.normal(k_input, (NH,), dtype)
        forget_bias = jnp.linspace(3.0, 6.0, NH, dtype=dtype)
        return MLSTMParams(
            kernel=kernel_init(k_kernel, (input_size, 4 * H), dtype),
            bias=jnp.zeros((4 * H,), dtype),
            gate_kernel=jnp.zeros((input_size, 2 * NH), dtype),
            gate_bias=jnp.concatenate([input_bias, forget_bias]),
        )

    def initial_state(params, batch_shape=()):
        batch_shape, dt = tuple(batch_shape), dtype_of(params)
        return MatrixMemoryState(
            c=jnp.zeros((*batch_shape, NH, d, d), dt),
            n=jnp.zeros((*batch_shape, NH, d), dt),
            m=jnp.zeros((*batch_shape, NH), dt),
        )

    def project(params, x) -> MLSTMInputs:
        heads = lambda a: a.reshape(*a.shape[:-1], NH, d)
        q, k, v, o = jnp.split(add_bias(x @ params.kernel, params.bias), 4, axis=-1)
        log_i, f_raw = jnp.split(add_bias(x @ params.gate_kernel, params.gate_bias), 2, axis=-1)
        log_f = jax.nn.log_sigmoid(f_raw) if sigmoid_forget else f_raw
        memory = MemoryInputs(heads(q), heads(k) / math.sqrt(d), heads(v), log_f, log_i)
        return MLSTMInputs(memory, jax.nn.sigmoid(o))

    def output(params, h, xp: MLSTMInputs):
        del params
        return xp.o * h.reshape(*h.shape[:-2], H)

    def recur(params, state, xp: MLSTMInputs):
        state, h = memory_step(state, xp.memory)
        return state, output(params, h, xp)

    return split_cell(
        init=init,
        initial_state=initial_state,
        project=project,
        recur=recur,
        input_size=kernel_input_size,
        name="mlstm",
        config={"hidden_size": hidden_size, "num_heads": num_heads, "forget_gate": forget_gate},
        memory=MatrixMemory(inputs=lambda xp: xp.memory, output=output),
    )


__all__ = ["MLSTMInputs", "MLSTMParams", "memory_step", "mlstm"]
