"""The optional capabilities of a cell: typed forms of its step that backends ask for.

A backend never decides by a cell's name: it reads one of these fields of the
`rnn_jax.cells.Cell` and, where it is None, refuses in words.

- `Gates` (``cell.gates``): the step split around its one recurrent matmul,
  with `HeadedGates` for block-diagonal (multi-head) recurrences.
- `LinearRecurrence` (``cell.linear``): ``h_t = a_t * h_{t-1} + b_t``.
- `MatrixMemory` (``cell.memory``): the mLSTM's gated matrix memory.

The weight layouts of other libraries (cuDNN/PyTorch, Keras) are in
`rnn_jax.cells.layouts`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

PyTree = Any
Params = PyTree
Carry = PyTree


class Gates(NamedTuple):
    """``recur`` split around its recurrent matmul.

    ``recur(params, carry, xp) == combine(params, carry, xp, fed_back(carry) @ kernel(params))``
    where ``kernel(params): [R, G*H]`` is the recurrent matrix and
    ``fed_back(carry): [*batch, R]`` the state that multiplies it (a linear
    function of the carry). Everything else in the step (biases, gates,
    normalisation, peepholes, projection) is in ``combine``, which a kernel may
    run wherever it likes, e.g. inside a fused loop that keeps ``kernel`` on chip.

    ``heads``: for a block-diagonal recurrence (multi-head cells), the
    `HeadedGates` view of the same step, so a kernel holds only the blocks;
    None for a dense ``kernel``.

    ``blocks``: how many equal column blocks (gates) ``combine`` cuts the
    projected input ``xp [*batch, G*H]`` into (a GRU's 3); 1 where it reads
    ``xp`` whole (an LSTM activates ``xp + hu`` as one row). A kernel may keep
    ``xp`` as those blocks and join them where ``combine`` reads them, which
    XLA's CPU loops run several times faster than one array read at several
    column offsets; the values are the same either way.
    """

    kernel: Callable[[Params], jax.Array]
    fed_back: Callable[[Carry], jax.Array]
    combine: Callable[[Params, Carry, PyTree, jax.Array], tuple[Carry, jax.Array]]
    heads: HeadedGates | None = None
    blocks: int = 1


class HeadedGates(NamedTuple):
    """`Gates` as ``num_heads`` independent blocks: what a fused kernel runs per head.

    - ``gates``: the `Gates` of one head, over one head's arrays:
      ``gates.kernel(head_params) : [R_head, G*H_head]``, ``gates.fed_back``
      and ``gates.combine`` on one head's carry and projected input.
    - ``head_params(params)``: the parameters one head's ``gates`` read, every
      leaf with a leading ``[num_heads]`` axis (head ``n`` gets
      ``tree.map(lambda p: p[n], head_params(params))``).
    - ``to_heads(tree)``: carry or projected-input leaves ``[*lead, ...]`` to
      ``[num_heads, *lead, ...]`` (any leading axes: batch, or time and batch).
    - ``from_heads(tree)``: the inverse, for carries and outputs.

    Running head ``n`` on ``to_heads(carry)[n]`` and ``to_heads(xp)[n]`` for
    every ``n`` and merging with ``from_heads`` equals ``recur``.
    """

    num_heads: int
    gates: Gates
    head_params: Callable[[Params], PyTree]
    to_heads: Callable[[PyTree], PyTree]
    from_heads: Callable[[PyTree], PyTree]


class LinearRecurrence(NamedTuple):
    """The linear form of a cell whose carry ``h [*batch, H]`` obeys ``h_t = a_t * h_{t-1} + b_t``.

    - ``coefficients(params, xs) -> (a, b)``: both ``[T, *batch, H]`` for
      ``xs: [T, *batch, F]`` (complex for complex-state cells such as the LRU).
    - ``output(params, hs, xs) -> ys``: outputs from all states ``hs: [T, *batch, H]``
      and the inputs.
    - ``log_coefficients(params, xs) -> (log_a, log_b)``, optional: for cells
      whose ``a`` and ``b`` are positive, their logarithms, so a log-space scan
      stays finite over very long sequences.

    The cell's ``step`` must compute the same: ``h = a * h_prev + b`` then
    ``y = output`` at that step.
    """

    coefficients: Callable[[Params, jax.Array], tuple[jax.Array, jax.Array]]
    output: Callable[[Params, jax.Array, jax.Array], jax.Array]
    log_coefficients: Callable[[Params, jax.Array], tuple[jax.Array, jax.Array]] | None = None


class MemoryInputs(NamedTuple):
    """What a matrix memory reads and writes at each step, per head (see `MatrixMemory`).

    Leading axes ``[*lead]`` are time and batch, or batch alone for one step.
    """

    q: jax.Array  # [*lead, NH, dk]: the query
    k: jax.Array  # [*lead, NH, dk]: the key (any scaling already applied)
    v: jax.Array  # [*lead, NH, dv]: the value
    log_f: jax.Array  # [*lead, NH]: log of the forget gate
    log_i: jax.Array  # [*lead, NH]: log of the input gate (its pre-activation for exp gates)


class MatrixMemoryState(NamedTuple):
    """The carry of a matrix memory, stabilised: ``C`` and ``n`` stored times ``exp(-m)``."""

    c: jax.Array  # [*batch, NH, dk, dv]
    n: jax.Array  # [*batch, NH, dk]
    m: jax.Array  # [*batch, NH]


class MatrixMemory(NamedTuple):
    """The form of a cell whose carry is the mLSTM's matrix memory (Beck et al. 2024).

    Per head, from `MemoryInputs` ``(q, k, v, log f, log i)`` of each step::

        C_t = f_t C_{t-1} + i_t k_t v_t^T      [dk, dv]
        n_t = f_t n_{t-1} + i_t k_t            [dk]
        h_t = q_t^T C_t / max(|q_t . n_t|, 1)  [dv]

    carried as a `MatrixMemoryState` stabilised by ``m_t = max(log f_t +
    m_{t-1}, log i_t)``: the gates become ``f_t exp(m_{t-1} - m_t)`` and
    ``exp(log i_t - m_t)`` (at most 1), ``C`` and ``n`` are stored times
    ``exp(-m_t)``, and ``h_t = q^T C / max(|q . n|, exp(-m_t))``, unchanged.
    The recurrence is linear in ``(C, n)`` with a scalar decay per head, which
    is what a chunkwise-parallel solver uses: within a chunk a masked
    ``[L, L]`` attention-like form, across chunks the recurrence on the states.

    - ``inputs(xp) -> MemoryInputs``: from the projected inputs
      ``xp = cell.project(params, x)`` (any leading axes).
    - ``output(params, h, xp) -> y``: the cell's output from the read-outs
      ``h [*lead, NH, dv]`` and the projected inputs.

    The cell's ``recur`` must compute the same, one step at a time.
    """

    inputs: Callable[[PyTree], MemoryInputs]
    output: Callable[[Params, jax.Array, PyTree], jax.Array]


def memory_read_out(read: jax.Array, norm: jax.Array, m: jax.Array) -> jax.Array:
    """A `MatrixMemory`'s ``h = read / max(|norm|, exp(-m))``, from the stabilised ``read =
    q^T C [..., dv]``, ``norm = q . n [...]`` and the stabiliser ``m [...]``."""
    return read / jnp.maximum(jnp.abs(norm), jnp.exp(-m))[..., None]


def diagonal_recur(params, h: jax.Array, coefficients) -> tuple[jax.Array, jax.Array]:
    """``recur`` of a cell whose projection gives ``(a, b)``: ``h = a * h + b``, output ``h``."""
    del params
    a, b = coefficients
    h = a * h + b
    return h, h


def states_as_outputs(params, hs: jax.Array, xs) -> jax.Array:
    """``LinearRecurrence.output`` of cells whose output is their state ``h`` itself."""
    del params, xs
    return hs
