"""``rj.scan``: run a cell over a sequence, with lengths, masks, resets, reversal and kernels.

The driver checks the arguments at trace time, flattens the batch axes,
binds one ``rnn_scan`` (`rnn_jax._scan_primitive`) whose program builds the
`rnn_jax.backends.Problem` and runs the chosen backend, and restores the
batch shape. Backends never see anything but a `Problem`.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from rnn_jax import _scan_primitive, _validate
from rnn_jax.backends import auto, contract, registry
from rnn_jax.backends.contract import Backend
from rnn_jax.backends.problem import (
    Arguments,
    carry_passed_on,
    check_output_dtype,
    make_problem,
    time_axis_of,
    time_first,
)
from rnn_jax.backends.reference import Reference
from rnn_jax.cells.cell import Cell


def resolve(backend: str | Backend) -> str | Backend:
    """``"auto"`` or the `Backend` ``backend`` names; a ValueError for anything else."""
    if isinstance(backend, Backend):
        return backend
    if backend == "auto":
        return "auto"
    if not isinstance(backend, str):
        raise TypeError(
            f"backend must be 'auto', a backend name or an rnn_jax Backend; got "
            f"{type(backend).__name__}"
        )
    return registry.get(backend)


def symbolic_sizes(problem) -> bool:
    """Whether ``T`` or the batch is a symbolic dimension (``jax.export``'s shape polymorphism)."""
    return not all(isinstance(size, int) for size in problem.xs.shape[:2])


def choose(cell, problem, backend: str | Backend) -> Backend:
    """The backend that runs ``problem``: ``backend``, or ``auto``'s pick; refusals in words.

    With symbolic sizes every scan is the reference loop: the kernels plan chunks, tiles and
    their measured settings from concrete ``T`` and batch, and ``auto`` has no measurement
    to look up; the reference, which every backend equals, takes any size.
    """
    if symbolic_sizes(problem):
        return Reference()
    chosen = auto.choose(cell, problem) if backend == "auto" else backend
    message = contract.refusal(chosen, cell, problem)
    if message is not None:
        raise ValueError(message)
    return chosen


def _programs(cell, backend, reverse, unroll, tree, *, gradient: bool):
    """``(solve, reference)`` over the flat arguments of one scan (see `_scan_primitive.bind`)."""

    def run_with(flat, pick):
        params, xs, h0, length, mask, resets = jax.tree.unflatten(tree, flat)
        problem = make_problem(
            cell,
            params,
            xs,
            h0,
            length,
            mask,
            resets,
            reverse=reverse,
            unroll=unroll,
            gradient=gradient,
        )
        carry, ys = pick(problem).run(cell, params, problem)
        return jax.tree.leaves((carry_passed_on(problem, resets, carry), ys))

    def solve(*flat):
        return run_with(flat, lambda problem: choose(cell, problem, backend))

    def oracle(*flat):
        return run_with(flat, lambda problem: Reference())

    return solve, oracle


def scan(
    cell: Cell,
    params: Any,
    xs: jax.Array,
    *,
    initial_state: Any = None,
    length: jax.Array | None = None,
    reverse: bool = False,
    resets: jax.Array | None = None,
    mask: jax.Array | None = None,
    backend: str | Backend = "auto",
    unroll: int | bool | None = None,
    output_dtype: Any = None,
    time_major: bool = True,
) -> tuple[Any, Any]:
    """Runs ``cell`` over the time-major sequence ``xs``; returns ``(final_carry, ys)``.

    Args:
        cell: a `Cell`.
        params: its parameters, from ``cell.init``.
        xs: ``[T, *batch, F]``, time first as in ``lax.scan`` (``[T, *batch,
            *features]`` for a cell with several feature axes). For
            batch-major data, ``jax.vmap`` over a call on ``[T, F]`` runs the
            same batched kernel: the mapped axis is folded into the batch.
        initial_state: a carry for batch shape ``xs.shape[1:-1]``; default
            ``cell.initial_state(params, batch_shape)``.
        length: ``[*batch]`` ints in ``[0, T]``: sequences are right-padded.
            Outputs past a length are zero and the final carry is the state
            after the last valid step.
        reverse: run from the last valid step back to the first; outputs stay
            aligned with their inputs, so a bidirectional layer over a padded
            batch is exact.
        resets: ``[T, *batch]`` bools: True at step ``t`` starts a new segment
            there (a new episode in a packed batch). The segment where the
            scan begins starts from ``initial_state`` (forward: the first in
            time, unless ``resets[0]``; reverse: the last one, holding the last
            valid step), every other from the cell's initial state; with
            ``reverse`` each segment runs backwards on its own; no gradient
            crosses a boundary. A reset on a masked step counts for nothing.
            The final carry is the state after the last step processed, except
            that in reverse a reset at step 0 hands on the cell's initial state:
            a stream fed chunk by chunk (final carry in, next chunk; from the
            end when reversed) equals one long scan.
        mask: ``[T, *batch]`` bools: a step where it is False passes the carry
            through and outputs zeros (holes anywhere; ``length`` is the case
            of a prefix). Combines with ``length``.
        backend: ``"auto"`` (measured choice), a registered name
            (``rj.backends.names()``) or a configured backend such as
            ``rj.backends.Sequential(chunk=8)``. A backend that cannot compute
            this cell exactly raises a ValueError saying why. Where ``T`` or the
            batch is a symbolic size (``jax.export``'s shape polymorphism), the
            reference loop runs, whatever the backend.
        unroll: steps per loop iteration; None takes the backend's tuned
            value, an int (1 included) or a bool is honoured.
        output_dtype: the dtype of ``ys``. None keeps the carry's: float32 for
            bf16/fp16 parameters, whose matmuls run in their precision while the
            state accumulates in float32 (the mixed-precision policy; Flax's
            ``nn.RNN`` returns the parameters' dtype instead). A floating dtype
            casts the outputs, e.g. ``jnp.bfloat16`` to feed bf16 layers.
        time_major: False for batch-major data (Flax's ``nn.RNN`` default,
            PyTorch's ``batch_first=True``): ``xs: [*batch, T, F]``, ``mask``
            and ``resets`` ``[*batch, T]``, and ``ys`` comes back
            ``[*batch, T, output_size]``; the same kernel runs.

    Returns:
        ``(final_carry, ys)`` with ``ys: [T, *batch, output_size]``
        (``[*batch, T, output_size]`` with ``time_major=False``).

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
    chosen = resolve(backend)
    unroll = _validate.unroll(unroll)
    output_dtype = check_output_dtype(output_dtype)
    if not time_major:
        axis = time_axis_of(cell, xs)
        batch_shape, steps = tuple(xs.shape[:axis]), xs.shape[axis]
        xs = jnp.moveaxis(xs, axis, 0)
        mask = time_first("mask", mask, batch_shape, steps)
        resets = time_first("resets", resets, batch_shape, steps)
    arguments = Arguments(
        cell, params, xs, initial_state=initial_state, length=length, mask=mask, resets=resets
    )
    operands = (
        params,
        arguments.xs,
        arguments.initial_state,
        arguments.length,
        arguments.mask,
        arguments.resets,
    )
    flat, tree = jax.tree.flatten(operands)
    # The batch axis of every leaf: none for the parameters (shared by all sequences),
    # 1 for the [T, B, ...] inputs and outputs, 0 for [B, ...] carries and lengths.
    axes = (None, 1, 0, 0, 1, 1)
    batch_in = tuple(
        a for part, a in zip(operands, axes, strict=True) for _ in jax.tree.leaves(part)
    )
    x = jax.ShapeDtypeStruct(arguments.xs.shape[1:], arguments.xs.dtype)
    carry, y = jax.eval_shape(cell.step, params, arguments.initial_state, x)
    batch_out = (0,) * len(jax.tree.leaves(carry)) + (1,) * len(jax.tree.leaves(y))
    make = partial(_programs, cell, chosen, bool(reverse), unroll, tree)
    outs = _scan_primitive.bind(make, flat, batch_in, batch_out)
    final, ys = jax.tree.unflatten(jax.tree.structure((carry, y)), outs)
    if output_dtype is not None:
        ys = jax.tree.map(lambda leaf: leaf.astype(output_dtype), ys)
    final, ys = arguments.restore(final, ys)
    if not time_major:
        ys = jax.tree.map(lambda y: jnp.moveaxis(y, 0, len(arguments.batch_shape)), ys)
    return final, ys
