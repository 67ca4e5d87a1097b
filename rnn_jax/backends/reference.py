"""The ``reference`` backend: ``lax.scan`` over ``cell.step``, nothing else.

Every other backend is tested against this one; it needs nothing from a cell
but its ``step``.
"""

from __future__ import annotations

from functools import partial

from rnn_jax.backends.masking import scan_steps
from rnn_jax.backends.registry import Backend, register_backend


def run(cell, params, xs, *, initial_state, length, reverse, unroll):
    return scan_steps(
        partial(cell.step, params),
        initial_state,
        xs,
        length=length,
        reverse=reverse,
        unroll=unroll,
    )


reference = register_backend(Backend("reference", run))
