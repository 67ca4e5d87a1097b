"""The ``sequential`` backend: ``lax.scan`` with the carry-free input projection hoisted.

The projection ``x @ W + b`` of every step is one ``[T * batch, F] @ [F, G*H]``
matmul before the loop; the loop keeps only the recurrent matmul.
"""

from __future__ import annotations

from functools import partial

from rnn_jax.scan.masking import scan_steps
from rnn_jax.scan.reference import run as run_reference
from rnn_jax.scan.registry import Backend, register_backend


def run(cell, params, xs, *, initial_state, length, reverse, unroll):
    if cell.project is None or cell.recur is None:
        return run_reference(
            cell,
            params,
            xs,
            initial_state=initial_state,
            length=length,
            reverse=reverse,
            unroll=unroll,
        )
    return scan_steps(
        partial(cell.recur, params),
        initial_state,
        cell.project(params, xs),
        length=length,
        reverse=reverse,
        unroll=unroll,
    )


sequential = register_backend(Backend("sequential", run))
