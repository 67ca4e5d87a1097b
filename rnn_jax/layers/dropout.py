"""Dropout that respects time: one mask per sequence, drawn outside the loop.

Variational dropout (Gal & Ghahramani 2016) on inputs, outputs and the
recurrent state, and zoneout (Krueger et al. 2017). The recurrent pieces are
cell wrappers, so every backend runs them; their masks are drawn before the
loop and enter it as extra input features, never closed over.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from rnn_jax.cells.bound import bound
from rnn_jax.cells.cell import Cell, initial_carry, wrap_cell


def check_rate(name: str, rate: float) -> float:
    """``rate`` if it lies in ``[0, 1)``, else a ValueError naming it."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"{name} must lie in [0, 1); got {rate!r}")
    return float(rate)


def keep_mask(key: jax.Array, rate: float, shape: tuple[int, ...], dtype) -> jax.Array:
    """Inverted-dropout mask: ``1 / (1 - rate)`` with probability ``1 - rate``, else 0."""
    keep = jax.random.bernoulli(key, 1.0 - rate, shape)
    return keep.astype(dtype) / (1.0 - rate)


def sequence_dropout(key: jax.Array | None, xs: jax.Array, rate: float) -> jax.Array:
    """Drops the same features at every step: ``xs: [T, *batch, F]``, mask ``[*batch, F]``.

    Identity when ``key`` is None or ``rate`` is 0.
    """
    if key is None or rate == 0.0:
        return xs
    return xs * keep_mask(key, rate, xs.shape[1:], xs.dtype)[None]


def fed_back_state(carry: Any) -> Any:
    """The part of a carry that the next step reads as ``h_{t-1}``: the carry, or its ``h``."""
    if hasattr(carry, "shape"):
        return carry
    if hasattr(carry, "h"):
        return carry.h
    raise ValueError(
        "recurrent_dropout needs a carry that is an array or has a field 'h'; got "
        f"{type(carry).__name__}"
    )


def _with_fed_back_state(carry: Any, h: jax.Array) -> Any:
    return h if hasattr(carry, "shape") else carry._replace(h=h)


def unprojected(params, x):
    """``project`` of a cell without a split: the input as it is."""
    del params
    return x


def split_parts(cell: Cell):
    """``(project, recur)`` of any cell: identity projection when it has no split."""
    if cell.project is not None and cell.recur is not None:
        return cell.project, cell.recur
    return unprojected, cell.step


def wider_input_size(params, *, cell: Cell, width: Callable) -> int:
    """The cell's input size plus ``width(params)`` step features."""
    return cell.input_size(params) + width(params)


def project_before_features(params, x, *, cell: Cell, project: Callable):
    """``(project(x's first input_size features), the step features after them)``."""
    features = cell.input_size(params)
    return project(params, x[..., :features]), x[..., features:]


def recur_with_features(params, carry, xp_and_features, *, recur: Callable, recur_with: Callable):
    """``recur_with(recur, params, carry, xp, features)``."""
    xp, features = xp_and_features
    return recur_with(recur, params, carry, xp, features)


def with_step_features(cell: Cell, wrapper: str, options: dict, width, recur_with) -> Cell:
    """``cell`` reading ``width(params)`` more input features at each step (a mask drawn for
    every step before the loop), handed to ``recur_with(recur, params, carry, xp, features)``.

    Masks enter as inputs, never closed over, so every backend (and ``vmap``
    over sequences) sees them per sequence like any input. ``width`` and
    ``recur_with`` must be hashable, so that equal wrappers of equal cells are equal.
    """
    if cell.input_size is None:
        raise ValueError(f"{wrapper} needs a cell with input_size; the {cell.name} cell has none")
    project, recur = split_parts(cell)
    return wrap_cell(
        cell,
        wrapper,
        options,
        project=bound(project_before_features, cell=cell, project=project),
        recur=bound(recur_with_features, recur=recur, recur_with=recur_with),
        input_size=bound(wider_input_size, cell=cell, width=width),
    )


def fed_back_width(cell: Cell, params: Any) -> int:
    """The width of the state ``h`` a cell feeds back (its carry, or the carry's ``h``)."""
    carry = jax.eval_shape(lambda p: cell.initial_state(p, ()), params)
    return fed_back_state(carry).shape[-1]


def masked_recur(recur, params, carry, xp, mask):
    """``recur`` on the carry whose fed-back state is multiplied by ``mask``."""
    dropped = _with_fed_back_state(carry, fed_back_state(carry) * mask)
    return recur(params, dropped, xp)


def given_width(params: Any, *, width: int) -> int:
    """A step-feature width known when the wrapper is built."""
    del params
    return width


