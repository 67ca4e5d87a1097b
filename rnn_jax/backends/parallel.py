"""The ``parallel`` backend: scans over a cell's linear recurrence ``h_t = a_t h_{t-1} + b_t``.

For cells with a `LinearRecurrence` (``cell.linear``: min_gru, min_lstm, lru,
rg_lru), all coefficients ``(a, b)`` come from the inputs at once; the states are
then one solve of the recurrence (`rnn_jax.backends.linear_solve`) and the outputs
one map over all states. Methods:

- ``"associative"``: ``lax.associative_scan``, ``O(log T)`` depth; the form for
  GPUs and TPUs.
- ``"chunked"``: sequential inside short chunks (fused, unrolled), a scan across
  chunks; fewer loop iterations, for long sequences of small states on CPU.
- ``log_space=True``: the associative scan over ``(log a, log b)`` for cells
  whose coefficients are positive (``linear.log_coefficients``: min_gru,
  min_lstm). States from a zero start are positive, so they are carried as
  logarithms; the initial state (of any sign) adds ``exp(sum log a) * h0``
  exactly. Finite over any length (tested at 65,536 steps).

Valid steps, restarts, reversal and initial states are exact: a step that does
not count becomes ``a = 1, b = 0`` (the carry passes through), and at a
restart ``a = 0`` with the restart state folded into ``b``
(`rnn_jax.backends.masking.masked_coefficients`); in log space a restart is
``log a = -inf`` and the restart state enters through one more linear solve.
``reverse=True`` scans from the end, so the padding is passed first and
changes nothing; ``h0`` enters at the first step in scan order.

Cells with a `MatrixMemory` (``cell.memory``: the mLSTM) run its chunkwise-parallel
form (`rnn_jax.backends.chunkwise`): chunks of ``memory_chunk`` steps, an
attention-like form within each and the recurrence on the states across
them; valid steps, restarts and reversal exact as well. ``method`` and
``log_space`` concern linear recurrences only.

``rj.backends.Parallel(...)`` configures one; ``backend="parallel"`` is the
default configuration (``method="auto"``: the associative scan on GPU and TPU,
the chunked scan on CPU, where it measures better than an associative scan).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import jax.numpy as jnp

from rnn_jax import _validate
from rnn_jax.backends.chunkwise import chunkwise
from rnn_jax.backends.contract import Backend, Problem
from rnn_jax.backends.linear_solve import METHODS, solve, solve_log
from rnn_jax.backends.masking import (
    expand_to,
    linear_outputs,
    masked_coefficients,
    zero_where_not,
)


def refusal(cell, log_space: bool) -> str | None:
    """Why this backend cannot run ``cell``, or None."""
    if cell.memory is not None:
        return None
    if cell.linear is None:
        return (
            "it has no linear recurrence (cell.linear, as min_gru, min_lstm, lru and rg_lru "
            "have) nor matrix memory (cell.memory, as mlstm has); use backend='newton' "
            "(parallel in time for any cell) or 'sequential'"
        )
    if log_space and cell.linear.log_coefficients is None:
        return (
            "log_space=True needs positive coefficients (linear.log_coefficients, as min_gru "
            "and min_lstm have); use log_space=False"
        )
    return None


def states_in_log_space(linear, params, problem: Problem, h0, *, method, chunk):
    """All states from ``(log a, log b)``; restarts add the restart state's share linearly."""
    log_a, log_b = linear.log_coefficients(params, problem.xs)
    log_b = log_b.astype(h0.dtype)
    log_a = jnp.broadcast_to(log_a, log_b.shape).astype(h0.dtype)
    if problem.valid is not None:
        keep = expand_to(problem.valid, log_b)
        log_a = jnp.where(keep, log_a, 0.0)
        log_b = jnp.where(keep, log_b, -jnp.inf)
    if problem.starts is None:
        return solve_log(log_a, log_b, h0, reverse=problem.reverse, method=method, chunk=chunk)
    start = expand_to(problem.starts, log_b)
    # The state entering a start is the restart state R: a_t R joins b_t, then a_t = 0.
    from_restarts = jnp.where(start, jnp.exp(log_a) * problem.restart_state[None], 0.0)
    log_a = jnp.where(start, -jnp.inf, log_a)
    hs = solve_log(log_a, log_b, h0, reverse=problem.reverse, method=method, chunk=chunk)
    restarted_share = solve(
        jnp.exp(log_a),
        from_restarts,
        jnp.zeros_like(h0),
        reverse=problem.reverse,
        method=method,
        chunk=chunk,
    )
    return hs + restarted_share


