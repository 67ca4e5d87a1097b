"""Initialisers the cells use by default, each a hashable function ``(key, shape, dtype)``."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from rnn_jax.cells.bound import bound

Initializer = Callable[..., jax.Array]

glorot_uniform = jax.nn.initializers.glorot_uniform()
orthogonal = jax.nn.initializers.orthogonal()
zeros = jax.nn.initializers.zeros


def stacked_orthogonal(key: jax.Array, shape: tuple[int, int], dtype=jnp.float32) -> jax.Array:
    """Orthogonal init of an ``[H, G*H]`` recurrent kernel, one orthogonal block per gate.

    Each gate's ``[H, H]`` block is orthogonal on its own, so every gate starts
    norm-preserving (as Flax's and cuDNN-trained defaults do); ``[H, H]`` is
    the single-gate case.
    """
    rows, cols = shape
    # QR in float32 at least: LAPACK has no bf16/fp16 kernels, so a low-precision cell
    # (``rj.gru(64, dtype=jnp.bfloat16)``) could not even be initialised on a CPU.
    wide = jnp.promote_types(dtype, jnp.float32)
    if cols % rows:
        return orthogonal(key, shape, wide).astype(dtype)
    keys = jax.random.split(key, cols // rows)
    blocks = [orthogonal(k, (rows, rows), wide) for k in keys]
    return jnp.concatenate(blocks, axis=1).astype(dtype)


def _uniform_below(key: jax.Array, shape, dtype=jnp.float32, *, scale: float) -> jax.Array:
    return jax.random.uniform(key, shape, dtype) * jnp.array(scale, dtype)


def uniform(scale: float) -> Initializer:
    """Uniform in ``[0, scale)``, as ``jax.nn.initializers.uniform(scale)``, equal for equal scales.

    Example:
        >>> uniform(2.0) == uniform(2.0), float(uniform(2.0)(jax.random.key(0), (100,)).max()) < 2
        (True, True)
    """
    return bound(_uniform_below, scale=scale)
