"""``rnn_jax.backends``: run a cell over a sequence, with lengths, reversal and kernels."""

from __future__ import annotations

from typing import Any

import jax

from rnn_jax.backends.auto import choose_backend
from rnn_jax.backends.registry import Backend, get_backend
from rnn_jax.backends.validation import check_initial_state, check_length, check_xs
from rnn_jax.cells.base import Cell


def scan(
    cell: Cell,
    params: Any,
    xs: jax.Array,
    *,
    initial_state: Any = None,
    length: jax.Array | None = None,
    reverse: bool = False,
    backend: str | Backend = "auto",
    unroll: int | bool = 1,
) -> tuple[Any, jax.Array]:
    """Runs ``cell`` over the time-major sequence ``xs``; returns ``(final_carry, ys)``.

    Args:
        cell: a `Cell`.
        params: its parameters, from ``cell.init``.
        xs: ``[T, *batch, F]``, time first as in ``lax.scan``. For batch-major
            data, ``jax.vmap`` over a call on ``[T, F]`` compiles to the same loop.
        initial_state: a carry for batch shape ``xs.shape[1:-1]``; default
            ``cell.initial_state(params, batch_shape)``.
        length: ``[*batch]`` ints in ``[0, T]``: sequences are right-padded.
            Outputs past a length are zero and the final carry is the state
            after the last valid step.
        reverse: run from the last valid step back to the first; outputs stay
            aligned with their inputs, so a bidirectional layer over a padded
            batch is exact.
        backend: ``"auto"``, a registered name (``rj.backend_names()``) or a
            configured `Backend`.
        unroll: steps unrolled per loop iteration, as in ``lax.scan``.

    Returns:
        ``(final_carry, ys)`` with ``ys: [T, *batch, output_size]``.

    Example:
        >>> cell = rj.lstm(32)
        >>> params = cell.init(jax.random.key(0), 8)
        >>> xs = jnp.ones((20, 4, 8))
        >>> carry, ys = rj.scan(cell, params, xs, length=jnp.array([20, 5, 9, 1]))
        >>> ys.shape
        (20, 4, 32)
    """
    if not isinstance(cell, Cell):
        raise TypeError(
            f"cell must be an rnn_jax Cell (e.g. rj.lstm(64)); got {type(cell).__name__}"
        )
    batch_shape = check_xs(cell, params, xs)
    length = check_length(length, batch_shape, xs.shape[0])
    initial_state = check_initial_state(cell, params, initial_state, batch_shape)
    if isinstance(backend, Backend):
        chosen = backend
    elif backend == "auto":
        chosen = choose_backend(cell, xs, length)
    else:
        chosen = get_backend(backend)
    return chosen.run(
        cell,
        params,
        xs,
        initial_state=initial_state,
        length=length,
        reverse=bool(reverse),
        unroll=unroll,
    )