def recurrent_dropout(cell: Cell, *, width: int | None = None) -> Cell:
    """``cell`` with ``h_{t-1}`` multiplied by a mask as it enters each step.

    The mask, ``[*batch, H]`` per sequence, arrives as ``H`` extra input
    features at every step (the same at every step: variational). For cells
    whose state only feeds the recurrent matmul (simple, LSTM, IndRNN) this is
    Gal & Ghahramani's recurrent dropout exactly; for GRU and MGU, whose update
    also interpolates with ``h_{t-1}``, the interpolation sees the masked state too.
    ``width``: ``H``, where known (default: from ``cell.initial_state``).
    """
    width = bound(fed_back_width, cell) if width is None else bound(given_width, width=width)
    return with_step_features(cell, "recurrent_dropout", {}, width, masked_recur)


def recurrent_mask_shape(cell: Cell, params: Any, xs: jax.Array) -> tuple[int, ...]:
    """The shape ``[*batch, *lead, H]`` of the fed-back state a recurrent dropout mask covers,
    for ``xs [T, *batch, *features]``; a ValueError where it cannot ride along the input's
    features (a convolutional state of another spatial shape than its input)."""
    carry = jax.eval_shape(lambda p: initial_carry(cell, p, xs.shape[1:]), params)
    shape = tuple(fed_back_state(carry).shape)
    if shape[:-1] != tuple(xs.shape[1:-1]):
        raise ValueError(
            "recurrent_dropout draws its mask as extra input features, so the fed-back state "
            f"must have the input's leading axes {tuple(xs.shape[1:-1])}; the {cell.name} "
            f"cell's has shape {shape} (a convolution with padding='same' and stride 1 keeps "
            "them)"
        )
    return shape


def carry_widths(cell: Cell, params: Any) -> list[int]:
    """Feature width of each carry leaf for one sequence (each leaf is ``[*batch, width]``)."""
    shapes = jax.eval_shape(lambda p: cell.initial_state(p, ()), params)
    widths = []
    for leaf in jax.tree.leaves(shapes):
        if leaf.ndim != 1:
            raise ValueError(
                f"zoneout needs carry leaves of shape [*batch, features]; the {cell.name} "
                f"cell has a leaf of per-sequence shape {leaf.shape}"
            )
        widths.append(leaf.shape[0])
    return widths


def carry_width(cell: Cell, params: Any) -> int:
    """The summed width of the carry's leaves: a zoneout keep mask's features."""
    return sum(carry_widths(cell, params))


def blend(old, new, keep, rate: float):
    """Each carry unit ``keep * old + (1 - keep) * new``; ``keep`` ``[*batch, sum(widths)]``
    (0/1 per unit, stochastic) or None for the expectation ``rate``."""
    old_leaves, tree = jax.tree.flatten(old)
    new_leaves = jax.tree.leaves(new)
    blended, start = [], 0
    for o, n in zip(old_leaves, new_leaves, strict=True):
        width = o.shape[-1]
        k = rate if keep is None else keep[..., start : start + width]
        blended.append(k * o + (1.0 - k) * n)
        start += width
    return jax.tree.unflatten(tree, blended)


def zoned_recur(recur, params, carry, xp, keep, *, rate: float):
    """``recur`` with zoneout: the new carry blended with the old; a cell whose output is its
    fed-back state outputs the blended one."""
    new, y = recur(params, carry, xp)
    blended = blend(carry, new, keep, rate)
    # Identity at trace time: the cell returned the very array it feeds back.
    return blended, fed_back_state(blended) if y is fed_back_state(new) else y


def expected_zoned_recur(params, carry, xp, *, recur, rate: float):
    """`zoned_recur` without a key: the expected blend."""
    return zoned_recur(recur, params, carry, xp, None, rate=rate)


def zoneout(cell: Cell, rate: float, *, stochastic: bool) -> Cell:
    """``cell`` whose carry units keep their previous value with probability ``rate``.

    Stochastic: the input gains ``sum(carry_widths)`` extra features, a 0/1
    keep mask per step and unit (drawn for all steps before the loop by the
    caller); deterministic (evaluation): each unit moves to
    ``rate * old + (1 - rate) * new``, the expectation, as in Krueger et al.

    A cell whose output is its fed-back state (``y`` is ``h``, as in every
    built-in cell) outputs the zoned-out ``h``, as in the paper, so outputs
    and the final carry agree; other cells' outputs pass through unchanged.
    """
    options = {"rate": rate, "stochastic": stochastic}
    if stochastic:
        width = bound(carry_width, cell)
        return with_step_features(cell, "zoneout", options, width, bound(zoned_recur, rate=rate))
    project, recur = split_parts(cell)
    return wrap_cell(
        cell,
        "zoneout",
        options,
        project=project,
        recur=bound(expected_zoned_recur, recur=recur, rate=rate),
        input_size=cell.input_size,
    )
