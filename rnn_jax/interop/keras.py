"""Keras 3 interop: ``SimpleRNN`` / ``LSTM`` / ``GRU`` / ``ConvLSTM1D/2D/3D``,
``Bidirectional`` and ``Sequential``.

``from_keras(layer)`` returns ``(layer, params)`` whose
``layer.apply(params, xs, length=..., mask=...)`` on time-major
``xs: [T, *batch, F]`` returns ``(state, ys)``: ``ys`` is what the Keras
layer returns with ``return_sequences=True`` (batch-major there: Keras'
``[B, T, H]`` is what ``apply(..., time_major=False)`` returns for Keras'
own ``[B, T, F]`` inputs and ``[B, T]`` masks), and the leaves of ``state``, in
order, are the states it returns with ``return_state=True`` (``[h, c]`` for
an LSTM, forward then backward for ``Bidirectional``). ``initial_state``
takes them the same way: ``LSTMState(h, c)``, a pair for ``Bidirectional``.
``to_keras(layer, params)`` goes back. Any Keras backend converts (weights
travel as NumPy arrays); Keras on the JAX backend computes on the same arrays.

The weight mapping is each cell's declared `rnn_jax.cells.KerasLayout`.
``SimpleRNN``, ``LSTM`` and ``ConvLSTM`` store ``kernel [*k, F, G*H]``,
``recurrent_kernel [*k, H, G*H]`` and one ``bias [G*H]`` in rnn_jax's layout and
gate order (LSTM i, f, g, o), so they are taken as they are (``rj.conv_lstm``
with Keras' ``strides``, ``padding`` and ``dilation_rate``, and the spatial
shape Keras built the layer for). Keras' ``GRU``
orders its gates z, r, h where rnn_jax has r, z, n, so the first two blocks
of every kernel and bias swap places; with ``reset_after=True`` (``rj.gru()``)
its bias is one ``(2, 3H)`` array, the input bias over the recurrent bias,
which become ``bias`` and ``recurrent_bias``; ``reset_after=False`` is
``rj.gru(reset_after=False)`` with one ``(3H,)`` bias. Without ``use_bias``
the biases are zeros (``to_keras`` then writes them, with ``use_bias=True``).
Activations map by name where rnn_jax computes the same function: ``tanh``,
``sigmoid``, ``relu``, ``hard_sigmoid`` (Keras 3's ``relu6(x + 3) / 6``),
``silu`` and ``linear``.

Masks. A ``Masking`` layer at the front of a ``Sequential`` becomes part of the
returned layer: it masks the steps whose features all equal its
``mask_value`` (and zeroes them, as Keras does). A mask passed to a Keras
call (``mask=`` of ``[B, T]``) is ``apply``'s ``mask=`` of ``[T, B]``
(holes anywhere), or ``length=`` where it is a prefix (right padding).
Masked steps pass the state through, as in Keras. What they output differs
between the two libraries and the returned layer computes Keras' value:
``rj.rnn`` outputs zeros there, and so does Keras inside ``Bidirectional``
(which sets ``zero_output_for_mask``) or with ``zero_output_for_mask=True``;
otherwise Keras outputs the state it carries through (the last valid output,
or the initial ``h`` before the first valid step), and so does the returned
layer.

``go_backwards``. Keras' ``go_backwards=True`` reads the whole padded
sequence from step ``T - 1`` down to 0 and returns the outputs in that order:
output ``k`` belongs to input ``T - 1 - k``. rnn_jax's ``reverse=True`` runs
from each sequence's last valid step down to 0 with outputs aligned to their
inputs. So a ``go_backwards`` layer is ``rj.rnn(cell, reverse=True)`` with its
outputs flipped over the whole time axis (``jnp.flip(ys, 0)``): with right
padding Keras reads the padding first, holding the initial state, so the
first ``T - length`` outputs are the masked ones; the final state is the
state after step 0 in both. In ``Bidirectional`` Keras flips the backward
outputs back, so its backward layer is exactly ``rj.rnn(cell, reverse=True)``
and ``from_keras`` returns ``rj.bidirectional(fwd, bwd, merge=merge_mode)``.

Dropout. Keras' ``dropout`` and ``recurrent_dropout`` become ``rj.rnn``'s
``input_dropout`` and ``recurrent_dropout``, which apply only when ``apply``
gets a ``key``. Keras draws one mask per sequence too, but with
``recurrent_dropout`` it draws one per gate; the two agree in evaluation
(no key, Keras' ``training=False``), not in the noise they train with.

Refused in words, having no exact rnn_jax form: ``stateful=True`` (pass the
final state as the next ``initial_state`` instead), ``unroll=True`` (Keras'
unrolled loop outputs zeros, not the initial state, at masked steps before
the first valid one, and ignores ``zero_output_for_mask``), constraints and
regularizers (training-time rules rnn_jax would silently drop), other
activations, mixed-precision policies, ``data_format="channels_first"``,
layers other than ``Masking`` and the recurrent ones in a ``Sequential``.

Example:
    >>> import os
    >>> _ = os.environ.setdefault("KERAS_BACKEND", "jax")  # before Keras is first imported
    >>> import keras
    >>> import rnn_jax.interop.keras as rjk
    >>> keras_layer = keras.layers.Bidirectional(keras.layers.GRU(8, return_sequences=True))
    >>> keras_layer.build((None, None, 4))
    >>> layer, params = rjk.from_keras(keras_layer)
    >>> state, ys = layer.apply(params, jnp.ones((6, 2, 4)), length=jnp.array([6, 3]))
    >>> ys.shape
    (6, 2, 16)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import keras
import numpy as np

from rnn_jax.cells.bound import bound
from rnn_jax.cells.cell import Cell, described
from rnn_jax.cells.conv_lstm import conv_lstm
from rnn_jax.cells.gru import gru
from rnn_jax.cells.layouts import KerasWeights
from rnn_jax.cells.lstm import lstm
from rnn_jax.cells.simple import simple
from rnn_jax.layers.base import Layer, from_its_end, reads_ahead, taking_time_major
from rnn_jax.layers.bidirectional import (
    BidirectionalParams,
    BidirectionalSpec,
    ReversedSpec,
    bidirectional,
    rnn_direction,
)
from rnn_jax.layers.dropout import fed_back_state
from rnn_jax.layers.rnn import RNNSpec, rnn
from rnn_jax.layers.stack import StackSpec, stack

__all__ = ["KerasRNNSpec", "MaskingSpec", "from_keras", "to_keras"]

# Keras activations, by the names Keras serialises them with, that rnn_jax's cells compute
# exactly under the same names. (Keras' "gelu" is the exact erf form, jax.nn.gelu the tanh
# approximation, so it is not here.)
_ACTIVATIONS = ("tanh", "sigmoid", "relu", "hard_sigmoid", "silu", "linear")
# The same functions given to an rnn_jax cell as callables, by their Keras names.
_CALLABLES = {
    jnp.tanh: "tanh",
    jax.nn.sigmoid: "sigmoid",
    jax.nn.relu: "relu",
    jax.nn.hard_sigmoid: "hard_sigmoid",
    jax.nn.silu: "silu",
}
_TRAINING_RULES = (
    "kernel_constraint",
    "recurrent_constraint",
    "bias_constraint",
    "kernel_regularizer",
    "recurrent_regularizer",
    "bias_regularizer",
    "activity_regularizer",
)
_CONV_LAYERS = (keras.layers.ConvLSTM1D, keras.layers.ConvLSTM2D, keras.layers.ConvLSTM3D)
_CELLS = (keras.layers.SimpleRNNCell, keras.layers.LSTMCell, keras.layers.GRUCell)
_MERGES = ("concat", "sum", "mul", "ave", None)


# --- cells and weights -----------------------------------------------------------------------


def _numpy(variable: Any) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(variable))


def _activation_from_keras(config: dict, name: str) -> str:
    value = config[name]
    if value not in _ACTIVATIONS:
        raise ValueError(
            f"from_keras maps {name} only where rnn_jax computes the same function, one of "
            f"{list(_ACTIVATIONS)}; got {value!r}"
        )
    return value


def _activation_to_keras(cell: Cell, name: str) -> str:
    value = cell.keras_layout.arguments[name]
    if value == "identity":
        return "linear"
    if isinstance(value, str) and value in _ACTIVATIONS:
        return value
    if callable(value) and value in _CALLABLES:
        return _CALLABLES[value]
    raise _refuse(
        f"the {cell.name} cell's {name}={value!r}: Keras has it under none of the names "
        f"{list(_ACTIVATIONS)}"
    )


def _keras_cell(layer: Any, dtype) -> Cell:
    """The rnn_jax cell computing what the Keras layer's cell computes (weights aside)."""
    keras_cell, config = layer.cell, layer.cell.get_config()
    options = {"activation": _activation_from_keras(config, "activation"), "dtype": dtype}
    if not isinstance(keras_cell, keras.layers.SimpleRNNCell):
        options["gate_activation"] = _activation_from_keras(config, "recurrent_activation")
    if isinstance(layer, _CONV_LAYERS):
        if config["data_format"] != "channels_last":
            raise ValueError(
                f"layer {layer.name!r} has data_format={config['data_format']!r}; rnn_jax's "
                "conv_lstm reads channels last: build the Keras layer with channels_last"
            )
        conv = {name: config[name] for name in ("strides", "padding", "dilation_rate")}
        return conv_lstm(
            config["filters"],
            config["kernel_size"],
            spatial_shape=tuple(keras_cell.spatial_dims),
            **conv,
            **options,
        )
    units = int(config["units"])
    if isinstance(keras_cell, keras.layers.SimpleRNNCell):
        return simple(units, **options)
    if isinstance(keras_cell, keras.layers.LSTMCell):
        return lstm(units, **options)
    return gru(units, reset_after=bool(config["reset_after"]), **options)


