"""The contract between the driver and the scan kernels: `Problem` and `Backend`.

The driver (``rj.scan``) validates its arguments once and hands every backend
one normalised `Problem`: the batch axes flattened to one, the valid steps as
a mask, the restarts as a mask in the order the scan runs. A backend is a
frozen dataclass of its options with two methods (`Backend`):

- ``supports(cell, problem) -> str | None``: None when the backend computes
  this exactly, else the reason in words. ``auto``, the tests and every error
  message use it; nothing inspects error strings.
- ``run(cell, params, problem) -> (final_carry, ys)``: the carry with leaves
  ``[B, ...]`` and the outputs ``[T, B, ...]``, as the reference computes them.

A backend reads what it needs from the cell's declared capabilities
(`rnn_jax.cells.Gates`, `rnn_jax.cells.LinearRecurrence`, ...), never its name.
The names ``rj.scan`` accepts are in `rnn_jax.backends.registry`.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar, NamedTuple

import jax
import numpy as np


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

    @property
    def dtypes(self) -> frozenset:
        """Every dtype the scan computes with: the initial carry's, the inputs' and the
        parameters' (a kernel of one precision refuses any other)."""
        leaves = jax.tree.leaves((self.initial_state, self.xs))
        return frozenset(np.dtype(x.dtype) for x in leaves) | self.param_dtypes


class Backend(abc.ABC):
    """A scan kernel: a frozen dataclass whose fields are its options.

    Subclasses are ``@dataclass(frozen=True)``, so equal options make equal,
    hashable backends (a jitted function taking one as a static argument
    compiles once per configuration), and check their options when built
    (``__post_init__``, with `rnn_jax._validate`). They set:

    - ``name``: a class attribute, the name ``rj.scan(backend=...)`` and the
      registry know it by;
    - ``supports(cell, problem) -> str | None``: None when the backend
      computes this exactly, else the reason in words (default: every cell
      and problem);
    - ``run(cell, params, problem) -> (final_carry, ys)``: the carry with
      leaves ``[B, ...]`` and the outputs ``[T, B, ...]``, as the reference
      computes them.

    Example:
        >>> import dataclasses
        >>> from rnn_jax.backends import reference
        >>> @dataclasses.dataclass(frozen=True)
        ... class Plain(rj.Backend):
        ...     name = "plain"
        ...     def run(self, cell, params, problem):
        ...         return reference.reference_scan(cell, params, problem)
        >>> cell = rj.gru(4)
        >>> params = cell.init(jax.random.key(0), 2)
        >>> carry, ys = rj.scan(cell, params, jnp.ones((3, 2)), backend=Plain())
    """

    name: ClassVar[str]

    def supports(self, cell, problem: Problem) -> str | None:
        del cell, problem

    @abc.abstractmethod
    def run(self, cell, params, problem: Problem) -> tuple[Any, Any]:
        """``(final_carry, ys)`` of ``cell`` over ``problem``."""


def refusal(backend: Backend, cell, problem: Problem) -> str | None:
    """``backend.supports(cell, problem)`` as the sentence an error message shows, or None."""
    reason = backend.supports(cell, problem)
    if reason is None:
        return None
    return f"the {backend.name} backend cannot run the {cell.name} cell exactly: {reason}"
