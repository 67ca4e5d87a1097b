"""The ``checkpointed`` backend: backpropagation through time in O(√T) memory.

The sequence is cut into ``ceil(T / S)`` segments of ``S`` steps (default
``S = ceil(√T)``). An outer ``lax.scan`` runs the segments; each segment (its
input projection and its ``sequential`` scan, custom backward pass included)
is wrapped in ``jax.checkpoint``, so the forward pass keeps only the carry at
each segment boundary, and the backward pass recomputes one segment at a time
before running its reverse sweep. Memory for a gradient: ``T / S`` carries
plus one segment's residuals, instead of every step's; time: one more forward
pass. Values and gradients equal the reference's.

Lengths and ``reverse`` follow the reference (`masking.scan_steps`): each
segment gets its sequences' lengths relative to its first step, so a step
``t`` of a sequence of length ``L`` counts exactly when ``t < L``. When ``S``
does not divide ``T`` the input is padded to whole segments with steps that
count for no sequence.

Example:
    >>> carry, ys = rj.scan(cell, params, xs, backend="checkpointed")
    >>> carry, ys = rj.scan(cell, params, xs, backend=checkpointed(segment=64))
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp

from rnn_jax.backends import sequential
from rnn_jax.backends.registry import Backend, register_backend


def segment_size(steps: int) -> int:
    """The default segment: ``ceil(√T)`` steps (at least 1)."""
    return math.isqrt(steps - 1) + 1 if steps > 1 else 1


def run(cell, params, xs, *, initial_state, length, reverse, unroll, segment=None):
    steps = xs.shape[0]
    if steps == 0:
        return sequential.run(
            cell,
            params,
            xs,
            initial_state=initial_state,
            length=length,
            reverse=reverse,
            unroll=unroll,
        )
    size = segment_size(steps) if segment is None else min(segment, steps)
    count = -(-steps // size)
    padding = count * size - steps
    batch_shape = xs.shape[1:-1]
    if padding:
        xs = jnp.concatenate([xs, jnp.zeros((padding, *xs.shape[1:]), xs.dtype)])
        if length is None:
            length = jnp.full(batch_shape, steps, jnp.int32)
    segments = xs.reshape(count, size, *xs.shape[1:])
    starts = jnp.arange(count, dtype=jnp.int32) * size

    @jax.checkpoint
    def run_segment(carry, inputs):
        xs_segment, start = inputs
        local = None if length is None else jnp.clip(length - start, 0, size)
        return sequential.run(
            cell,
            params,
            xs_segment,
            initial_state=carry,
            length=local,
            reverse=reverse,
            unroll=unroll,
        )

    final, ys = jax.lax.scan(run_segment, initial_state, (segments, starts), reverse=reverse)
    ys = jax.tree.map(lambda y: y.reshape(count * size, *y.shape[2:])[:steps], ys)
    return final, ys


def checkpointed(*, segment: int | None = None) -> Backend:
    """The ``checkpointed`` backend with segments of ``segment`` steps (default ``ceil(√T)``)."""
    if segment is not None and (
        isinstance(segment, bool) or not isinstance(segment, int) or segment <= 0
    ):
        raise ValueError(f"segment must be a positive int or None; got {segment!r}")
    return Backend("checkpointed", partial(run, segment=segment))


register_backend(checkpointed())