def _cell_from_keras(layer: Any) -> tuple[Cell, Any]:
    """The rnn_jax cell and params computing what a Keras RNN layer's cell computes."""
    keras_cell = layer.cell
    cell = _keras_cell(layer, jnp.dtype(layer.dtype_policy.variable_dtype))
    if not keras_cell.built:
        raise ValueError(
            f"layer {layer.name!r} must be built so that its weights exist: call it once or "
            "call layer.build((None, None, input_size))"
        )
    kernel = jnp.asarray(_numpy(keras_cell.kernel))
    recurrent = jnp.asarray(_numpy(keras_cell.recurrent_kernel))
    if keras_cell.use_bias:
        bias = jnp.asarray(_numpy(keras_cell.bias))
    else:
        reset_after = cell.keras_layout.arguments.get("reset_after")
        width = recurrent.shape[-1]
        bias = jnp.zeros((2, width) if reset_after else (width,), kernel.dtype)
    return cell, cell.keras_layout.from_weights(KerasWeights(kernel, recurrent, bias))


def _keras_cell_weights(cell: Cell, params: Any) -> tuple[type, dict, dict[str, np.ndarray]]:
    """``(Keras layer class, its constructor arguments, its cell's weights by name)`` for an
    rnn_jax cell that declares a `KerasLayout`, else a ValueError."""
    layout = cell.keras_layout
    if layout is None:
        raise _refuse(
            f"{described(cell)}: it computes none of Keras' SimpleRNN, LSTM, GRU and ConvLSTM "
            "layers"
        )
    if layout.spatial_shape is None:
        raise _refuse(
            f"a {layout.layer} without its images' size: Keras builds it for one spatial "
            "shape; build the rnn_jax cell with spatial_shape="
        )
    arguments = dict(layout.arguments)
    for name in ("activation", "recurrent_activation"):
        if name in arguments:
            arguments[name] = _activation_to_keras(cell, name)
    weights = {
        name: np.asarray(value) for name, value in layout.to_weights(params)._asdict().items()
    }
    return getattr(keras.layers, layout.layer), arguments, weights


