"""``rj.scan``: run a cell over a sequence, with lengths, masks, resets, reversal and kernels.

The driver checks the arguments at trace time, flattens the batch axes,
binds one ``rnn_scan`` (`rnn_jax._scan_primitive`) whose program builds the
`rnn_jax.backends.Problem` and runs the chosen backend, and restores the
batch shape. Backends never see anything but a `Problem`, and never one
without steps or sequences: ``T = 0`` or ``B = 0`` is answered by the
reference loop, exactly (after the chosen backend's ``supports`` has had its
say, so a refusal does not depend on the shapes).

An un-jitted call (no transformation is tracing it) of a hashable cell with
array arguments runs one compiled program per `Settings` and argument shapes
and dtypes (`compiled_scan`): a second identical call traces and compiles
nothing. Other cells (one that closes over
an array, say) trace their program on every call.

`newton_scan` runs the same front end (checks, `Problem`, degenerate shapes,
the carry passed on) into the ``newton`` backend, and reports how its
iterations went.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.extend as jex
import jax.numpy as jnp
import numpy as np

from rnn_jax import _scan_primitive, _validate
from rnn_jax.backends import auto, contract, registry
from rnn_jax.backends.contract import Backend, Problem
from rnn_jax.backends.newton import Newton, NewtonInfo
from rnn_jax.backends.problem import (
    Arguments,
    Operands,
    carry_passed_on,
    check_length_values,
    check_output_dtype,
    make_problem,
    time_axis_of,
    time_first,
)
from rnn_jax.backends.reference import Reference
from rnn_jax.cells.cell import Cell


class Settings(NamedTuple):
    """What a scan's program depends on besides its arrays' shapes and dtypes.

    ``backend`` is ``"auto"`` or a `Backend`; ``registered``, with ``"auto"``,
    the backends registered under a name (which ``auto`` may pick), so that a
    registration made later is seen. Hashable where the cell is.
    """

    cell: Cell
    backend: str | Backend
    reverse: bool
    unroll: int | bool | None
    output_dtype: Any
    time_major: bool
    registered: tuple = ()


def check_cell(cell) -> Cell:
    """``cell`` if it is a `Cell`; a TypeError naming what came otherwise."""
    return _validate.instance_of("cell", cell, Cell, "an rnn_jax Cell (e.g. rj.lstm(64))")


def resolve(backend: str | Backend) -> str | Backend:
    """``"auto"`` or the `Backend` ``backend`` names; a ValueError for anything else."""
    if isinstance(backend, Backend):
        return backend
    if backend == "auto":
        return "auto"
    _validate.instance_of("backend", backend, str, "'auto', a backend name or an rnn_jax Backend")
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


def is_degenerate(problem: Problem) -> bool:
    """No steps or no sequences (sizes known): nothing for a kernel to do."""
    return 0 in problem.xs.shape[:2]  # (a symbolic size is never 0)


def solved(cell, params, problem: Problem, backend: str | Backend):
    """``(final_carry, ys)`` by ``backend`` (after its ``supports``); by the reference loop,
    exactly, where `is_degenerate`."""
    chosen = choose(cell, problem, backend)
    if is_degenerate(problem):
        return Reference().run(cell, params, problem)
    return chosen.run(cell, params, problem)


def checked(cell, operands: Operands, time_major: bool) -> Arguments:
    """The arrays checked and batch-flattened (`Arguments`), time first."""
    if time_major:
        return Arguments(cell, operands)
    xs = operands.xs
    axis = time_axis_of(cell, xs)
    batch_shape, steps = tuple(xs.shape[:axis]), xs.shape[axis]
    time_major_operands = operands._replace(
        xs=jnp.moveaxis(xs, axis, 0),
        mask=time_first("mask", operands.mask, batch_shape, steps),
        resets=time_first("resets", operands.resets, batch_shape, steps),
    )
    return Arguments(cell, time_major_operands)


def _programs(settings: Settings, tree, *, gradient: bool):
    """``(solve, reference)`` over the flat arguments of one scan (see `_scan_primitive.bind`)."""

    def run_with(flat, backend):
        operands = jax.tree.unflatten(tree, flat)
        problem = make_problem(
            settings.cell,
            operands,
            reverse=settings.reverse,
            unroll=settings.unroll,
            gradient=gradient,
        )
        carry, ys = solved(settings.cell, operands.params, problem, backend)
        return jax.tree.leaves((carry_passed_on(problem, operands.resets, carry), ys))

    def solve(*flat):
        return run_with(flat, settings.backend)

    def oracle(*flat):
        return run_with(flat, Reference())

    return solve, oracle


# The batch axis of each operand's leaves: none for the parameters (shared by all
# sequences), 1 for the [T, B, ...] inputs and masks, 0 for [B, ...] carries and lengths.
BATCH_AXES = Operands(params=None, xs=1, initial_state=0, length=0, mask=1, resets=1)


def traced_scan(settings: Settings, operands: Operands) -> tuple[Any, Any]:
    """``rj.scan`` of checked `Settings`, as traced by the caller (or the eager ``jit``)."""
    cell = settings.cell
    arguments = checked(cell, operands, settings.time_major)
    flat_ops = arguments.flat
    flat, tree = jax.tree.flatten(flat_ops)
    batch_in = tuple(
        axis for part, axis in zip(flat_ops, BATCH_AXES, strict=True) for _ in jax.tree.leaves(part)
    )
    x = jax.ShapeDtypeStruct(flat_ops.xs.shape[1:], flat_ops.xs.dtype)
    carry, y = jax.eval_shape(cell.step, operands.params, flat_ops.initial_state, x)
    batch_out = (0,) * len(jax.tree.leaves(carry)) + (1,) * len(jax.tree.leaves(y))

    def make(*, gradient: bool):
        return _programs(settings, tree, gradient=gradient)

    outs = _scan_primitive.bind(make, flat, batch_in, batch_out)
    final, ys = jax.tree.unflatten(jax.tree.structure((carry, y)), outs)
    if settings.output_dtype is not None:
        ys = jax.tree.map(lambda leaf: leaf.astype(settings.output_dtype), ys)
    final, ys = arguments.restore(final, ys)
    if not settings.time_major:
        ys = jax.tree.map(lambda y: jnp.moveaxis(y, 0, len(arguments.batch_shape)), ys)
    return final, ys


# ----------------------------------------------------------------------------- eager calls

# What a call sees where no transformation traces it (taken in JAX's evaluation context).
with jax.core.eval_context():
    _EVALUATING = jex.core.get_opaque_trace_state()


@functools.lru_cache(maxsize=128)
def compiled_scan(settings: Settings):
    """``traced_scan`` for ``settings`` under ``jax.jit``: one function per settings, which
    compiles once per argument shapes and dtypes. The least recently used are let go (with
    their compiled programs), so cells made afresh for every call cannot pile them up."""
    return jax.jit(functools.partial(traced_scan, settings))


def compiles_once(settings: Settings, operands: Operands) -> bool:
    """Whether this call can run `compiled_scan`: nothing traces it, its arrays are arrays
    (not Python numbers, whose meaning a cell may read), and its settings are hashable."""
    if jex.core.get_opaque_trace_state() != _EVALUATING:
        return False
    if not all(isinstance(leaf, jax.Array | np.ndarray) for leaf in jax.tree.leaves(operands)):
        return False
    try:
        hash(settings)
    except TypeError:
        return False
    return True


def check_length_range(settings: Settings, operands: Operands) -> None:
    """The check of ``length``'s values that a traced call cannot make (its values are not
    known there), for `compiled_scan`; shapes are checked when it traces."""
    xs, rank = operands.xs, settings.cell.feature_rank
    if operands.length is None or getattr(xs, "ndim", 0) < 1 + rank:
        return
    axis = 0 if settings.time_major else time_axis_of(settings.cell, xs)
    check_length_values(operands.length, xs.shape[axis])


# ----------------------------------------------------------------------------- entry points


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

    Called outside ``jit`` (and every other transformation), it compiles once
    per cell, backend, options and argument shapes and dtypes, and then runs
    what a jitted call runs.

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
    backend = resolve(backend)
    settings = Settings(
        cell=check_cell(cell),
        backend=backend,
        reverse=bool(reverse),
        unroll=_validate.unroll(unroll),
        output_dtype=check_output_dtype(output_dtype),
        time_major=bool(time_major),
        registered=registry.registered() if backend == "auto" else (),
    )
    operands = Operands(params, xs, initial_state, length, mask, resets)
    if compiles_once(settings, operands):
        check_length_range(settings, operands)
        return compiled_scan(settings)(operands)
    return traced_scan(settings, operands)


def newton_scan(
    cell: Cell,
    params: Any,
    xs: jax.Array,
    *,
    initial_state: Any = None,
    length: jax.Array | None = None,
    reverse: bool = False,
    resets: jax.Array | None = None,
    mask: jax.Array | None = None,
    tol: float | None = None,
    max_iters: int = 64,
    jacobian: str = "auto",
    method: str = "auto",
) -> tuple[Any, Any, NewtonInfo]:
    """``rj.scan`` by Newton iterations (DEER), also reporting how they went.

    Arguments as `rnn_jax.scan`, and ``tol``, ``max_iters``, ``jacobian`` and
    ``method`` as `rnn_jax.backends.Newton` takes them.

    Returns:
        ``(final_carry, ys, NewtonInfo(iterations, converged))``; when not
        converged, carry and outputs are the sequential scan's. Without steps
        or sequences, or where a size is symbolic: the reference loop's, after
        no iteration.

    Example:
        >>> cell = rj.gru(8)
        >>> params = cell.init(jax.random.key(0), 4)
        >>> carry, ys, info = rj.newton_scan(cell, params, jnp.ones((256, 2, 4)))
        >>> bool(info.converged), int(info.iterations) < 64
        (True, True)
    """
    backend = Newton(tol=tol, max_iters=max_iters, jacobian=jacobian, method=method)
    operands = Operands(params, xs, initial_state, length, mask, resets)
    arguments = checked(check_cell(cell), operands, time_major=True)
    problem = make_problem(cell, arguments.flat, reverse=bool(reverse), unroll=None)
    if is_degenerate(problem) or symbolic_sizes(problem):  # the reference loop's answer
        carry, ys = solved(cell, params, problem, backend)
        info = NewtonInfo(jnp.int32(0), jnp.bool_(True))
    else:
        carry, ys, info = backend.solve(cell, params, problem)
    carry = carry_passed_on(problem, arguments.flat.resets, carry)
    return *arguments.restore(carry, ys), info
