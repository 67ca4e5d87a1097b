"""From ``rj.scan``'s arguments to one `Problem`: trace-time checks in words, then normalisation.

Every check runs on shapes and dtypes only (and on the values of ``length``
where they are concrete), so it costs nothing when the scan runs. An error
names the argument, what was expected and what came; nothing is broadcast or
truncated silently.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax import _validate
from rnn_jax.backends.contract import Problem
from rnn_jax.backends.masking import restarted, scan_order_starts, valid_steps
from rnn_jax.cells.cell import initial_carry


def check_xs(cell, params, xs: Any) -> tuple[int, ...]:
    """Checks ``xs: [T, *batch, *features]`` against the cell; returns the batch shape."""
    rank = cell.feature_rank
    if not hasattr(xs, "shape") or not hasattr(xs, "dtype"):
        raise TypeError(
            f"xs must be an array of shape [T, *batch, features]; got {type(xs).__name__}"
        )
    if xs.ndim < 1 + rank:
        raise ValueError(
            f"xs must have shape [T, *batch, features] (rank >= {1 + rank} for the "
            f"{cell.name} cell); got shape {tuple(xs.shape)}"
        )
    _validate.dtype_of_kind("xs", xs.dtype, jnp.floating, "a floating array")
    if cell.input_size is not None:
        expected = cell.input_size(params)
        if xs.shape[-1] != expected:
            raise ValueError(
                f"xs must have {expected} features (the {cell.name} cell's input size) in its "
                f"last axis; got shape {tuple(xs.shape)}"
            )
    return tuple(xs.shape[1 : xs.ndim - rank])


def check_length(length: Any, batch_shape: tuple[int, ...], steps: int) -> jax.Array | None:
    """Checks ``length`` (an int array of the batch shape, values in ``[0, T]`` when concrete)."""
    if length is None:
        return None
    length = jnp.asarray(length)
    _validate.dtype_of_kind("length", length.dtype, jnp.integer, "an integer array")
    _validate.shape_is("length", length.shape, batch_shape, f"the batch shape {batch_shape} of xs")
    check_length_values(length, steps)
    return length


def check_length_values(length: Any, steps: int) -> None:
    """Checks that ``length``'s values lie in ``[0, T]``, where they are known (not traced)."""
    try:
        concrete = np.asarray(length)
    except jax.errors.TracerArrayConversionError:
        return
    if concrete.size and (concrete.min() < 0 or concrete.max() > steps):
        raise ValueError(
            f"length must lie in [0, {steps}] (T = xs.shape[0]); got values from "
            f"{concrete.min()} to {concrete.max()}"
        )


def check_steps_mask(name: str, value: Any, steps: int, batch_shape: tuple[int, ...]):
    """Checks a per-step bool array ``[T, *batch]`` (``mask``, ``resets``)."""
    if value is None:
        return None
    value = jnp.asarray(value)
    _validate.dtype_of_kind(name, value.dtype, jnp.bool_, "a bool array of shape [T, *batch]")
    expected = (steps, *batch_shape)
    _validate.shape_is(name, value.shape, expected, f"shape [T, *batch] = {expected} (from xs)")
    return value


