"""The `Layer` shape shared by every sequence-level piece."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnn_jax.cells.base import Cell, Config


class Layer(NamedTuple):
    """A sequence layer: ``init(key, input_size) -> params`` and
    ``apply(params, xs, *, length=None, initial_state=None, key=None, resets=None,
    mask=None) -> (final_state, ys)`` over time-major ``xs: [T, *batch, F]``
    (``length``, ``resets`` and ``mask`` as in ``rj.scan``; a layer
    of one's own needs only the arguments it is given).

    ``spec`` describes how the layer was built (its kind and parts), so exports
    such as ``rj.interop.torch.to_torch`` can read it; it plays no part in
    ``apply``. It is a `rnn_jax.cells.Config`, so a layer is hashable (a static
    argument of ``jax.jit``). Without a ``key``, ``apply`` is deterministic (no dropout).
    """

    init: Callable[[jax.Array, int], Any]
    apply: Callable[..., tuple[Any, jax.Array]]
    spec: Config = Config()


def as_layer(item: Cell | Layer, *, reverse: bool = False) -> Layer:
    """A `Layer` from a cell (``rj.rnn(cell, reverse=reverse)``) or a layer as is."""
    from rnn_jax.layers.rnn import rnn

    if isinstance(item, Cell):
        return rnn(item, reverse=reverse)
    if isinstance(item, Layer):
        return item
    raise TypeError(f"expected an rnn_jax Cell or Layer; got {type(item).__name__}")


def feature_rank(item: Cell | Layer) -> int:
    """How many feature axes one step of ``item``'s input has: a cell's ``feature_rank``, for a
    layer that of the first cell its spec holds, 1 where it holds none."""
    if isinstance(item, Cell):
        return item.feature_rank
    for value in item.spec.values():
        for part in value if isinstance(value, tuple) else (value,):
            if isinstance(part, Cell | Layer):
                return feature_rank(part)
    return 1


def output_size(layer: Layer, params: Any, input_size: int, dtype=jnp.float32) -> int:
    """The feature size of ``layer.apply``'s outputs for ``input_size`` inputs (shape-only)."""
    _, ys = jax.eval_shape(lambda p: layer.apply(p, jnp.zeros((1, input_size), dtype)), params)
    leaves = jax.tree.leaves(ys)
    if len(leaves) != 1:
        raise ValueError("a layer inside stack must return one output array per step")
    return leaves[0].shape[-1]


def split_key(key: jax.Array | None, count: int) -> list[jax.Array | None]:
    """``count`` keys from ``key``, or ``count`` Nones when ``key`` is None (deterministic)."""
    if key is None:
        return [None] * count
    return list(jax.random.split(key, count))


def step_arguments(
    resets: jax.Array | None = None, mask: jax.Array | None = None
) -> dict[str, jax.Array]:
    """``resets`` and ``mask`` as keywords, leaving out the ones that are None: a
    combinator hands them only to layers that get them, so layers of one's own
    without those arguments still compose."""
    given = {"resets": resets, "mask": mask}
    return {name: value for name, value in given.items() if value is not None}
