"""Trace-time checks of the driver's arguments, with errors in words."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def check_xs(cell, params, xs: Any) -> tuple[int, ...]:
    """Checks ``xs: [T, *batch, F]`` against the cell; returns the batch shape."""
    if not hasattr(xs, "shape") or not hasattr(xs, "dtype"):
        raise TypeError(
            f"xs must be an array of shape [T, *batch, features]; got {type(xs).__name__}"
        )
    if xs.ndim < 2:
        raise ValueError(
            f"xs must have shape [T, *batch, features] (rank >= 2); got shape {tuple(xs.shape)}"
        )
    if not jnp.issubdtype(xs.dtype, jnp.floating):
        raise TypeError(f"xs must have a floating dtype; got {xs.dtype}")
    if cell.input_size is not None:
        expected = cell.input_size(params)
        if xs.shape[-1] != expected:
            raise ValueError(
                f"xs must have {expected} features (the {cell.name} cell's input size) in its "
                f"last axis; got shape {tuple(xs.shape)}"
            )
    return tuple(xs.shape[1:-1])


def check_length(length: Any, batch_shape: tuple[int, ...], steps: int) -> jax.Array | None:
    """Checks ``length`` (an int array of the batch shape, values in ``[0, T]`` when concrete)."""
    if length is None:
        return None
    length = jnp.asarray(length)
    if not jnp.issubdtype(length.dtype, jnp.integer):
        raise TypeError(f"length must be an integer array; got dtype {length.dtype}")
    if tuple(length.shape) != batch_shape:
        raise ValueError(
            f"length must have the batch shape {batch_shape} of xs; got shape {tuple(length.shape)}"
        )
    try:
        concrete = np.asarray(length)
    except jax.errors.TracerArrayConversionError:
        return length
    if concrete.size and (concrete.min() < 0 or concrete.max() > steps):
        raise ValueError(
            f"length must lie in [0, {steps}] (T = xs.shape[0]); got values from "
            f"{concrete.min()} to {concrete.max()}"
        )
    return length


def check_initial_state(cell, params, initial_state: Any, batch_shape: tuple[int, ...]) -> Any:
    """Returns ``initial_state``, or the cell's zeros when None, after checking its structure."""
    if initial_state is None:
        return cell.initial_state(params, batch_shape)
    expected = jax.eval_shape(lambda p: cell.initial_state(p, batch_shape), params)
    expected_def = jax.tree.structure(expected)
    got_def = jax.tree.structure(initial_state)
    if expected_def != got_def:
        raise ValueError(
            f"initial_state must have the structure of the {cell.name} cell's carry "
            f"{expected_def}; got {got_def}"
        )
    for path, want, got in zip(
        jax.tree_util.tree_flatten_with_path(expected)[0],
        jax.tree.leaves(expected),
        jax.tree.leaves(initial_state),
        strict=True,
    ):
        where = jax.tree_util.keystr(path[0])
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
