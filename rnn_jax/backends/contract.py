"""The contract between the driver and the scan kernels: `Problem`, `Backend` and the registry.

The driver (``rj.scan``) validates its arguments once and hands every backend
one normalised `Problem`: the batch axes flattened to one, the valid steps as
a mask, the restarts as a mask in the order the scan runs. A backend is
``Backend(name, supports, run)``:

- ``supports(cell, problem) -> str | None``: None when the backend computes
  this exactly, else the reason in words. ``auto``, the tests and every error
  message use it; nothing inspects error strings.
- ``run(cell, params, problem) -> (final_carry, ys)``: the carry with leaves
  ``[B, ...]`` and the outputs ``[T, B, ...]``, as the reference computes them.

A backend reads what it needs from the cell's declared capabilities
(`rnn_jax.cells.Gates`, `rnn_jax.cells.LinearRecurrence`, ...), never its name.

Each backend module is callable as its own factory, so
``rj.backends.sequential(chunk=8)`` configures the backend while
``import rnn_jax.backends.sequential`` still imports the module.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import Any, NamedTuple

import jax


class Problem(NamedTuple):
    """One scan, normalised: ``T`` steps of ``B`` independent sequences.

    - ``xs``: ``[T, B, *features]`` (one feature axis unless the cell
      declares ``feature_rank``).
    - ``initial_state``: the carry entering the scan, leaves ``[B, ...]``.
    - ``valid``: ``[T, B]`` bools, step ``t`` of sequence ``b`` counts (a
      masked step passes the carry through and outputs zeros); None: all count.
    - ``length``: ``[B]`` ints when ``valid`` is the prefix ``t < length``
      (right padding, for kernels that take lengths); None otherwise.
    - ``starts``: ``[T, B]`` bools: the carry *entering* step ``t`` is
      ``restart_state`` instead of the one the scan carried there. The driver
      has already put restarts in scan order (forward: a reset at ``t``;
      reverse: a reset at ``t + 1``) and dropped resets on masked steps, so a
      backend applies them the same way in both directions. None: no restarts.
    - ``restart_state``: the cell's initial state for ``B`` sequences, with
      ``starts``; None otherwise.
    - ``reverse``: the scan runs from step ``T - 1`` down to 0.
    - ``unroll``: the caller's ``unroll`` (None: the backend's tuned value).
    - ``param_dtypes``: the dtypes of the parameters' floating leaves (what
      precision the cell computes in: bf16 weights multiply in bf16).
    - ``gradient``: a backward pass follows (the program runs under
      ``jax.vjp``), so settings tuned for training apply; False for inference,
      whose forward-only path stores no residuals.
    """

    xs: jax.Array
    initial_state: Any
    valid: jax.Array | None
    length: jax.Array | None
    starts: jax.Array | None
    restart_state: Any
    reverse: bool
    unroll: int | bool | None
    param_dtypes: frozenset = frozenset()
    gradient: bool = False

    @property
    def steps(self) -> int:
        return int(self.xs.shape[0])

    @property
    def batch(self) -> int:
        return int(self.xs.shape[1])


Supports = Callable[[Any, Problem], "str | None"]
Run = Callable[[Any, Any, Problem], tuple[Any, Any]]


class Backend(NamedTuple):
    """A scan kernel: ``supports(cell, problem) -> reason or None`` and
    ``run(cell, params, problem) -> (final_carry, ys)`` (see the module docstring).

    Backends are hashable; a factory called twice with the same options
    returns the same backend, so jitted functions taking it as a static
    argument compile once.
    """

    name: str
    supports: Supports
    run: Run


def always(cell, problem: Problem) -> None:
    """``supports`` of a backend that computes every cell and problem."""
    del cell, problem


_REGISTRY: dict[str, Backend] = {}


def register(backend: Backend) -> Backend:
    """Registers ``backend`` under its name (a later registration replaces it)."""
    if not isinstance(backend, Backend):
        raise TypeError(f"backend must be an rnn_jax Backend; got {type(backend).__name__}")
    _REGISTRY[backend.name] = backend
    return backend


def get(name: str) -> Backend:
    """The registered backend called ``name``; a ValueError lists the known ones."""
    if name not in _REGISTRY:
        raise ValueError(
            f"backend must be 'auto', a Backend or one of {sorted(_REGISTRY)}; got {name!r}"
        )
    return _REGISTRY[name]


def names() -> list[str]:
    """Names of the registered backends, sorted.

    Example:
        >>> "sequential" in rj.backends.names()
        True
    """
    return sorted(_REGISTRY)


def refusal(backend: Backend, cell, problem: Problem) -> str | None:
    """``backend.supports(cell, problem)`` as the sentence an error message shows, or None."""
    reason = backend.supports(cell, problem)
    if reason is None:
        return None
    return f"the {backend.name} backend cannot run the {cell.name} cell exactly: {reason}"


class BackendModule(types.ModuleType):
    """A backend's module, callable as the backend's factory (its ``configure``)."""

    def __call__(self, **options: Any) -> Backend:
        return self.configure(**options)


def callable_module(module_name: str) -> None:
    """Makes the module ``module_name`` callable as its ``configure`` function."""
    sys.modules[module_name].__class__ = BackendModule
