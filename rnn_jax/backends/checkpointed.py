"""The ``checkpointed`` backend: backpropagation through time in O(√T) memory.

The sequence is cut into ``ceil(T / S)`` segments of ``S`` steps (default
``S = ceil(√T)``). An outer ``lax.scan`` runs the segments; each segment (its
input projection and its ``sequential`` scan, custom backward pass included)
is wrapped in ``jax.checkpoint``, so the forward pass keeps only the carry at
each segment boundary, and the backward pass recomputes one segment at a time
before running its reverse sweep. Memory for a gradient: ``T / S`` carries
plus one segment's residuals, instead of every step's; time: one more forward
pass. Values and gradients equal the reference's.

A segment is a `Problem` of its own: its slice of the inputs, valid steps and
restarts, entered with the carry the segments before it left. When ``S``
does not divide ``T`` the input is padded to whole segments with steps that
count for no sequence.

Example:
    >>> cell = rj.lstm(8)
    >>> params = cell.init(jax.random.key(0), 4)
    >>> xs = jnp.ones((100, 2, 4))
    >>> carry, ys = rj.scan(cell, params, xs, backend=rj.backends.Checkpointed(segment=16))
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from rnn_jax import _validate
from rnn_jax.backends.contract import Backend, Problem
from rnn_jax.backends.masking import pad_steps
from rnn_jax.backends.sequential import Sequential


def segment_size(steps: int) -> int:
    """The default segment: ``ceil(√T)`` steps (at least 1)."""
    return math.isqrt(steps - 1) + 1 if steps > 1 else 1


def checkpointed_scan(cell, params, problem: Problem, segment: int | None = None):
    """``(final_carry, ys)`` by `Sequential` over segments of ``segment`` steps (None:
    ``ceil(√T)``), each rematerialised in the backward pass."""
    steps = problem.steps
    size = segment_size(steps) if segment is None else min(segment, steps)
    padded = pad_steps(problem, size)

    def split(x):
        return None if x is None else x.reshape(-1, size, *x.shape[1:])

    @jax.checkpoint
    def run_segment(carry, inputs):
        xs, valid, starts, first = inputs
        # A prefix of valid steps stays a prefix in every segment.
        length = None if padded.length is None else jnp.clip(padded.length - first, 0, size)
        part = padded._replace(
            xs=xs, initial_state=carry, valid=valid, starts=starts, length=length
        )
        return Sequential().run(cell, params, part)

    firsts = jnp.arange(padded.steps // size, dtype=jnp.int32) * size
    segments = (split(padded.xs), split(padded.valid), split(padded.starts), firsts)
    final, ys = jax.lax.scan(run_segment, padded.initial_state, segments, reverse=padded.reverse)
    ys = jax.tree.map(lambda y: y.reshape(-1, *y.shape[2:])[:steps], ys)
    return final, ys


@dataclass(frozen=True)
class Checkpointed(Backend):
    """Backpropagation through time in O(√T) memory (see the module docstring).

    Args:
        segment: steps per rematerialised segment; None: ``ceil(√T)``.
    """

    name = "checkpointed"
    segment: int | None = None

    def __post_init__(self):
        _validate.optional_positive_int("segment", self.segment)

    def run(self, cell, params, problem: Problem):
        return checkpointed_scan(cell, params, problem, self.segment)
