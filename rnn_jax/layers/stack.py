"""``stack``: layers one above the other, with dropout and residual connections between."""

from __future__ import annotations

from collections.abc import Sequence

import jax

from rnn_jax.cells.base import Cell, Config
from rnn_jax.layers.base import Layer, as_layer, output_size, split_key, step_arguments
from rnn_jax.layers.dropout import check_rate, sequence_dropout


def stack(
    layers: Sequence[Cell | Layer],
    dropout: float = 0.0,
    residual: bool = False,
) -> Layer:
    """Feeds each layer's outputs to the next over ``xs: [T, *batch, F]``.

    ``layers`` are cells or layers. ``dropout`` drops the same features at every
    step of the inputs to layers 2.. (as PyTorch's ``dropout`` between LSTM
    layers, variational in time), only when ``apply`` gets a ``key``.
    ``residual`` adds each layer's input to its output from the second layer
    on (Wu et al. 2016), which needs equal sizes there. Params, initial and
    final states are lists with one entry per layer; ``length`` and ``mask``
    reach every layer.

    Example:
        >>> layer = rj.stack([rj.lstm(32), rj.lstm(32)], dropout=0.1, residual=True)
        >>> params = layer.init(jax.random.key(0), 8)
        >>> len(params)
        2
    """
    if not layers:
        raise ValueError("layers must hold at least one cell or layer; got an empty sequence")
    parts = [as_layer(item) for item in layers]
    rate = check_rate("dropout", dropout)

    def init(key, input_size):
        params = []
        for i, (layer, k) in enumerate(zip(parts, jax.random.split(key, len(parts)), strict=True)):
            params.append(layer.init(k, input_size))
            size = output_size(layer, params[-1], input_size)
            if residual and i > 0 and size != input_size:
                raise ValueError(
                    f"residual needs layer {i} to output its input size {input_size}; "
                    f"it outputs {size}"
                )
            input_size = size
        return params

    def apply(params, xs, *, length=None, initial_state=None, key=None, resets=None, mask=None):
        if len(params) != len(parts):
            raise ValueError(
                f"params must hold {len(parts)} entries (one per layer); got {len(params)}"
            )
        states = [None] * len(parts) if initial_state is None else list(initial_state)
        if len(states) != len(parts):
            raise ValueError(
                f"initial_state must hold {len(parts)} entries (one per layer); got {len(states)}"
            )
        keys = split_key(key, 2 * len(parts))
        finals = []
        for i, layer in enumerate(parts):
            inputs = xs if i == 0 else sequence_dropout(keys[2 * i], xs, rate)
            final, ys = layer.apply(
                params[i],
                inputs,
                length=length,
                initial_state=states[i],
                key=keys[2 * i + 1],
                **step_arguments(resets, mask),
            )
            finals.append(final)
            xs = ys + xs if residual and i > 0 else ys
        return finals, xs

    return Layer(
        init=init,
        apply=apply,
        spec=Config(kind="stack", layers=parts, dropout=rate, residual=residual),
    )