# --- Keras' output order and masked outputs ---------------------------------------------------


def _valid_steps(steps: int, length: jax.Array | None, mask: jax.Array | None) -> jax.Array:
    """``[T, *batch]``: the steps that count under ``length`` and ``mask`` (one is given)."""
    if length is None:
        return mask
    length = jnp.asarray(length)
    valid = jnp.arange(steps).reshape((-1,) + (1,) * length.ndim) < length[None]
    return valid if mask is None else valid & mask


def _held_outputs(ys: jax.Array, valid: jax.Array, h0: jax.Array) -> jax.Array:
    """``ys [T, *batch, *features]`` with each step where ``valid [T, *batch]`` is False
    showing the last valid output before it, or ``h0 [*batch, *features]`` where there is
    none: Keras' masked outputs."""
    per_feature = lambda a: a.reshape(a.shape + (1,) * (ys.ndim - a.ndim))
    steps = jnp.arange(ys.shape[0]).reshape((-1,) + (1,) * (valid.ndim - 1))
    last = jax.lax.cummax(jnp.where(valid, steps, -1), axis=0)
    source = jnp.broadcast_to(per_feature(jnp.maximum(last, 0)), ys.shape)
    earlier = jnp.take_along_axis(ys, source, axis=0)
    fallback = jnp.where(per_feature(last >= 0), earlier, h0[None])
    return jnp.where(per_feature(valid), ys, fallback)


