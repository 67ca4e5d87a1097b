"""Valid steps and restarts, shared by every backend: masked updates and the reference loop.

A `Problem` says which steps count (``valid [T, B]``) and where the carry
restarts (``starts [T, B]``, already in scan order). Every backend applies
them with these helpers:

- a step that does not count passes the carry through and outputs zeros
  (`keep_where`, `zero_where_not`);
- at a start, the carry entering the step is the restart state (`restarted`).

Scanning in reverse through a right-padded sequence therefore passes the
padding first and then runs from its last valid step down to 0, so outputs
stay aligned with their inputs and the final carry is the state after the
last valid step in either direction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from rnn_jax.backends.contract import Problem


def expand_to(mask: jax.Array, leaf: jax.Array) -> jax.Array:
    """``mask [*batch]`` with trailing unit axes so it broadcasts against ``leaf [*batch, ...]``."""
    return mask.reshape(mask.shape + (1,) * (leaf.ndim - mask.ndim))


def keep_where(mask: jax.Array, new: Any, old: Any) -> Any:
    """Per batch element: ``new`` where ``mask`` holds, else ``old`` (over pytrees)."""
    return jax.tree.map(lambda n, o: jnp.where(expand_to(mask, n), n, o), new, old)


def zero_where_not(mask: jax.Array, tree: Any) -> Any:
    """``tree`` where ``mask`` holds, exact zeros elsewhere (over pytrees)."""
    return jax.tree.map(lambda y: jnp.where(expand_to(mask, y), y, jnp.zeros_like(y)), tree)


def restarted(start: jax.Array | None, restart_state: Any, carry: Any) -> Any:
    """The carry entering a step: ``restart_state`` where ``start`` holds, else ``carry``.

    ``start [*lead, B]`` and ``carry`` leaves ``[*lead, B, ...]`` (one step, or
    several at once), ``restart_state`` leaves ``[B, ...]``.
    """
    if start is None:
        return carry

    def pick(restart, leaf):
        restart = jnp.broadcast_to(
            restart.reshape((1,) * (leaf.ndim - restart.ndim) + restart.shape), leaf.shape
        )
        return jnp.where(expand_to(start, leaf), restart, leaf)

    return jax.tree.map(pick, restart_state, carry)


def prefix_mask(length: jax.Array, steps: int) -> jax.Array:
    """``[T, *batch]`` bools, ``t < length``: the valid steps of right-padded sequences."""
    t = jnp.arange(steps).reshape((steps,) + (1,) * length.ndim)
    return t < length[None]


def valid_steps(length: jax.Array | None, mask: jax.Array | None, steps: int):
    """``[T, *batch]`` bools: the steps that count by ``length`` and ``mask`` (both where
    given), or None when every step counts."""
    valid = None if length is None else prefix_mask(length, steps)
    if mask is None:
        return valid
    return mask if valid is None else valid & mask


def scan_order_starts(resets: jax.Array, valid: jax.Array | None, reverse: bool) -> jax.Array:
    """Where the carry entering each step restarts, from ``resets [T, B]`` in time order.

    A reset at a valid step ``t`` starts a new segment there: forward, the
    carry entering ``t`` restarts; in reverse the segment ends there in scan
    order, so the carry entering ``t - 1`` restarts, and the segment holding
    the last valid step starts from the initial state. Resets on masked steps
    count for nothing.
    """
    counted = resets if valid is None else resets & valid
    if not reverse:
        return counted
    return jnp.concatenate([counted[1:], jnp.zeros_like(counted[:1])], axis=0)


def pad_steps(problem: Problem, multiple: int) -> Problem:
    """``problem`` with ``T`` padded up to a multiple of ``multiple`` by steps that count for
    no sequence (zero inputs, masked, no restart), so it splits into whole chunks.

    Example:
        >>> p = Problem(jnp.ones((5, 2, 3)), jnp.zeros((2, 4)), None, None, None, None, False, None)
        >>> padded = pad_steps(p, 4)
        >>> padded.xs.shape, padded.length.tolist()
        ((8, 2, 3), [5, 5])
    """
    steps, batch = problem.steps, problem.batch
    padding = -steps % multiple
    if not padding:
        return problem

    def pad(x, fill):
        return jnp.concatenate([x, jnp.full((padding, *x.shape[1:]), fill, x.dtype)])

    length = problem.length
    if problem.valid is None:
        length = jnp.full((batch,), steps, jnp.int32)
    valid = prefix_mask(length, steps) if problem.valid is None else problem.valid
    return problem._replace(
        xs=pad(problem.xs, 0),
        valid=pad(valid, False),
        length=length,
        starts=None if problem.starts is None else pad(problem.starts, False),
    )


def masked_coefficients(a, b, problem: Problem):
    """``(a, b)`` of ``h_t = a_t h_{t-1} + b_t`` with the problem's valid steps and restarts.

    ``a, b: [T, B, ...]``. A step that does not count becomes ``a = 1, b = 0``
    (the state passes through); then at a start the entering state is the
    restart state ``R``, so ``a_t h + b_t`` becomes ``0 h + (a_t R + b_t)``.
    """
    if problem.valid is not None:
        keep = expand_to(problem.valid, b)
        a = jnp.where(keep, a, jnp.ones_like(a))
        b = jnp.where(keep, b, jnp.zeros_like(b))
    if problem.starts is not None:
        start = expand_to(problem.starts, b)
        b = jnp.where(start, a * problem.restart_state[None] + b, b)
        a = jnp.where(start, jnp.zeros_like(a), a)
    return a, b


def scan_steps(
    step: Callable[[Any, Any], tuple[Any, Any]],
    carry: Any,
    inputs: Any,
    *,
    valid: jax.Array | None,
    starts: jax.Array | None,
    restart_state: Any,
    reverse: bool,
    unroll: int | bool,
) -> tuple[Any, Any]:
    """``lax.scan`` of ``step(carry, x)`` over the leading axis of ``inputs``, masked.

    ``valid [T, B]`` and ``starts [T, B]`` as in a `Problem`; the loop the
    reference backend runs, and the one other backends fall back to.
    """
    if valid is None and starts is None:
        return jax.lax.scan(step, carry, inputs, reverse=reverse, unroll=unroll)

    def masked(carry, indexed):
        x, valid_t, start_t = indexed
        carry = restarted(start_t, restart_state, carry)
        new_carry, y = step(carry, x)
        if valid_t is None:
            return new_carry, y
        return keep_where(valid_t, new_carry, carry), zero_where_not(valid_t, y)

    return jax.lax.scan(masked, carry, (inputs, valid, starts), reverse=reverse, unroll=unroll)


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
        source = jnp.where(steps < length[None], length[None] - 1 - steps, steps)
        return jnp.take_along_axis(x, expand_to(source, x), axis=0)

    return jax.tree.map(flip, xs)


def linear_outputs(linear, params: Any, hs: jax.Array, problem) -> tuple[jax.Array, Any]:
    """``(final_carry, ys)`` from a linear recurrence's solved states ``hs [T, B, ...]``.

    The final carry is the state after the last step in scan order (``hs[0]`` when
    ``problem.reverse``); ``ys = linear.output(params, hs, problem.xs)`` with zeros at the
    steps ``problem.valid`` leaves out. Shared by the backends that solve the recurrence
    in parallel (``parallel``, ``sharded``).
    """
    final = hs[0] if problem.reverse else hs[-1]
    ys = linear.output(params, hs, problem.xs)
    if problem.valid is not None:
        ys = zero_where_not(problem.valid, ys)
    return final, ys
