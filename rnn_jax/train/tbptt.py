"""Truncated backpropagation through time: the state carried from chunk to chunk.

A long stream is read in chunks; the state at the end of one chunk starts the
next (`carry_over` cuts its gradient). Where a stream starts again, the chunk's
scan restarts at its first step (`restart_at_first_step`: ``rj.scan``'s
``resets``, so the state is the cell's own initial state, as inside a packed
batch). The fit loop threads the state through every step and stores it in
checkpoints, so a resumed run continues mid-stream exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp


def zero_carry(apply: Callable[..., tuple[Any, Any]], params: Any, inputs: Any) -> Any:
    """Zeros shaped like the state ``apply(params, inputs)`` returns (shape-only, no compute)."""
    state = jax.eval_shape(lambda p, x: apply(p, x)[0], params, inputs)
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), state)


def restart_at_first_step(inputs: Any, where: jax.Array | None) -> dict[str, jax.Array]:
    """``{"resets": [T, B]}`` True at step 0 of every sequence when ``where`` (a scalar
    bool) is, for time-major ``inputs`` (leaves ``[T, B, ...]``); nothing for None."""
    if where is None:
        return {}
    steps, sequences = jax.tree.leaves(inputs)[0].shape[:2]
    first = jnp.arange(steps)[:, None] == 0
    return {"resets": jnp.broadcast_to(first & where, (steps, sequences))}


def carry_over(state: Any) -> Any:
    """The final state of a chunk as the next chunk's initial state, without its gradient."""
    return jax.lax.stop_gradient(state)
