"""The ``reference`` backend: ``lax.scan`` over ``cell.step``, nothing else.

Every other backend is tested against this one; it needs nothing from a cell
but its ``step``, and computes every problem.
"""

from __future__ import annotations

from functools import partial

from rnn_jax.backends.contract import Backend, always, callable_module, register
from rnn_jax.backends.masking import scan_steps


def run(cell, params, problem):
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


def configure() -> Backend:
    """The ``reference`` backend (it has no options)."""
    return DEFAULT


DEFAULT = register(Backend("reference", always, run))
callable_module(__name__)