@dataclass(frozen=True)
class KerasRNNSpec:
    """A Keras RNN layer outside ``Bidirectional``: ``layer`` (an ``rj.rnn``) with Keras'
    output order (``go_backwards``) and masked outputs (``hold_masked``)."""

    layer: Layer
    go_backwards: bool
    hold_masked: bool

    def reads_ahead(self) -> str | None:
        """``go_backwards`` starts at each sequence's end; else the inner layer's reason."""
        return from_its_end("go_backwards") if self.go_backwards else reads_ahead(self.layer)


def apply_keras_rnn(spec: KerasRNNSpec, params, xs, *, length=None, mask=None, **arguments):
    """``apply``: the inner layer, then Keras' held masked outputs and output order."""
    final, ys = spec.layer.apply(params, xs, length=length, mask=mask, **arguments)
    if spec.hold_masked and (length is not None or mask is not None):
        state = arguments.get("initial_state")
        h0 = jnp.zeros_like(ys[0]) if state is None else fed_back_state(state)
        valid = _valid_steps(ys.shape[0], length, mask)
        if spec.go_backwards:  # "before" in Keras' reading order
            ys = jnp.flip(_held_outputs(jnp.flip(ys, 0), jnp.flip(valid, 0), h0), 0)
        else:
            ys = _held_outputs(ys, valid, h0)
    return final, jnp.flip(ys, 0) if spec.go_backwards else ys


def _keras_rnn(cell: Cell, *, go_backwards: bool, hold_masked: bool, **rates: float) -> Layer:
    """A Keras RNN layer outside ``Bidirectional``: ``rj.rnn(cell, reverse=go_backwards)``
    with Keras' output order (``go_backwards`` flips the time axis) and, where
    ``hold_masked``, its masked steps showing the state carried through."""
    inner = rnn(cell, reverse=go_backwards, **rates)
    spec = KerasRNNSpec(inner, go_backwards, hold_masked)
    apply = taking_time_major(bound(apply_keras_rnn, spec), cell.feature_rank)
    return Layer(inner.init, apply, spec, cell.feature_rank)


