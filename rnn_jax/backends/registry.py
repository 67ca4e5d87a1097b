"""The backend registry: each scan kernel is one module that registers a `Backend`.

The driver looks backends up by name and never branches on them, so adding a
kernel is adding a module (imported in ``rnn_jax/backends/__init__.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple


class Backend(NamedTuple):
    """A scan kernel.

    ``run(cell, params, xs, *, initial_state, length, reverse, unroll)``
    returns ``(final_carry, ys)`` exactly as the reference ``lax.scan`` would:
    inputs are already validated, ``initial_state`` is never ``None`` and
    ``length`` is ``None`` or an int array of the batch shape. A backend that
    cannot run a cell raises a ``ValueError`` naming the cell and itself.

    Backends with options are factories returning a configured `Backend`, so
    ``rj.scan(..., backend=rj.backends.checkpointed(segment=64))`` works as
    well as ``backend="checkpointed"`` with the defaults.
    """

    name: str
    run: Callable[..., tuple[Any, Any]]


_REGISTRY: dict[str, Backend] = {}


def register_backend(backend: Backend) -> Backend:
    """Registers ``backend`` under its name (a later registration replaces it)."""
    _REGISTRY[backend.name] = backend
    return backend


def get_backend(name: str) -> Backend:
    """The registered backend called ``name``; a ValueError lists the known ones."""
    if name not in _REGISTRY:
        raise ValueError(
            f"backend must be 'auto', a Backend or one of {sorted(_REGISTRY)}; got {name!r}"
        )
    return _REGISTRY[name]


def backend_names() -> list[str]:
    """Names of the registered backends, sorted."""
    return sorted(_REGISTRY)
