"""Activations by name: the names cells take for their nonlinearities."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


def identity(x: jax.Array) -> jax.Array:
    """``x`` itself: the ``"identity"`` (or ``"linear"``) activation."""
    return x


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "sigmoid": jax.nn.sigmoid,
    "hard_sigmoid": jax.nn.hard_sigmoid,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    "identity": identity,
    "linear": identity,
}


def resolve_activation(name: str, value: str | Callable[[jax.Array], jax.Array]):
    """Maps an activation given by name (``"tanh"``, ``"relu"``, ...) or callable to a callable.

    ``name`` is the argument's, for the error: a value that is neither a
    callable nor a known name raises a ValueError naming it and the names.

    Example:
        >>> resolve_activation("activation", "tanh") is jnp.tanh
        True
    """
    if callable(value):
        return value
    if value not in ACTIVATIONS:
        raise ValueError(
            f"{name} must be a callable or one of {sorted(ACTIVATIONS)}; got {value!r}"
        )
    return ACTIVATIONS[value]
