"""``bidirectional``: a forward and a backward layer over the same sequence."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnn_jax.backends.masking import flip_valid
from rnn_jax.cells.base import Cell, Config
from rnn_jax.layers.base import Layer, as_layer, split_key, step_arguments


class BidirectionalParams(NamedTuple):
    forward: Any
    backward: Any


_MERGES = {
    "concat": lambda f, b: jnp.concatenate([f, b], axis=-1),
    "sum": lambda f, b: f + b,
    "mul": lambda f, b: f * b,
    "ave": lambda f, b: (f + b) / 2,
    None: lambda f, b: (f, b),
}


def reversed_layer(layer: Layer) -> Layer:
    """``layer`` run on each sequence's valid prefix reversed, outputs flipped back.

    Serves any layer; for a plain cell, ``rj.rnn(cell, reverse=True)`` computes
    the same without the two gathers. A ``mask`` flips with the prefix (a hole
    stays a hole); ``resets`` have no exact form under the flip and are refused
    in words (run a cell in reverse instead, which takes them).
    """

    def apply(params, xs, *, length=None, initial_state=None, key=None, resets=None, mask=None):
        if resets is not None:
            raise ValueError(
                "reversed_layer flips each sequence's valid prefix, which has no exact form for "
                "resets (a reset marks a segment's first step, which reversed is its last); "
                "reverse a cell instead (rj.bidirectional(cell) or rj.rnn(cell, reverse=True))"
            )
        final, ys = layer.apply(
            params,
            flip_valid(xs, length),
            length=length,
            initial_state=initial_state,
            key=key,
            **step_arguments(mask=flip_valid(mask, length)),
        )
        return final, flip_valid(ys, length)

    return Layer(init=layer.init, apply=apply, spec=Config(kind="reversed", layer=layer))


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
    With ``resets``
    (packed episodes) each segment runs backwards on its own. The final state
    is ``(fwd_state, bwd_state)``; ``initial_state`` likewise.

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
    join = merge if callable(merge) else _MERGES[merge]

    def init(key, input_size):
        k_fwd, k_bwd = jax.random.split(key)
        return BidirectionalParams(
            forward.init(k_fwd, input_size), backward.init(k_bwd, input_size)
        )

    def apply(params, xs, *, length=None, initial_state=None, key=None, resets=None, mask=None):
        if initial_state is None:
            initial_state = (None, None)
        elif not (isinstance(initial_state, tuple | list) and len(initial_state) == 2):
            raise ValueError(
                "initial_state of a bidirectional layer must be a pair (fwd_state, bwd_state); "
                f"got {type(initial_state).__name__}"
            )
        k_fwd, k_bwd = split_key(key, 2)
        steps = step_arguments(resets, mask)
        fwd_state, ys_fwd = forward.apply(
            params.forward, xs, length=length, initial_state=initial_state[0], key=k_fwd, **steps
        )
        bwd_state, ys_bwd = backward.apply(
            params.backward, xs, length=length, initial_state=initial_state[1], key=k_bwd, **steps
        )
        return (fwd_state, bwd_state), join(ys_fwd, ys_bwd)

    return Layer(
        init=init,
        apply=apply,
        spec=Config(kind="bidirectional", forward=forward, backward=backward, merge=merge),
    )