@dataclass(frozen=True)
class MaskingSpec:
    """Keras' ``Masking(mask_value)`` before ``layer``."""

    layer: Layer
    mask_value: float

    def reads_ahead(self) -> str | None:
        """The inner layer's reason (masking reads one step)."""
        return reads_ahead(self.layer)


def apply_masking(spec: MaskingSpec, params, xs, *, mask=None, **arguments):
    """``apply``: steps whose features all equal ``mask_value`` masked and zeroed."""
    axes = tuple(range(xs.ndim - spec.layer.feature_rank, xs.ndim))
    keep = jnp.any(xs != spec.mask_value, axis=axes)
    if mask is not None:
        keep = keep & mask
    xs = xs * keep.reshape(keep.shape + (1,) * len(axes)).astype(xs.dtype)
    return spec.layer.apply(params, xs, mask=keep, **arguments)


def _masking(inner: Layer, mask_value: float) -> Layer:
    """Keras' ``Masking(mask_value)`` before ``inner``: a step whose features all equal
    ``mask_value`` is masked and zeroed; a ``mask`` or ``length`` given as well combines."""
    spec = MaskingSpec(inner, mask_value)
    apply = taking_time_major(bound(apply_masking, spec), inner.feature_rank)
    return Layer(inner.init, apply, spec, inner.feature_rank)


# --- from_keras ------------------------------------------------------------------------------


def _check_recurrent(layer: Any) -> None:
    if isinstance(layer, _CONV_LAYERS):
        return
    if not isinstance(layer, keras.layers.RNN) or not isinstance(layer.cell, _CELLS):
        raise TypeError(
            "from_keras takes a SimpleRNN, LSTM, GRU or ConvLSTM1D/2D/3D layer (or "
            "keras.layers.RNN over the first three's cells), a Bidirectional of them, or a "
            f"Sequential of these; got {type(layer).__name__}"
            + (f" over {type(layer.cell).__name__}" if isinstance(layer, keras.layers.RNN) else "")
        )


def _check_rnn_layer(layer: Any) -> None:
    _check_recurrent(layer)
    if layer.stateful:
        raise ValueError(
            f"layer {layer.name!r} has stateful=True, which carries the final state into the "
            "next call; rnn_jax takes it explicitly: build the layer without stateful and pass "
            "apply's final state as the next call's initial_state"
        )
    if layer.unroll:
        raise ValueError(
            f"layer {layer.name!r} has unroll=True: Keras' unrolled loop outputs zeros, not "
            "the initial state, at masked steps before the first valid one and ignores "
            "zero_output_for_mask; with unroll=False the same weights compute what "
            "from_keras reproduces"
        )
    config = layer.cell.get_config()
    rules = [name for name in _TRAINING_RULES if config.get(name) is not None]
    rules += ["activity_regularizer"] if layer.activity_regularizer is not None else []
    if rules:
        raise ValueError(
            f"layer {layer.name!r} has {', '.join(sorted(set(rules)))}: rnn_jax has no such "
            "training-time rule, and from_keras would drop it silently; remove it (the "
            "weights compute the same without it)"
        )
    if layer.dtype_policy.compute_dtype != layer.dtype_policy.variable_dtype:
        raise ValueError(
            f"layer {layer.name!r} computes in {layer.dtype_policy.compute_dtype} on "
            f"{layer.dtype_policy.variable_dtype} weights; from_keras takes one dtype for both"
        )


def _rates(keras_cell: Any) -> dict[str, float]:
    return {
        "input_dropout": float(keras_cell.dropout),
        "recurrent_dropout": float(keras_cell.recurrent_dropout),
    }


def _rnn_from_keras(layer: Any) -> tuple[Layer, Any]:
    _check_rnn_layer(layer)
    cell, params = _cell_from_keras(layer)
    rates = _rates(layer.cell)
    if not layer.go_backwards and layer.zero_output_for_mask:
        return rnn(cell, **rates), params
    hold = not layer.zero_output_for_mask
    return _keras_rnn(cell, go_backwards=layer.go_backwards, hold_masked=hold, **rates), params


