"""``bidirectional``: a forward and a backward layer over the same sequence."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnn_jax.backends.masking import flip_valid
from rnn_jax.cells.bound import bound
from rnn_jax.cells.cell import Cell
from rnn_jax.layers.base import (
    Layer,
    from_its_end,
    split_key,
    step_arguments,
    taking_time_major,
)
from rnn_jax.layers.rnn import RNNSpec, as_layer


class BidirectionalParams(NamedTuple):
    forward: Any
    backward: Any


def concat(f, b):
    """``merge="concat"``: ``[..., H_fwd + H_bwd]``."""
    return jnp.concatenate([f, b], axis=-1)


def pair(f, b):
    """``merge=None``: the pair ``(ys_fwd, ys_bwd)``."""
    return f, b


_MERGES = {
    "concat": concat,
    "sum": lambda f, b: f + b,
    "mul": lambda f, b: f * b,
    "ave": lambda f, b: (f + b) / 2,
    None: pair,
}


@dataclass(frozen=True)
class ReversedSpec:
    """How an ``rj.reversed_layer`` was built: the layer it runs reversed."""

    layer: Layer

    def reads_ahead(self) -> str:
        """A reversed layer starts at each sequence's end."""
        return from_its_end("reversed")


@dataclass(frozen=True)
class BidirectionalSpec:
    """How an ``rj.bidirectional`` layer was built: its two directions and the merge."""

    forward: Layer
    backward: Layer
    merge: str | Callable[[Any, Any], Any] | None = "concat"

    def reads_ahead(self) -> str:
        """The backward direction starts at each sequence's end."""
        return from_its_end("bidirectional")


def apply_reversed(
    spec: ReversedSpec,
    params,
    xs,
    *,
    length=None,
    initial_state=None,
    key=None,
    resets=None,
    mask=None,
) -> tuple:
    """``apply`` of a reversed layer: ``layer`` on each valid prefix flipped, outputs flipped."""
    if resets is not None:
        raise ValueError(
            "reversed_layer flips each sequence's valid prefix, which has no exact form for "
            "resets (a reset marks a segment's first step, which reversed is its last); "
            "reverse a cell instead (rj.bidirectional(cell) or rj.rnn(cell, reverse=True))"
        )
    final, ys = spec.layer.apply(
        params,
        flip_valid(xs, length),
        length=length,
        initial_state=initial_state,
        key=key,
        **step_arguments(mask=flip_valid(mask, length)),
    )
    return final, flip_valid(ys, length)


def reversed_layer(layer: Layer) -> Layer:
    """``layer`` run on each sequence's valid prefix reversed, outputs flipped back.

    Serves any layer; for a plain cell, ``rj.rnn(cell, reverse=True)`` computes
    the same without the two gathers. A ``mask`` flips with the prefix (a hole
    stays a hole); ``resets`` have no exact form under the flip and are refused
    in words (run a cell in reverse instead, which takes them). Its ``spec``
    is a `ReversedSpec`.
    """
    spec = ReversedSpec(layer)
    apply = taking_time_major(bound(apply_reversed, spec), layer.feature_rank)
    return Layer(layer.init, apply, spec, layer.feature_rank)


def rnn_direction(layer: Layer, *, reverse: bool) -> RNNSpec:
    """The `RNNSpec` of ``layer`` if it is an ``rj.rnn`` running forwards, or backwards with
    ``reverse`` (so is ``reversed_layer`` of a forward one); else a ValueError saying what
    ``layer`` is instead, for exporters that express only plain directions.

    Example:
        >>> rnn_direction(rj.rnn(rj.gru(4), reverse=True), reverse=True).reverse
        True
    """
    spec = layer.spec
    if isinstance(spec, ReversedSpec) and reverse:
        return rnn_direction(spec.layer, reverse=False)
    if not isinstance(spec, RNNSpec):
        raise ValueError(f"a layer of kind {type(spec).__name__} as a direction")
    if spec.reverse != reverse:
        raise ValueError(
            "an rnn layer with reverse=True outside bidirectional"
            if spec.reverse
            else "a bidirectional layer whose backward direction runs forwards"
        )
    return spec