def check_initial_state(cell, params, initial_state: Any, step_shape: tuple[int, ...]) -> Any:
    """Returns ``initial_state``, or the cell's zeros when None, after checking its structure.

    ``step_shape``: one step's input shape ``[*batch, *features]`` (a convolutional
    cell's carry follows its input's spatial shape: `initial_carry`)."""
    batch_shape = tuple(step_shape[: len(step_shape) - cell.feature_rank])
    if initial_state is None:
        return initial_carry(cell, params, step_shape)
    expected = jax.eval_shape(lambda p: initial_carry(cell, p, step_shape), params)
    expected_def = jax.tree.structure(expected)
    got_def = jax.tree.structure(initial_state)
    if expected_def != got_def:
        raise ValueError(
            f"initial_state must have the structure of the {cell.name} cell's carry "
            f"{expected_def}; got {got_def}"
        )
    paths = jax.tree_util.tree_flatten_with_path(expected)[0]
    for (path, want), got in zip(paths, jax.tree.leaves(initial_state), strict=True):
        where = jax.tree_util.keystr(path)
        shape = tuple(getattr(got, "shape", ()))
        if shape != tuple(want.shape):
            raise ValueError(
                f"initial_state{where} must have shape {tuple(want.shape)} for batch shape "
                f"{batch_shape}; got {shape}"
            )
        if jnp.result_type(got) != want.dtype:
            raise TypeError(
                f"initial_state{where} must have dtype {want.dtype}; got {jnp.result_type(got)}"
            )
    return initial_state


def check_output_dtype(dtype: Any):
    """``dtype`` as a NumPy dtype if it is floating, None if None; else a TypeError naming it."""
    if dtype is None:
        return None
    try:
        dtype = jnp.dtype(dtype)
    except TypeError:
        raise TypeError(f"output_dtype must be a floating dtype or None; got {dtype!r}") from None
    if not jnp.issubdtype(dtype, jnp.inexact):
        raise TypeError(f"output_dtype must be a floating dtype or None; got {dtype}")
    return dtype


def time_axis_of(cell, xs: Any) -> int:
    """The time axis of batch-major ``xs: [*batch, T, *features]``."""
    rank = cell.feature_rank
    if getattr(xs, "ndim", 0) < 1 + rank:
        raise ValueError(
            f"xs must have shape [*batch, T, features] (time_major=False; rank >= {1 + rank} "
            f"for the {cell.name} cell); got shape {tuple(getattr(xs, 'shape', ()))}"
        )
    return xs.ndim - 1 - rank


def time_first(name: str, value: Any, batch_shape: tuple[int, ...], steps: int):
    """A batch-major per-step array ``[*batch, T]`` (``mask``, ``resets``) as ``[T, *batch]``."""
    if value is None:
        return None
    value = jnp.asarray(value)
    expected = (*batch_shape, steps)
    what = f"shape [*batch, T] = {expected} (time_major=False, from xs)"
    _validate.shape_is(name, value.shape, expected, what)
    return jnp.moveaxis(value, -1, 0)


class Operands(NamedTuple):
    """The arrays of one scan, as ``rj.scan`` takes them (None where not given), or checked
    and batch-flattened (`Arguments.flat`)."""

    params: Any
    xs: Any
    initial_state: Any = None
    length: Any = None
    mask: Any = None
    resets: Any = None


class Arguments:
    """``rj.scan``'s array arguments checked, with the batch axes flattened to one.

    ``flat``: the `Operands` with ``xs [T, B, *features]``, ``initial_state``
    leaves ``[B, ...]`` (the cell's zeros where not given), ``length [B]``,
    ``mask`` and ``resets`` ``[T, B]``; ``batch_shape``: the shape to restore.
    """

    def __init__(self, cell, operands: Operands):
        params, xs = operands.params, operands.xs
        batch_shape = check_xs(cell, params, xs)
        steps = xs.shape[0]
        length = check_length(operands.length, batch_shape, steps)
        mask = check_steps_mask("mask", operands.mask, steps, batch_shape)
        resets = check_steps_mask("resets", operands.resets, steps, batch_shape)
        initial_state = check_initial_state(cell, params, operands.initial_state, xs.shape[1:])
        B = math.prod(batch_shape)
        lead = len(batch_shape)
        self.batch_shape = batch_shape
        self.flat = Operands(
            params=params,
            xs=xs.reshape(steps, B, *xs.shape[1 + lead :]),
            initial_state=jax.tree.map(
                lambda leaf: leaf.reshape(B, *leaf.shape[lead:]), initial_state
            ),
            length=None if length is None else length.reshape(B),
            mask=None if mask is None else mask.reshape(steps, B),
            resets=None if resets is None else resets.reshape(steps, B),
        )

    def restore(self, carry, ys):
        """``(carry, ys)`` from ``[B, ...]`` and ``[T, B, ...]`` back to the batch shape."""
        shape = self.batch_shape
        carry = jax.tree.map(lambda leaf: leaf.reshape(*shape, *leaf.shape[1:]), carry)
        ys = jax.tree.map(lambda y: y.reshape(y.shape[0], *shape, *y.shape[2:]), ys)
        return carry, ys