def _bidirectional_from_keras(layer: Any) -> tuple[Layer, Any]:
    forward, backward = layer.forward_layer, layer.backward_layer
    if forward.go_backwards:
        raise ValueError(
            f"Bidirectional {layer.name!r} has a forward_layer with go_backwards=True; "
            "from_keras takes the forward layer forwards and the backward one backwards"
        )
    for part in (forward, backward):
        _check_rnn_layer(part)
    (fwd_cell, fwd_params), (bwd_cell, bwd_params) = (
        _cell_from_keras(part) for part in (forward, backward)
    )
    # Keras flips the go_backwards outputs back and zeroes masked outputs when returning
    # sequences: exactly rj.rnn(cell, reverse=True) and rj.rnn's zeros.
    merged = bidirectional(
        rnn(fwd_cell, **_rates(forward.cell)),
        rnn(bwd_cell, reverse=True, **_rates(backward.cell)),
        merge=layer.merge_mode,
    )
    return merged, BidirectionalParams(fwd_params, bwd_params)


def _part_from_keras(layer: Any) -> tuple[Layer, Any]:
    if isinstance(layer, keras.layers.Bidirectional):
        return _bidirectional_from_keras(layer)
    return _rnn_from_keras(layer)


def _sequential_from_keras(model: Any) -> tuple[Layer, Any]:
    layers = list(model.layers)
    mask_value = None
    if layers and isinstance(layers[0], keras.layers.Masking):
        mask_value = float(layers.pop(0).mask_value)
    for layer in layers:
        if not isinstance(layer, keras.layers.RNN | keras.layers.Bidirectional):
            where = "" if not isinstance(layer, keras.layers.Masking) else " after the first"
            raise TypeError(
                f"a Sequential for from_keras holds an optional Masking layer first, then "
                f"SimpleRNN, LSTM, GRU, ConvLSTM or Bidirectional layers; got "
                f"{type(layer).__name__} {layer.name!r}{where}"
            )
    if not layers:
        raise ValueError("the Sequential must hold at least one recurrent layer; got none")
    parts = [_part_from_keras(layer) for layer in layers]
    if len(parts) == 1:
        ((result, params),) = parts
    else:
        result, params = stack([part for part, _ in parts]), [p for _, p in parts]
    return (result if mask_value is None else _masking(result, mask_value)), params


def from_keras(layer: Any) -> tuple[Layer, Any]:
    """``(layer, params)`` computing what a built Keras 3 recurrent layer computes.

    ``layer`` is a ``SimpleRNN``, ``LSTM``, ``GRU`` (or ``keras.layers.RNN``
    over their cells) or ``ConvLSTM1D/2D/3D``, a ``Bidirectional`` of them
    (any ``merge_mode``; None gives the pair ``(ys_fwd, ys_bwd)``), or a
    ``Sequential`` of these with an optional ``Masking`` layer first. The
    result's ``apply(params, xs, *, length=None, mask=None,
    initial_state=None, key=None, time_major=True)`` on time-major ``xs: [T,
    *batch, *features]`` (Keras' own ``[B, T, ...]`` with
    ``time_major=False``) returns ``(state, ys)``, ``ys`` being what Keras
    returns for the same inputs with ``return_sequences=True``, whatever the
    layer's own setting; the module docstring states how masks,
    ``go_backwards`` and dropout map. One layer gives its own layer and
    params (``rj.rnn``, ``rj.bidirectional``, or a layer keeping Keras'
    output order, spec `KerasRNNSpec`); several give ``rj.stack``'s, a list.

    Example:
        >>> keras_layer = keras.layers.LSTM(8, go_backwards=True)
        >>> keras_layer.build((None, None, 4))
        >>> layer, params = from_keras(keras_layer)
        >>> xs = jnp.ones((2, 5, 4))  # Keras' [B, T, F]
        >>> state, ys = layer.apply(params, xs, mask=jnp.ones((2, 5), bool), time_major=False)
        >>> ys.shape, state.c.shape
        ((2, 5, 8), (2, 8))
    """
    if isinstance(layer, keras.Sequential):
        return _sequential_from_keras(layer)
    return _part_from_keras(layer)


