"""Right-padding semantics shared by the backends: masked steps and valid-prefix flips."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp


def expand_to(mask: jax.Array, leaf: jax.Array) -> jax.Array:
    """``mask [*batch]`` with trailing unit axes so it broadcasts against ``leaf [*batch, ...]``."""
    return mask.reshape(mask.shape + (1,) * (leaf.ndim - mask.ndim))


def keep_where(mask: jax.Array, new: Any, old: Any) -> Any:
    """Per batch element: ``new`` where ``mask`` holds, else ``old`` (over pytrees)."""
    return jax.tree.map(lambda n, o: jnp.where(expand_to(mask, n), n, o), new, old)


def zero_where_not(mask: jax.Array, tree: Any) -> Any:
    """``tree`` where ``mask`` holds, exact zeros elsewhere (over pytrees)."""
    return jax.tree.map(lambda y: jnp.where(expand_to(mask, y), y, jnp.zeros_like(y)), tree)


def scan_steps(
    step: Callable[[Any, Any], tuple[Any, Any]],
    carry: Any,
    inputs: Any,
    *,
    length: jax.Array | None,
    reverse: bool,
    unroll: int | bool,
) -> tuple[Any, Any]:
    """``lax.scan`` of ``step(carry, x)`` over the leading axis of ``inputs``, with lengths.

    Step ``t`` of a sequence whose length is ``L`` counts only when ``t < L``:
    otherwise the carry passes through and the output is zero. Scanning in
    reverse therefore skips the padding first and then runs from ``L - 1``
    down to 0, so outputs stay aligned with their inputs and the final carry
    is the state after the last valid step in either direction.
    """
    if length is None:
        return jax.lax.scan(step, carry, inputs, reverse=reverse, unroll=unroll)

    def masked(carry, indexed):
        t, x = indexed
        new_carry, y = step(carry, x)
        valid = t < length
        return keep_where(valid, new_carry, carry), zero_where_not(valid, y)

    steps = jnp.arange(jax.tree.leaves(inputs)[0].shape[0])
    return jax.lax.scan(masked, carry, (steps, inputs), reverse=reverse, unroll=unroll)


def flip_valid(xs: Any, length: jax.Array | None) -> Any:
    """Reverses each sequence's valid prefix along axis 0, leaving the padding in place.

    ``xs: [T, *batch, ...]`` (a pytree of such), ``length: [*batch]`` or None
    (then the whole axis flips). The map is its own inverse.

    Example:
        >>> flip_valid(jnp.arange(4.0)[:, None], jnp.array([3]))[:, 0]
        Array([2., 1., 0., 3.], dtype=float32)
    """
    if length is None:
        return jax.tree.map(lambda x: jnp.flip(x, axis=0), xs)

    def flip(x):
        steps = jnp.arange(x.shape[0]).reshape((-1,) + (1,) * length.ndim)
        source = jnp.where(steps < length, length - 1 - steps, steps)
        return jnp.take_along_axis(x, expand_to(source, x), axis=0)

    return jax.tree.map(flip, xs)