def init_bidirectional(spec: BidirectionalSpec, key, input_size) -> BidirectionalParams:
    """``init``: each direction's params from its own key."""
    k_fwd, k_bwd = jax.random.split(key)
    return BidirectionalParams(
        spec.forward.init(k_fwd, input_size), spec.backward.init(k_bwd, input_size)
    )


def apply_bidirectional(
    spec: BidirectionalSpec,
    params,
    xs,
    *,
    length=None,
    initial_state=None,
    key=None,
    resets=None,
    mask=None,
):
    """``apply``: both directions over ``xs``, their outputs merged."""
    if initial_state is None:
        initial_state = (None, None)
    elif not (isinstance(initial_state, tuple | list) and len(initial_state) == 2):
        raise ValueError(
            "initial_state of a bidirectional layer must be a pair (fwd_state, bwd_state); "
            f"got {type(initial_state).__name__}"
        )
    k_fwd, k_bwd = split_key(key, 2)
    steps = step_arguments(resets, mask)
    fwd_state, ys_fwd = spec.forward.apply(
        params.forward, xs, length=length, initial_state=initial_state[0], key=k_fwd, **steps
    )
    bwd_state, ys_bwd = spec.backward.apply(
        params.backward, xs, length=length, initial_state=initial_state[1], key=k_bwd, **steps
    )
    join = spec.merge if callable(spec.merge) else _MERGES[spec.merge]
    return (fwd_state, bwd_state), join(ys_fwd, ys_bwd)


def bidirectional(
    fwd: Cell | Layer,
    bwd: Cell | Layer | None = None,
    merge: str | Callable[[Any, Any], Any] | None = "concat",
) -> Layer:
    """Runs ``fwd`` forwards and ``bwd`` backwards over ``xs: [T, *batch, F]``.

    ``fwd``/``bwd`` are cells or layers; ``bwd`` defaults to a fresh copy of
    ``fwd`` run in reverse. A ``bwd`` cell is run in reverse; a ``bwd`` layer
    runs as given, so it should run backwards itself and return its outputs
    aligned with the inputs (``rj.rnn(cell, reverse=True)`` or
    ``rj.reversed_layer(layer)``). Keras's ``backward_layer`` is given with
    ``go_backwards=True`` instead, which returns the outputs in reversed time
    order for ``Bidirectional`` to flip back. With lengths (or a ``mask``),
    the backward direction starts at each sequence's last valid step, so
    padded batches are exact. ``merge`` joins the two outputs: ``"concat"``
    (``[..., 2H]``), ``"sum"``, ``"mul"``, ``"ave"``, None for the pair
    ``(ys_fwd, ys_bwd)``, or a function ``merge(ys_fwd, ys_bwd)`` as Flax's
    ``merge_fn`` (a hashable one, as functions are, keeps the layer hashable).
    With ``resets`` (packed episodes) each segment runs backwards on its own.
    The final state is ``(fwd_state, bwd_state)``; ``initial_state``
    likewise. ``apply`` takes ``time_major=False`` for ``[*batch, T, F]``.
    Its ``spec`` is a `BidirectionalSpec`.

    Example:
        >>> layer = rj.bidirectional(rj.gru(16))
        >>> params = layer.init(jax.random.key(0), 8)
        >>> _, ys = layer.apply(params, jnp.ones((5, 3, 8)), length=jnp.array([5, 2, 4]))
        >>> ys.shape
        (5, 3, 32)
    """
    if not callable(merge) and merge not in _MERGES:
        raise ValueError(f"merge must be one of {list(_MERGES)} or a function; got {merge!r}")
    forward = as_layer(fwd)
    if bwd is not None:
        backward = as_layer(bwd, reverse=True)
    elif isinstance(fwd, Cell):
        backward = as_layer(fwd, reverse=True)
    else:
        backward = reversed_layer(forward)
    spec = BidirectionalSpec(forward, backward, merge)
    return Layer(
        init=bound(init_bidirectional, spec),
        apply=taking_time_major(bound(apply_bidirectional, spec), forward.feature_rank),
        spec=spec,
        feature_rank=forward.feature_rank,
    )
