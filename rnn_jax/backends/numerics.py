"""Matmuls shared by the kernels: low-precision weights, and products over all rows at once."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def is_low_precision(dtype) -> bool:
    """True for floating dtypes narrower than float32 (bf16, fp16, fp8)."""
    return jnp.issubdtype(dtype, jnp.floating) and jnp.finfo(dtype).bits < 32


def matmul(a: jax.Array, b: jax.Array, out_dtype) -> jax.Array:
    """``a @ b``; low-precision weights ``b`` multiply in their precision, accumulating in
    ``out_dtype`` (float32: the carry's), as cuDNN and FlashRNN do; others as given.

    Example:
        >>> matmul(jnp.ones((2, 3)), jnp.ones((3, 4), jnp.bfloat16), jnp.float32).dtype
        dtype('float32')
    """
    if is_low_precision(b.dtype):
        return jnp.matmul(a.astype(b.dtype), b, preferred_element_type=out_dtype)
    return jnp.matmul(a, b)


def rows_product(a: jax.Array, b: jax.Array, dtype) -> jax.Array:
    """``a^T @ b`` over all leading axes (``[..., R]``, ``[..., G]`` to ``[R, G]``) in ``dtype``.

    One matmul over every row (step and batch element): how weight gradients
    are formed from all steps at once. Low-precision ``dtype`` multiplies in
    that precision with float32 accumulation.

    Example:
        >>> rows_product(jnp.ones((5, 2, 3)), jnp.ones((5, 2, 4)), jnp.float32).shape
        (3, 4)
    """
    a = a.reshape(-1, a.shape[-1])
    b = b.reshape(-1, b.shape[-1])
    if is_low_precision(dtype):
        a, b = a.astype(dtype), b.astype(dtype)
    product = jax.lax.dot_general(
        a, b, (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32
    )
    return product.astype(dtype)