# --- to_keras --------------------------------------------------------------------------------


def _refuse(what: str) -> ValueError:
    return ValueError(f"to_keras cannot express {what}")


def _rnn_spec(layer: Layer, *, backwards: bool) -> RNNSpec:
    """The spec of an ``rj.rnn`` layer run in the given direction, else a ValueError.

    (Outside ``Bidirectional``, Keras' ``go_backwards`` returns its outputs in
    reversed order: ``from_keras``' go_backwards layer keeps that order, an
    ``rj.rnn(cell, reverse=True)`` does not.)"""
    try:
        spec = rnn_direction(layer, reverse=backwards)
    except ValueError as reason:
        raise _refuse(str(reason)) from None
    for rate in ("output_dropout", "zoneout"):
        if getattr(spec, rate):
            raise _refuse(f"an rnn layer with {rate}={getattr(spec, rate)}")
    return spec


def _keras_rnn_layer(spec: RNNSpec, params: Any, **options: Any) -> tuple[Any, dict]:
    """An unbuilt Keras RNN layer for an ``rj.rnn`` spec, and its cell's weights."""
    layer_type, arguments, weights = _keras_cell_weights(spec.cell, params)
    layer = layer_type(
        **arguments,
        dropout=spec.input_dropout,
        recurrent_dropout=spec.recurrent_dropout,
        return_sequences=True,
        dtype=str(weights["kernel"].dtype),
        **options,
    )
    return layer, weights


def _keras_bidirectional(spec: BidirectionalSpec, params: Any, return_state: bool):
    if spec.merge not in _MERGES:
        raise _refuse(f"a bidirectional layer merged by {spec.merge!r}: Keras merges by {_MERGES}")
    forward, fwd_weights = _keras_rnn_layer(
        _rnn_spec(spec.forward, backwards=False), params.forward, return_state=return_state
    )
    backward, bwd_weights = _keras_rnn_layer(
        _rnn_spec(spec.backward, backwards=True),
        params.backward,
        go_backwards=True,
        return_state=return_state,
    )
    keras_layer = keras.layers.Bidirectional(
        forward, backward_layer=backward, merge_mode=spec.merge
    )
    # Bidirectional rebuilds its forward layer from the config, so weights go to its own.
    return keras_layer, [
        (keras_layer.forward_layer, fwd_weights),
        (keras_layer.backward_layer, bwd_weights),
    ]


def _keras_part(layer: Layer, params: Any, return_state: bool) -> tuple[Any, list]:
    """An unbuilt Keras layer for one rnn_jax layer, and ``[(keras layer, weights)]`` to set."""
    spec = layer.spec
    if isinstance(spec, BidirectionalSpec):
        return _keras_bidirectional(spec, params, return_state)
    if isinstance(spec, KerasRNNSpec):
        options = {"go_backwards": spec.go_backwards, "zero_output_for_mask": not spec.hold_masked}
        inner = _rnn_spec(spec.layer, backwards=spec.go_backwards)
    elif isinstance(spec, RNNSpec):
        # rj.rnn outputs zeros at masked steps: Keras does with zero_output_for_mask.
        options, inner = {"zero_output_for_mask": True}, _rnn_spec(layer, backwards=False)
    else:
        raise _refuse(f"a layer of kind {type(spec).__name__}")
    keras_layer, weights = _keras_rnn_layer(inner, params, return_state=return_state, **options)
    return keras_layer, [(keras_layer, weights)]


