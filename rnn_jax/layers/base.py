"""The `Layer` shape shared by every sequence-level piece, and helpers its combinators share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnn_jax.cells.bound import bound
from rnn_jax.cells.cell import Cell


class Layer(NamedTuple):
    """A sequence layer: ``init(key, input_size) -> params`` and
    ``apply(params, xs, *, length=None, initial_state=None, key=None, resets=None,
    mask=None, time_major=True) -> (final_state, ys)`` over ``xs: [T, *batch,
    *features]`` (``length``, ``resets`` and ``mask`` as in ``rj.scan``;
    with ``time_major=False``, ``xs: [*batch, T, *features]``, ``resets`` and
    ``mask`` ``[*batch, T]`` and ``ys`` batch-major too; a layer of one's own
    needs only the arguments it is given).

    ``spec`` describes how the layer was built, as a typed value of its kind
    (`rnn_jax.layers.RNNSpec`, `BidirectionalSpec`, `StackSpec`, ...), so
    exports such as ``rj.interop.torch.to_torch`` dispatch on its type; it
    plays no part in ``apply`` beyond what ``apply`` binds. ``feature_rank``:
    the number of feature axes of one step's input (a convolutional cell's
    spatial axes and channels; 1 otherwise). Layers built with equal parts
    and options are equal and hash alike (static arguments of ``jax.jit``).
    Without a ``key``, ``apply`` is deterministic (no dropout).
    """

    init: Callable[[jax.Array, int], Any]
    apply: Callable[..., tuple[Any, jax.Array]]
    spec: Any = None
    feature_rank: int = 1


def reads_ahead(layer: Layer) -> str | None:
    """Why ``layer``'s output at a step depends on later steps, or None when it reads
    forwards only (so it can run one step at a time: a stream).

    Every built-in layer's spec says it (``spec.reads_ahead()``); a layer of one's own,
    whose spec does not, is not known to read forwards only.

    Example:
        >>> reads_ahead(rj.rnn(rj.gru(4))) is None, reads_ahead(rj.bidirectional(rj.gru(4)))
        (True, 'its bidirectional layer reads each sequence from its end')
    """
    says = getattr(layer.spec, "reads_ahead", None)
    if says is None:
        return f"a layer with spec {type(layer.spec).__name__} is not known to read forwards only"
    return says()


def from_its_end(kind: str) -> str:
    """The reason a layer of ``kind`` reads ahead: it starts at each sequence's end."""
    return f"its {kind} layer reads each sequence from its end"


def feature_rank(item: Cell | Layer) -> int:
    """How many feature axes one step of ``item``'s input has (a cell's or a layer's own)."""
    return item.feature_rank


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


def taking_time_major(apply: Callable, feature_rank: int) -> Callable:
    """``apply`` (over time-major inputs) that also takes ``time_major=False`` for batch-major
    ones (`batch_major`): what every built-in layer's ``apply`` is.

    Example:
        >>> layer = rj.rnn(rj.gru(4))
        >>> params = layer.init(jax.random.key(0), 3)
        >>> _, ys = layer.apply(params, jnp.ones((2, 7, 3)), time_major=False)
        >>> ys.shape
        (2, 7, 4)
    """
    return bound(_either_major, apply, feature_rank)


def _either_major(apply, rank: int, params, xs, *, time_major: bool = True, **arguments):
    if time_major:
        return apply(params, xs, **arguments)
    return batch_major(apply, rank, params, xs, **arguments)


def batch_major(apply: Callable, rank: int, params: Any, xs: jax.Array, **arguments: Any):
    """``apply`` (time-major) on batch-major ``xs [*batch, T, *features]``, with ``resets`` and
    ``mask`` ``[*batch, T]``; outputs back to ``[*batch, T, ...]``.

    ``rank`` is the layer's ``feature_rank``; the time axis is the one before
    the features, as in Flax's ``nn.RNN(time_major=False)``.
    """
    if jnp.ndim(xs) < rank + 1:
        raise ValueError(
            f"xs must have shape [*batch, T, *features] with {rank} feature axes for "
            f"time_major=False; got shape {jnp.shape(xs)}"
        )
    time = jnp.ndim(xs) - rank - 1
    resets, mask = arguments.pop("resets", None), arguments.pop("mask", None)
    steps_first = lambda a: None if a is None else jnp.moveaxis(a, -1, 0)
    final, ys = apply(
        params,
        jnp.moveaxis(xs, time, 0),
        resets=steps_first(resets),
        mask=steps_first(mask),
        **arguments,
    )
    return final, jax.tree.map(lambda y: jnp.moveaxis(y, 0, time), ys)
