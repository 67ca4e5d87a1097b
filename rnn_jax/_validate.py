"""Checks of user-given values, one rule each, with errors that name the argument.

Every check returns the value it accepts (so ``x = positive_int("x", x)``
reads as a declaration) or raises an error saying which argument was wrong,
what was expected and what came: a ``TypeError`` for a value of the wrong
kind, a ``ValueError`` for one of the right kind out of range. Booleans are
not integers here, although Python says they are.

Example:
    >>> positive_int("chunk", 8)
    8
    >>> positive_int("chunk", 0)
    Traceback (most recent call last):
    ...
    ValueError: chunk must be a positive int; got 0
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import jax.numpy as jnp
import numpy as np


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def int_at_least(name: str, value: Any, minimum: int, what: str) -> int:
    """``value`` as an int if it is one and ``>= minimum``; ``what`` names the range."""
    if not _is_int(value):
        raise TypeError(f"{name} must be {what}; got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be {what}; got {value!r}")
    return int(value)


def positive_int(name: str, value: Any) -> int:
    """``value`` if it is an int ``>= 1``."""
    return int_at_least(name, value, 1, "a positive int")


def non_negative_int(name: str, value: Any) -> int:
    """``value`` if it is an int ``>= 0``."""
    return int_at_least(name, value, 0, "a non-negative int")


def optional_positive_int(name: str, value: Any) -> int | None:
    """``value`` if it is None or an int ``>= 1``."""
    return None if value is None else int_at_least(name, value, 1, "a positive int or None")


def optional_non_negative_int(name: str, value: Any) -> int | None:
    """``value`` if it is None or an int ``>= 0``."""
    return None if value is None else int_at_least(name, value, 0, "a non-negative int or None")


def optional_positive_number(name: str, value: Any) -> float | None:
    """``value`` if it is None or a real number ``> 0`` (an int or a float, not a bool).

    Example:
        >>> optional_positive_number("tol", 1e-6)
        1e-06
    """
    if value is None:
        return None
    if not isinstance(value, int | float | np.integer | np.floating) or isinstance(
        value, bool | np.bool_
    ):
        raise TypeError(f"{name} must be a positive number or None; got {value!r}")
    if not value > 0:
        raise ValueError(f"{name} must be a positive number or None; got {value!r}")
    return value


def one_of(name: str, value: Any, choices: Collection[Any]) -> Any:
    """``value`` if it is one of ``choices``.

    Example:
        >>> one_of("residuals", "store", ("store", "recompute"))
        'store'
    """
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}; got {value!r}")
    return value


def optional_bool(name: str, value: Any) -> bool | None:
    """``value`` if it is None or a bool."""
    if value is not None and not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool or None; got {value!r}")
    return value


def instance_of(name: str, value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    """``value`` if it is an instance of ``kind``; ``what`` names what was expected.

    Example:
        >>> instance_of("mesh", None, type(None), "a jax.sharding.Mesh or None")
    """
    if not isinstance(value, kind):
        raise TypeError(f"{name} must be {what}; got {type(value).__name__}")
    return value


def dtype_of_kind(name: str, dtype: Any, kind: Any, what: str) -> None:
    """Checks that ``dtype`` is of ``kind`` (``jnp.floating``, ``jnp.integer``, ``jnp.bool_``,
    as ``jnp.issubdtype`` reads it: bfloat16 is floating); ``what`` names the array expected.

    Example:
        >>> dtype_of_kind("length", jnp.float32, jnp.integer, "an integer array")
        Traceback (most recent call last):
        ...
        TypeError: length must be an integer array; got dtype float32
    """
    if not jnp.issubdtype(dtype, kind):
        raise TypeError(f"{name} must be {what}; got dtype {jnp.dtype(dtype)}")


def shape_is(name: str, shape: tuple[int, ...], expected: tuple[int, ...], what: str) -> None:
    """Checks that ``shape`` is ``expected``; ``what`` says which shape that is.

    Example:
        >>> shape_is("mask", (4, 2), (5, 2), "shape [T, *batch] = (5, 2) (from xs)")
        Traceback (most recent call last):
        ...
        ValueError: mask must have shape [T, *batch] = (5, 2) (from xs); got shape (4, 2)
    """
    if tuple(shape) != tuple(expected):
        raise ValueError(f"{name} must have {what}; got shape {tuple(shape)}")


def unroll(value: Any, name: str = "unroll") -> int | bool | None:
    """The one rule for ``unroll``: None (the backend's tuned value), True (the whole
    loop), False or 1 (no unrolling), or a positive int (steps per loop iteration).

    Example:
        >>> unroll(4), unroll(None), unroll(True)
        (4, None, True)
    """
    if value is None or isinstance(value, bool):
        return value
    return int_at_least(name, value, 1, "None, a bool or a positive int")


def steps_per_iteration(value: int | bool | None, steps: int) -> int:
    """A checked ``unroll`` as a step count for a loop of ``steps`` steps (None: 1)."""
    if value is True:
        return max(steps, 1)
    if value is None or value is False:
        return 1
    return value
