"""Truncated backpropagation through time: the state carried from chunk to chunk.

A long stream is read in chunks; the state at the end of one chunk starts the
next (`carry_over` cuts its gradient), and it is zeroed where a stream starts
again (`reset`). The fit loop threads it through every step and stores it in
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


def reset(carry: Any, where: jax.Array | None) -> Any:
    """``carry`` with every leaf zeroed when ``where`` (a scalar bool) is True."""
    if where is None:
        return carry
    return jax.tree.map(lambda c: jnp.where(where, jnp.zeros_like(c), c), carry)


def carry_over(state: Any) -> Any:
    """The final state of a chunk as the next chunk's initial state, without its gradient."""
    return jax.lax.stop_gradient(state)
