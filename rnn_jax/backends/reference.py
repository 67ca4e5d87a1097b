"""The ``reference`` backend: ``lax.scan`` over ``cell.step``, nothing else.

Every other backend is tested against this one; it needs nothing from a cell
but its ``step``, and computes every problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from rnn_jax.backends.contract import Backend, Problem
from rnn_jax.backends.masking import scan_steps


def reference_scan(cell, params, problem: Problem):
    """``(final_carry, ys)``: ``cell.step`` under ``lax.scan``, masks and restarts applied
    per step, the problem's ``unroll`` (None: 1) steps per loop iteration."""
    return scan_steps(
        partial(cell.step, params),
        problem.initial_state,
        problem.xs,
        valid=problem.valid,
        starts=problem.starts,
        restart_state=problem.restart_state,
        reverse=problem.reverse,
        unroll=1 if problem.unroll is None else problem.unroll,
    )


@dataclass(frozen=True)
class Reference(Backend):
    """The plain ``lax.scan`` over ``cell.step``: the oracle every backend equals.

    Example:
        >>> cell = rj.gru(8)
        >>> params = cell.init(jax.random.key(0), 4)
        >>> carry, ys = rj.scan(cell, params, jnp.ones((10, 4)), backend=rj.backends.Reference())
    """

    name = "reference"

    def run(self, cell, params, problem: Problem):
        return reference_scan(cell, params, problem)
