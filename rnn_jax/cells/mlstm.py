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

from rnn_jax._validate import one_of
from rnn_jax.cells.arrays import add_bias, dtype_of
from rnn_jax.cells.bound import bound
from rnn_jax.cells.capabilities import (
    MatrixMemory,
    MatrixMemoryState,
    MemoryInputs,
    memory_read_out,
)
from rnn_jax.cells.cell import Cell, split_cell
from rnn_jax.cells.config import Config
from rnn_jax.cells.dense import kernel_input_size
from rnn_jax.cells.initializers import Initializer, glorot_uniform
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


class MLSTMHeads(NamedTuple):
    """An mLSTM's heads: ``num_heads`` memories of ``head_size x head_size``."""

    num_heads: int
    head_size: int
    forget_gate: str  # "sigmoid" or "exp"


def init_mlstm(key, input_size, *, heads: MLSTMHeads, kernel_init, dtype) -> MLSTMParams:
    """``init`` as the official cell: gate weights zero, input-gate biases ``N(0, 0.1^2)``,
    forget-gate biases evenly from 3 to 6 over the heads."""
    NH, H = heads.num_heads, heads.num_heads * heads.head_size
    k_kernel, k_input = jax.random.split(key)
    input_bias = 0.1 * jax.random.normal(k_input, (NH,), dtype)
    forget_bias = jnp.linspace(3.0, 6.0, NH, dtype=dtype)
    return MLSTMParams(
        kernel=kernel_init(k_kernel, (input_size, 4 * H), dtype),
        bias=jnp.zeros((4 * H,), dtype),
        gate_kernel=jnp.zeros((input_size, 2 * NH), dtype),
        gate_bias=jnp.concatenate([input_bias, forget_bias]),
    )


def mlstm_state(params, batch_shape=(), *, heads: MLSTMHeads) -> MatrixMemoryState:
    """``initial_state``: an empty memory ``(c, n, m)`` per head."""
    batch_shape, dt = tuple(batch_shape), dtype_of(params)
    NH, d = heads.num_heads, heads.head_size
    return MatrixMemoryState(
        c=jnp.zeros((*batch_shape, NH, d, d), dt),
        n=jnp.zeros((*batch_shape, NH, d), dt),
        m=jnp.zeros((*batch_shape, NH), dt),
    )


def project(params: MLSTMParams, x, *, heads: MLSTMHeads) -> MLSTMInputs:
    """The carry-free part of a step: queries, keys, values and gates of every head."""
    per_head = lambda a: a.reshape(*a.shape[:-1], heads.num_heads, heads.head_size)
    q, k, v, o = jnp.split(add_bias(x @ params.kernel, params.bias), 4, axis=-1)
    log_i, f_raw = jnp.split(add_bias(x @ params.gate_kernel, params.gate_bias), 2, axis=-1)
    log_f = jax.nn.log_sigmoid(f_raw) if heads.forget_gate == "sigmoid" else f_raw
    scaled_k = per_head(k) / math.sqrt(heads.head_size)
    memory = MemoryInputs(per_head(q), scaled_k, per_head(v), log_f, log_i)
    return MLSTMInputs(memory, jax.nn.sigmoid(o))


def output(params, h, xp: MLSTMInputs):
    """``MatrixMemory.output``: the heads' read-outs side by side, times the output gate."""
    del params
    return xp.o * h.reshape(*h.shape[:-2], h.shape[-2] * h.shape[-1])


def recur(params, state, xp: MLSTMInputs):
    """One step of the memory, then the output."""
    state, h = memory_step(state, xp.memory)
    return state, output(params, h, xp)


def memory_inputs(xp: MLSTMInputs) -> MemoryInputs:
    """``MatrixMemory.inputs``: what the memory reads and writes."""
    return xp.memory


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
    head_size = check_heads(hidden_size, num_heads)
    heads = MLSTMHeads(num_heads, head_size, one_of("forget_gate", forget_gate, FORGET_GATES))
    return split_cell(
        init=bound(init_mlstm, heads=heads, kernel_init=kernel_init, dtype=dtype),
        initial_state=bound(mlstm_state, heads=heads),
        project=bound(project, heads=heads),
        recur=recur,
        input_size=kernel_input_size,
        name="mlstm",
        config=Config(hidden_size=hidden_size, num_heads=num_heads, forget_gate=forget_gate),
        memory=MatrixMemory(inputs=memory_inputs, output=output),
    )


__all__ = ["MLSTMInputs", "MLSTMParams", "memory_step", "mlstm"]
