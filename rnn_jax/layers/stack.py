"""``stack``: layers one above the other, with dropout, residual or skip connections between."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from rnn_jax.cells.bound import bound
from rnn_jax.cells.cell import Cell
from rnn_jax.layers.base import (
    Layer,
    output_size,
    reads_ahead,
    split_key,
    step_arguments,
    taking_time_major,
)
from rnn_jax.layers.dropout import check_rate, sequence_dropout
from rnn_jax.layers.rnn import as_layer


@dataclass(frozen=True)
class StackSpec:
    """How an ``rj.stack`` was built: its layers and what connects them."""

    layers: tuple[Layer, ...]
    dropout: float = 0.0
    residual: bool = False
    skip_connections: bool = False

    def reads_ahead(self) -> str | None:
        """The first reason any of its layers gives, or None."""
        return next(filter(None, map(reads_ahead, self.layers)), None)


def init_stack(spec: StackSpec, key, input_size) -> list:
    """``init``: each layer's params for the size of what it reads."""
    params, size = [], input_size
    keys = jax.random.split(key, len(spec.layers))
    for i, (layer, k) in enumerate(zip(spec.layers, keys, strict=True)):
        reads = size + input_size if spec.skip_connections and i > 0 else size
        params.append(layer.init(k, reads))
        size, was = output_size(layer, params[-1], reads), reads
        if spec.residual and i > 0 and size != was:
            raise ValueError(
                f"residual needs layer {i} to output its input size {was}; it outputs {size}"
            )
    return params


def _check_entries(spec: StackSpec, params, initial_state) -> list:
    count = len(spec.layers)
    if len(params) != count:
        raise ValueError(f"params must hold {count} entries (one per layer); got {len(params)}")
    states = [None] * count if initial_state is None else list(initial_state)
    if len(states) != count:
        raise ValueError(
            f"initial_state must hold {count} entries (one per layer); got {len(states)}"
        )
    return states


def apply_stack(
    spec: StackSpec,
    params,
    xs,
    *,
    length=None,
    initial_state=None,
    key=None,
    resets=None,
    mask=None,
):
    """``apply``: each layer on what the one below output (dropped out with a key), plus the
    stack's input with skip connections; every layer's final state."""
    states = _check_entries(spec, params, initial_state)
    keys = split_key(key, 2 * len(spec.layers))
    finals, outputs, below = [], [], xs
    for i, layer in enumerate(spec.layers):
        inputs = below if i == 0 else sequence_dropout(keys[2 * i], below, spec.dropout)
        if spec.skip_connections and i > 0:
            inputs = jnp.concatenate([xs, inputs], axis=-1)
        final, ys = layer.apply(
            params[i],
            inputs,
            length=length,
            initial_state=states[i],
            key=keys[2 * i + 1],
            **step_arguments(resets, mask),
        )
        finals.append(final)
        outputs.append(ys)
        below = ys + below if spec.residual and i > 0 else ys
    if spec.skip_connections:
        return finals, jnp.concatenate(outputs, axis=-1)
    return finals, below


def stack(
    layers: Sequence[Cell | Layer],
    dropout: float = 0.0,
    residual: bool = False,
    *,
    skip_connections: bool = False,
) -> Layer:
    """Feeds each layer's outputs to the next over ``xs: [T, *batch, F]``.

    ``layers`` are cells or layers. ``dropout`` drops the same features at every
    step of the outputs a layer passes to the next (as PyTorch's ``dropout``
    between LSTM layers, variational in time), only when ``apply`` gets a
    ``key``. ``residual`` adds each layer's input to its output from the
    second layer on (Wu et al. 2016), which needs equal sizes there.
    ``skip_connections`` is Haiku's ``DeepRNN`` with skip connections: every
    layer after the first reads the stack's input concatenated before the
    previous layer's outputs, ``[xs, ys_{i-1}]``, and the stack outputs all
    layers' outputs concatenated, ``[ys_0, ys_1, ...]``. Params, initial and
    final states are lists with one entry per layer; ``length`` and ``mask``
    reach every layer; ``apply`` takes ``time_major=False`` for ``[*batch, T,
    F]``. Its ``spec`` is a `StackSpec`.

    Example:
        >>> layer = rj.stack([rj.lstm(32), rj.lstm(32)], dropout=0.1, residual=True)
        >>> params = layer.init(jax.random.key(0), 8)
        >>> len(params)
        2
        >>> deep = rj.stack([rj.gru(4), rj.gru(5)], skip_connections=True)
        >>> _, ys = deep.apply(deep.init(jax.random.key(0), 3), jnp.ones((6, 3)))
        >>> ys.shape  # both layers' outputs, 4 + 5
        (6, 9)
    """
    if not layers:
        raise ValueError("layers must hold at least one cell or layer; got an empty sequence")
    if residual and skip_connections:
        raise ValueError(
            "residual and skip_connections cannot both be set: with skip connections a layer "
            "reads the stack's input beside the previous outputs, which has no residual sum"
        )
    parts = tuple(as_layer(item) for item in layers)
    spec = StackSpec(parts, check_rate("dropout", dropout), bool(residual), bool(skip_connections))
    return Layer(
        init=bound(init_stack, spec),
        apply=taking_time_major(bound(apply_stack, spec), parts[0].feature_rank),
        spec=spec,
        feature_rank=parts[0].feature_rank,
    )