def make_problem(cell, flat: Operands, *, reverse: bool, unroll, gradient=False) -> Problem:
    """The `Problem` of checked, batch-flattened arrays (`Arguments.flat`).

    ``length`` and ``mask`` combine (a step counts where both say so);
    ``resets`` become restarts in scan order, and the restart state is the
    cell's own initial state for the batch.
    """
    xs, mask, resets = flat.xs, flat.mask, flat.resets
    valid = valid_steps(flat.length, mask, xs.shape[0])
    starts = restart_state = None
    if resets is not None:
        starts = scan_order_starts(resets, valid, reverse)
        restart_state = initial_carry(cell, flat.params, xs.shape[1:])
    return Problem(
        xs=xs,
        initial_state=flat.initial_state,
        valid=valid,
        length=flat.length if mask is None else None,
        starts=starts,
        restart_state=restart_state,
        reverse=bool(reverse),
        unroll=unroll,
        param_dtypes=floating_dtypes(flat.params),
        gradient=gradient,
    )


def carry_passed_on(problem: Problem, resets, carry):
    """The final carry a stream passes on to its next chunk.

    In reverse, a reset at step 0 ends the segment there: the chunk before it
    in time (fed next) starts from the cell's initial state, so the final carry
    is that state, and a reversed stream fed chunk by chunk from its end equals
    one long scan, as a forward one does. Otherwise (and without steps)
    ``carry``, the state after the last step processed.
    """
    if resets is None or not problem.reverse or problem.xs.shape[0] == 0:
        return carry
    first = resets[0] if problem.valid is None else resets[0] & problem.valid[0]
    return restarted(first, problem.restart_state, carry)


def floating_dtypes(params) -> frozenset:
    """The dtypes of the floating leaves of ``params``."""
    leaves = jax.tree.leaves(params)
    return frozenset(jnp.dtype(x.dtype) for x in leaves if jnp.issubdtype(x.dtype, jnp.floating))


def describe(
    cell, params, xs, *, reverse: bool = False, unroll=None, gradient: bool = False, **arrays
) -> Problem:
    """The `Problem` ``rj.scan`` would hand a backend for these arguments, as shapes only.

    ``params``, ``xs`` and ``arrays`` (``initial_state``, ``length``, ``mask``,
    ``resets``) may be arrays or shape structs; nothing runs. What ``supports``
    and ``auto`` read, without tracing a scan.

    Example:
        >>> cell = rj.lstm(8)
        >>> params = jax.eval_shape(lambda key: cell.init(key, 4), jax.random.key(0))
        >>> problem = describe(cell, params, jax.ShapeDtypeStruct((10, 2, 3, 4), jnp.float32))
        >>> problem.xs.shape, problem.batch
        ((10, 6, 4), 6)
    """

    def arrays_only(params, xs, arrays):
        flat = Arguments(cell, Operands(params, xs, **arrays)).flat
        problem = make_problem(cell, flat, reverse=reverse, unroll=unroll)
        return problem._replace(reverse=None, unroll=None, param_dtypes=None, gradient=None)

    shapes = jax.eval_shape(arrays_only, params, xs, arrays)
    return shapes._replace(
        reverse=bool(reverse),
        unroll=unroll,
        param_dtypes=floating_dtypes(params),
        gradient=bool(gradient),
    )