def _set_weights(targets: list) -> None:
    for keras_layer, weights in targets:
        for name, value in weights.items():
            variable = getattr(keras_layer.cell, name)
            if tuple(variable.shape) != value.shape:
                raise ValueError(
                    f"params must give {keras_layer.name}'s {name} the shape "
                    f"{tuple(variable.shape)}; got {value.shape}"
                )
            variable.assign(value)


def _first_cell(layer: Layer) -> Cell:
    """The cell whose inputs are the layer's (its first rnn's)."""
    spec = layer.spec
    if isinstance(spec, StackSpec):
        return _first_cell(spec.layers[0])
    if isinstance(spec, BidirectionalSpec):
        return _first_cell(spec.forward)
    if isinstance(spec, KerasRNNSpec | MaskingSpec | ReversedSpec):
        return _first_cell(spec.layer)
    return spec.cell


def _keras_parts(layer: Layer, params: Any, return_state: bool) -> list:
    """``[(unbuilt Keras layer, [(keras layer, weights)])]``: one part, or a stack's parts."""
    spec = layer.spec
    if not isinstance(spec, StackSpec):
        return [_keras_part(layer, params, return_state)]
    if spec.dropout or spec.residual or spec.skip_connections:
        raise _refuse(
            f"a stack with dropout={spec.dropout}, residual={spec.residual}, "
            f"skip_connections={spec.skip_connections}: a Sequential passes each layer's "
            "outputs on as they are"
        )
    if return_state:
        raise _refuse("return_state for a stack: a Sequential returns one output")
    return [_keras_part(part, p, False) for part, p in zip(spec.layers, params, strict=True)]


def to_keras(layer: Layer, params: Any, *, return_state: bool = False) -> Any:
    """The built Keras layer that computes ``layer`` with ``params`` (batch-major, Keras' way).

    ``layer`` is what ``from_keras`` returns, or built from ``rj.rnn`` over
    cells that declare a `rnn_jax.cells.KerasLayout` with Keras' activations
    (the module docstring lists them): ``rj.simple``, ``rj.lstm`` (no
    peepholes, projection or layer norm), ``rj.gru`` and ``rj.conv_lstm``
    (built with ``spatial_shape``); ``rj.bidirectional`` of a forward and a
    backward such layer merged by name, and ``rj.stack`` of these without
    dropout, residual or skip connections, which becomes a ``Sequential``
    (with a ``Masking`` layer where ``from_keras`` took one). Every recurrent
    layer returns sequences; a single one also its final states with
    ``return_state``. An ``rj.rnn`` becomes a layer with
    ``zero_output_for_mask=True``, since rnn_jax outputs zeros at masked
    steps. Anything else raises a ValueError saying what.

    Example:
        >>> layer = rj.bidirectional(rj.gru(8), merge="sum")
        >>> params = layer.init(jax.random.key(0), 4)
        >>> keras_layer = to_keras(layer, params)
        >>> keras_layer.merge_mode, keras_layer.forward_layer.units
        ('sum', 8)
    """
    if not isinstance(layer, Layer):
        raise TypeError(f"layer must be an rnn_jax Layer; got {type(layer).__name__}")
    front = []
    if isinstance(layer.spec, MaskingSpec):
        front = [keras.layers.Masking(mask_value=layer.spec.mask_value)]
        layer = layer.spec.layer
    parts = _keras_parts(layer, params, return_state)
    targets = [target for _, part_targets in parts for target in part_targets]
    layout = _first_cell(layer).keras_layout
    step_shape = (*layout.spatial_shape, targets[0][1]["kernel"].shape[-2])
    if front or len(parts) > 1:
        result = keras.Sequential(
            [keras.Input((None, *step_shape)), *front, *(keras_layer for keras_layer, _ in parts)]
        )
    else:
        ((result, _),) = parts
        result.build((None, None, *step_shape))
    _set_weights(targets)
    return result
