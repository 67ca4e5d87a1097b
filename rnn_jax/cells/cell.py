"""The `Cell` protocol: a recurrent cell as a NamedTuple of pure functions, and its builders.

A factory (``rj.lstm(128)``) binds its hyperparameters to module-level
functions (`rnn_jax.cells.bound.bound`) and returns a `Cell`. Parameters and
carries are pytrees of arrays, so they pass through ``jit``, ``vmap``,
``grad``, optax and checkpoints unchanged. Two cells built with equal options
are equal and hash alike, so a cell is a static argument of ``jax.jit``.

Required fields::

    params = cell.init(key, input_size)
    carry = cell.initial_state(params, batch_shape=())
    carry, y = cell.step(params, carry, x)          # x: [*batch, *features]

``features`` is one axis (``[input_size]``) unless the cell declares a
``feature_rank`` above 1 (a convolutional cell reads ``[*spatial, channels]``).

Optional fields, which backends and converters ask for and never assume:

- ``project(params, x) -> xp`` and ``recur(params, carry, xp) -> (carry, y)``:
  the carry-free part of ``step`` (the input projection, one large matmul over
  ``[T, *batch, F]`` at once) and the recurrent part, with
  ``step(params, carry, x) == recur(params, carry, project(params, x))``.
- ``input_size(params) -> int``: the feature size ``params`` expect (the last
  feature axis), so the driver can reject a wrong input at trace time.
- ``gates``, ``linear``, ``memory``: the typed forms of the step in
  `rnn_jax.cells.capabilities` (`Gates`, `LinearRecurrence`, `MatrixMemory`).
- ``cudnn_layout``, ``keras_layout``: the weight layouts of other libraries
  whose cells this one computes exactly (`rnn_jax.cells.layouts`).
- ``state_for_input(params, step_shape) -> carry``: the initial carry for
  inputs whose one step has shape ``step_shape = [*batch, *features]``, for a
  cell whose carry's shape follows its input's feature axes (a convolutional
  cell that learns its images' size from its input); `initial_carry` serves
  every cell alike.

``name`` and ``config`` describe the cell (its factory and hyperparameters);
they make summaries, exports and checkpoints self-describing, and no backend
decides anything by them. A wrapper that changes what a step computes
(dropout, zoneout) builds its cell with `wrap_cell`, which keeps only the
capabilities the wrapper declares again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax

from rnn_jax.cells.bound import bound
from rnn_jax.cells.capabilities import (
    Carry,
    Gates,
    LinearRecurrence,
    MatrixMemory,
    Params,
    PyTree,
)
from rnn_jax.cells.config import Config
from rnn_jax.cells.layouts import CudnnLayout, KerasLayout


class Cell(NamedTuple):
    """A recurrent cell: pure functions over parameter and carry pytrees.

    Example:
        >>> cell = rj.gru(16)
        >>> params = cell.init(jax.random.key(0), 8)
        >>> carry = cell.initial_state(params, batch_shape=(4,))
        >>> carry, y = cell.step(params, carry, jnp.ones((4, 8)))
        >>> y.shape, cell == rj.gru(16)
        ((4, 16), True)
    """

    init: Callable[[jax.Array, int], Params]
    initial_state: Callable[..., Carry]
    step: Callable[[Params, Carry, jax.Array], tuple[Carry, jax.Array]]
    input_size: Callable[[Params], int] | None = None
    project: Callable[[Params, jax.Array], PyTree] | None = None
    recur: Callable[[Params, Carry, PyTree], tuple[Carry, jax.Array]] | None = None
    gates: Gates | None = None
    linear: LinearRecurrence | None = None
    name: str = "cell"
    config: Config = Config()
    cudnn_layout: CudnnLayout | None = None
    feature_rank: int = 1
    memory: MatrixMemory | None = None
    keras_layout: KerasLayout | None = None
    state_for_input: Callable[[Params, tuple[int, ...]], Carry] | None = None


def initial_carry(cell: Cell, params: Params, step_shape: tuple[int, ...]) -> Carry:
    """``cell``'s initial carry for inputs whose one step has shape ``[*batch, *features]``.

    ``cell.state_for_input`` where the cell declares it (its carry's shape
    follows its input's), else ``cell.initial_state`` for the batch shape.

    Example:
        >>> cell = rj.conv_lstm(4, (3, 3), padding="valid")
        >>> params = cell.init(jax.random.key(0), 2)
        >>> initial_carry(cell, params, (8, 10, 10, 2)).h.shape
        (8, 8, 8, 4)
    """
    step_shape = tuple(step_shape)
    if cell.state_for_input is not None:
        return cell.state_for_input(params, step_shape)
    return cell.initial_state(params, step_shape[: len(step_shape) - cell.feature_rank])


def described(cell: Cell) -> str:
    """``cell`` in words for an error: its name and configuration.

    Example:
        >>> described(rj.simple(4))
        "the simple cell (hidden_size=4, activation='tanh')"
    """
    settings = ", ".join(f"{key}={value!r}" for key, value in cell.config.items())
    return f"the {cell.name} cell ({settings})"


def composed_recur(gates: Gates, params: Params, carry: Carry, xp: PyTree):
    """``recur`` of a cell with `Gates`: the recurrent matmul, then ``combine``."""
    return gates.combine(params, carry, xp, gates.fed_back(carry) @ gates.kernel(params))


def checked_step(parts: Cell, params: Params, carry: Carry, x: jax.Array):
    """``step`` of a split cell: ``recur`` after ``project``, its arguments checked first.

    ``parts`` holds the cell's functions (all but ``step``)."""
    check_step_arguments(parts, params, carry, x)
    return parts.recur(params, carry, parts.project(params, x))


def split_cell(
    *,
    init: Callable[[jax.Array, int], Params],
    initial_state: Callable[..., Carry],
    project: Callable[[Params, jax.Array], PyTree],
    recur: Callable[[Params, Carry, PyTree], tuple[Carry, jax.Array]] | None = None,
    gates: Gates | None = None,
    input_size: Callable[[Params], int] | None,
    name: str,
    config: Mapping[str, Any],
    feature_rank: int = 1,
    **capabilities: Any,
) -> Cell:
    """Builds a `Cell` whose ``step`` is ``recur`` after ``project``.

    Give ``recur``, or ``gates`` (then ``recur`` is composed from it). One
    composition serves every built-in cell, so the fast paths and the plain
    step can never disagree. ``step`` checks its arguments' shapes at trace
    time (a carry for another batch shape or width is refused in words, never
    broadcast); ``capabilities`` are the other optional fields (``linear``,
    ``cudnn_layout``, ``keras_layout``, ``memory``, ``state_for_input``).
    Given equal functions and options, the cells built are equal.
    """
    if (recur is None) == (gates is None):
        raise ValueError("split_cell needs exactly one of recur and gates")
    if gates is not None:
        recur = bound(composed_recur, gates)
    parts = Cell(
        init=init,
        initial_state=initial_state,
        step=None,
        input_size=input_size,
        project=project,
        recur=recur,
        gates=gates,
        name=name,
        config=Config(config),
        feature_rank=feature_rank,
        **capabilities,
    )
    return parts._replace(step=bound(checked_step, parts))


def wrap_cell(
    cell: Cell,
    wrapper: str,
    options: Mapping[str, Any],
    *,
    project: Callable[[Params, jax.Array], PyTree],
    recur: Callable[[Params, Carry, PyTree], tuple[Carry, jax.Array]] | None = None,
    gates: Gates | None = None,
    input_size: Callable[[Params], int] | None,
) -> Cell:
    """The cell a wrapper makes of ``cell``: same parameters and carry, another step.

    Every capability the wrapper does not declare again (``gates`` unless
    given, ``linear``, ``cudnn_layout``, ``keras_layout``, ``memory``) is
    dropped, since the wrapped step no longer computes what it described; a
    backend that needs one then refuses the wrapped cell in words instead of
    running the unwrapped one. The name says what was wrapped
    (``"recurrent_dropout(lstm)"``) and the config holds the wrapped cell and
    the wrapper's options.

    Example:
        >>> plain = rj.lstm(8)
        >>> wrapped = wrap_cell(plain, "identity", {}, project=plain.project,
        ...                     recur=plain.recur, input_size=plain.input_size)
        >>> wrapped.name, wrapped.cudnn_layout is None, plain.cudnn_layout is None
        ('identity(lstm)', True, False)
    """
    return split_cell(
        init=cell.init,
        initial_state=cell.initial_state,
        project=project,
        recur=recur,
        gates=gates,
        input_size=input_size,
        name=f"{wrapper}({cell.name})",
        config=Config(options, cell=cell),
        feature_rank=cell.feature_rank,
        state_for_input=cell.state_for_input,
    )


def check_step_arguments(cell: Cell, params: Params, carry: Carry, x: jax.Array) -> None:
    """Raises a ValueError unless ``carry`` is the cell's carry for the batch shape of ``x``.

    Shapes are static, so the check costs nothing when the step runs.
    """
    shape, rank, name = tuple(getattr(x, "shape", ())), cell.feature_rank, cell.name
    if len(shape) < rank:
        raise ValueError(
            f"x must have shape [*batch, *features] with {rank} feature axes for the "
            f"{name} cell; got shape {shape}"
        )
    batch = shape[: len(shape) - rank]
    if cell.input_size is not None and shape[-1] != cell.input_size(params):
        raise ValueError(
            f"x must have {cell.input_size(params)} features (the {name} cell's input size) in "
            f"its last axis; got shape {shape}"
        )
    expected = jax.eval_shape(lambda p: initial_carry(cell, p, shape), params)
    if jax.tree.structure(carry) != jax.tree.structure(expected):
        raise ValueError(
            f"carry must have the structure of the {name} cell's carry "
            f"{jax.tree.structure(expected)}; got {jax.tree.structure(carry)}"
        )
    paths = jax.tree_util.tree_flatten_with_path(expected)[0]
    for (path, want), got in zip(paths, jax.tree.leaves(carry), strict=True):
        got_shape = tuple(getattr(got, "shape", ()))
        if got_shape != tuple(want.shape):
            raise ValueError(
                f"carry{jax.tree_util.keystr(path)} must have shape {tuple(want.shape)} for "
                f"inputs of batch shape {batch} (the {name} cell never broadcasts); got {got_shape}"
            )