def memory_run(cell, params, problem: Problem, *, chunk: int):
    """``(final_carry, ys)`` of a matrix-memory cell by its chunkwise-parallel form."""
    xp = cell.project(params, problem.xs)
    final, h = chunkwise(cell.memory.inputs(xp), problem, chunk=chunk)
    ys = cell.memory.output(params, h, xp)
    if problem.valid is not None:
        ys = zero_where_not(problem.valid, ys)
    return final, ys


def parallel_scan(cell, params, problem: Problem, *, method, chunk, log_space, memory_chunk):
    """``(final_carry, ys)`` of a linear-recurrence or matrix-memory cell, as the reference
    scan gives them."""
    if cell.memory is not None:
        return memory_run(cell, params, problem, chunk=memory_chunk)
    linear = cell.linear
    h0 = problem.initial_state
    if log_space:
        hs = states_in_log_space(linear, params, problem, h0, method=method, chunk=chunk)
    else:
        a, b = linear.coefficients(params, problem.xs)
        dtype = jnp.result_type(a, b, h0)
        b = b.astype(dtype)
        a = jnp.broadcast_to(a, b.shape).astype(dtype)
        a, b = masked_coefficients(a, b, problem)
        hs = solve(a, b, h0.astype(dtype), reverse=problem.reverse, method=method, chunk=chunk)
    hs = hs.astype(h0.dtype)
    return linear_outputs(linear, params, hs, problem)


@dataclass(frozen=True)
class Parallel(Backend):
    """The ``parallel`` backend, configured with a scan method.

    Args:
        method: ``"associative"`` (``lax.associative_scan``), ``"chunked"``
            (sequential inside chunks of ``chunk`` steps, a scan across them)
            or ``"auto"`` (chunked on CPU, associative elsewhere).
        chunk: steps per chunk of the chunked method (small: 4 to 16).
        log_space: scan ``(log a, log b)`` (associative); for cells with
            positive coefficients (min_gru, min_lstm), finite over any length.
        memory_chunk: steps per chunk of a matrix memory's chunkwise form
            (mlstm): ``[L, L]`` work per chunk, one ``[dk, dv]`` state between.

    Example:
        >>> cell = rj.min_gru(16)
        >>> params = cell.init(jax.random.key(0), 4)
        >>> backend = rj.backends.Parallel(log_space=True)
        >>> carry, ys = rj.scan(cell, params, jnp.ones((1000, 4)), backend=backend)
        >>> bool(jnp.isfinite(ys).all())
        True
    """

    name = "parallel"
    method: Literal["auto", "associative", "chunked"] = "auto"
    chunk: int = 8
    log_space: bool = False
    memory_chunk: int = 64

    def __post_init__(self):
        _validate.one_of("method", self.method, METHODS)
        _validate.positive_int("chunk", self.chunk)
        _validate.positive_int("memory_chunk", self.memory_chunk)
        if self.log_space and self.method == "chunked":
            raise ValueError(
                "log_space=True scans associatively; use method='auto' or 'associative'"
            )

    def supports(self, cell, problem: Problem) -> str | None:
        return refusal(cell, self.log_space)

    def run(self, cell, params, problem: Problem):
        return parallel_scan(
            cell,
            params,
            problem,
            method=self.method,
            chunk=self.chunk,
            log_space=self.log_space,
            memory_chunk=self.memory_chunk,
        )
