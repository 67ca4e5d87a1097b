"""PyTorch interop: ``torch.nn.RNN`` / ``LSTM`` / ``GRU`` to and from rnn_jax layers.

``from_torch(module)`` returns ``(layer, params)`` whose
``layer.apply(params, xs, length=...)`` on time-major ``xs: [T, B, F]``
returns what the module returns: its output sequence (time-major, zero past
each length as ``pad_packed_sequence`` gives it) and a final state that
``torch_final_state`` lays out as the module's ``h_n`` (and ``c_n``).
``to_torch(layer, params)`` goes back.

The returned layer is time-major whatever the module's ``batch_first``: for
batch-first data ``[B, T, F]`` transpose it (``xs.swapaxes(0, 1)``) or
``jax.vmap`` a call on ``[T, F]`` sequences over axis 0.

The weight mapping is a transpose: ``kernel = weight_ih.T``,
``recurrent_kernel = weight_hh.T`` and, with ``proj_size``,
``projection = weight_hr.T``. PyTorch's two biases are summed for ``RNN``
and ``LSTM`` (``bias = bias_ih + bias_hh``; ``to_torch`` puts the sum in
``bias_ih`` and zeros in ``bias_hh``); a GRU keeps both
(``bias = bias_ih``, ``recurrent_bias = bias_hh``: ``rj.gru`` with its
default ``reset_after=True`` is PyTorch's GRU).

Several layers become ``rj.stack([...], dropout=module.dropout)``, each
``rj.bidirectional(cell, merge="concat")`` when the module is bidirectional.
The stack's dropout applies only when ``apply`` gets a ``key``; it draws one
mask per sequence (variational) where PyTorch draws one per step, so the two
agree in evaluation, not in the noise they train with.

Example:
    >>> import torch, rnn_jax.interop.torch as rjt
    >>> module = torch.nn.LSTM(8, 16, num_layers=2, bidirectional=True)
    >>> layer, params = rjt.from_torch(module)
    >>> state, ys = layer.apply(params, jnp.ones((5, 3, 8)))
    >>> ys.shape
    (5, 3, 32)
    >>> h_n, c_n = rjt.torch_final_state(state)
    >>> h_n.shape
    (4, 3, 16)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import torch

from rnn_jax import _validate
from rnn_jax.backends.contract import Backend
from rnn_jax.cells.cell import Cell, described
from rnn_jax.cells.gru import gru
from rnn_jax.cells.layouts import CudnnWeights
from rnn_jax.cells.lstm import LSTMState, lstm
from rnn_jax.cells.simple import simple
from rnn_jax.layers.base import Layer
from rnn_jax.layers.bidirectional import (
    BidirectionalParams,
    BidirectionalSpec,
    bidirectional,
    rnn_direction,
)
from rnn_jax.layers.rnn import RNNSpec, rnn
from rnn_jax.layers.stack import StackSpec, stack

__all__ = [
    "from_torch",
    "initial_state_from_torch",
    "params_from_torch",
    "to_torch",
    "torch_final_state",
]

_MODES = {"RNN_TANH", "RNN_RELU", "LSTM", "GRU"}
# PyTorch's module modes by the CudnnLayout mode of the cell that computes them.
_TORCH_MODES = {"rnn_tanh": "RNN_TANH", "rnn_relu": "RNN_RELU", "lstm": "LSTM", "gru": "GRU"}


class TorchConfig(NamedTuple):
    """What a ``torch.nn.RNNBase`` module is: its ``mode`` and constructor arguments."""

    mode: str  # "RNN_TANH" | "RNN_RELU" | "LSTM" | "GRU"
    input_size: int
    hidden_size: int
    num_layers: int
    bidirectional: bool
    proj_size: int  # 0: none
    dropout: float
    bias: bool


def _config_of(module: Any) -> TorchConfig:
    if not isinstance(module, torch.nn.RNNBase) or getattr(module, "mode", None) not in _MODES:
        raise TypeError(
            "module must be a torch.nn.RNN, torch.nn.LSTM or torch.nn.GRU; got "
            f"{type(module).__name__}"
        )
    return TorchConfig(
        mode=module.mode,
        # PyTorch allows a layer without inputs; rnn_jax's cells refuse one at init alike.
        input_size=_validate.positive_int("input_size", int(module.input_size)),
        hidden_size=int(module.hidden_size),
        num_layers=int(module.num_layers),
        bidirectional=bool(module.bidirectional),
        proj_size=int(getattr(module, "proj_size", 0) or 0),
        dropout=float(module.dropout),
        bias=bool(module.bias),
    )


def _cell_for(config: TorchConfig) -> Cell:
    if config.mode == "LSTM":
        return lstm(config.hidden_size, proj_size=config.proj_size or None)
    if config.mode == "GRU":
        return gru(config.hidden_size, reset_after=True)
    activation = "tanh" if config.mode == "RNN_TANH" else "relu"
    return simple(config.hidden_size, activation=activation)


def _layer_for(config: TorchConfig, backend: str | Backend) -> Layer:
    def one_layer() -> Layer:
        cell = _cell_for(config)
        forward = rnn(cell, backend=backend)
        if not config.bidirectional:
            return forward
        return bidirectional(forward, rnn(cell, reverse=True, backend=backend), merge="concat")

    if config.num_layers == 1:
        return one_layer()
    return stack([one_layer() for _ in range(config.num_layers)], dropout=config.dropout)


def _to_jax(value: Any) -> jax.Array:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dtype == torch.bfloat16:
            return jnp.asarray(value.float().numpy(), jnp.bfloat16)
        return jnp.asarray(value.numpy())
    return jnp.asarray(value)


def _suffixes(config: TorchConfig) -> list[str]:
    return ["", "_reverse"] if config.bidirectional else [""]


def _cell_params(config: TorchConfig, get: Callable[[str], jax.Array], layer: int, suffix: str):
    names = f"l{layer}{suffix}"
    weight_ih = get(f"weight_ih_{names}")
    if config.bias:
        b_ih, b_hh = get(f"bias_ih_{names}"), get(f"bias_hh_{names}")
    else:
        b_ih = b_hh = jnp.zeros((weight_ih.shape[0],), weight_ih.dtype)
    weight_hr = get(f"weight_hr_{names}") if config.proj_size else None
    weights = CudnnWeights(weight_ih, get(f"weight_hh_{names}"), b_ih, b_hh, weight_hr)
    return _cell_for(config).cudnn_layout.from_weights(weights)


def params_from_torch(module: Any, tensors: Mapping[str, Any] | None = None) -> Any:
    """The params of ``from_torch(module)``'s layer, from ``tensors`` or the module's own.

    ``tensors`` maps PyTorch's parameter names (``weight_ih_l0``,
    ``bias_hh_l1_reverse``, ...) to tensors or arrays of their shapes,
    default ``dict(module.named_parameters())``. Any such mapping converts,
    e.g. a ``state_dict`` from a checkpoint.
    """
    config = _config_of(module)
    if tensors is None:
        tensors = dict(module.named_parameters())

    def get(name: str) -> jax.Array:
        if name not in tensors:
            raise ValueError(
                f"tensors must hold {name!r} for a {config.mode} module with "
                f"num_layers={config.num_layers}, bidirectional={config.bidirectional}; "
                f"got names {sorted(tensors)}"
            )
        return _to_jax(tensors[name])

    layers = []
    for k in range(config.num_layers):
        directions = [_cell_params(config, get, k, suffix) for suffix in _suffixes(config)]
        layers.append(BidirectionalParams(*directions) if config.bidirectional else directions[0])
    return layers[0] if config.num_layers == 1 else layers


def from_torch(module: Any, *, backend: str | Backend = "auto") -> tuple[Layer, Any]:
    """``(layer, params)`` computing what ``module`` (``nn.RNN``, ``nn.LSTM``, ``nn.GRU``) computes.

    ``layer.apply(params, xs, length=lengths)`` on time-major ``xs: [T, B, F]``
    returns ``(state, ys)``: ``ys: [T, B, D * H_out]`` is the module's output
    (for a packed batch, what ``pad_packed_sequence`` returns: zeros past each
    length) and ``torch_final_state(state)`` its ``h_n`` (``(h_n, c_n)`` for an
    LSTM). Any ``num_layers``, ``bidirectional``, ``proj_size`` and either
    ``batch_first``: the layer itself is always time-major. ``backend`` is the
    scan kernel of every layer and direction (``rj.scan``'s).

    Example:
        >>> layer, params = from_torch(torch.nn.GRU(4, 8, batch_first=True))
        >>> xs_btf = jnp.ones((2, 6, 4))
        >>> state, ys = layer.apply(params, xs_btf.swapaxes(0, 1))
        >>> ys.swapaxes(0, 1).shape  # what the module returns for xs_btf
        (2, 6, 8)
    """
    config = _config_of(module)
    return _layer_for(config, backend), params_from_torch(module)


# --- to_torch --------------------------------------------------------------------------------


def _refuse(what: str) -> ValueError:
    return ValueError(f"to_torch cannot express {what} in torch.nn.RNN/LSTM/GRU")


def _torch_cell(cell: Cell) -> tuple[str, int, int]:
    """``(mode, hidden_size, proj_size)`` of a cell that declares PyTorch's form, else a
    ValueError."""
    layout = cell.cudnn_layout
    if layout is None:
        raise _refuse(
            f"{described(cell)}: it is not one of PyTorch's RNN (tanh, relu), LSTM or GRU"
        )
    return _TORCH_MODES[layout.mode], layout.hidden_size, layout.proj_size


def _rnn_cell(layer: Layer, *, reverse: bool) -> Cell:
    """The cell of an ``rj.rnn`` layer running in the given direction, else a ValueError."""
    try:
        spec = rnn_direction(layer, reverse=reverse)
    except ValueError as reason:
        raise _refuse(str(reason)) from None
    for rate in ("input_dropout", "recurrent_dropout", "output_dropout", "zoneout"):
        if getattr(spec, rate):
            raise _refuse(f"an rnn layer with {rate}={getattr(spec, rate)}")
    return spec.cell


def _directions(layer: Layer, params: Any) -> list[tuple[Cell, Any]]:
    """``[(cell, params)]`` per direction of one torch layer (forward, then backward)."""
    spec = layer.spec
    if isinstance(spec, RNNSpec):
        return [(_rnn_cell(layer, reverse=False), params)]
    if isinstance(spec, BidirectionalSpec):
        if spec.merge != "concat":
            raise _refuse(f"a bidirectional layer with merge={spec.merge!r} (torch concatenates)")
        return [
            (_rnn_cell(spec.forward, reverse=False), params[0]),
            (_rnn_cell(spec.backward, reverse=True), params[1]),
        ]
    raise _refuse(f"a layer of kind {type(spec).__name__}")


def _torch_dtype(dtype) -> torch.dtype:
    table = {
        jnp.dtype(jnp.float32): torch.float32,
        jnp.dtype(jnp.float64): torch.float64,
        jnp.dtype(jnp.float16): torch.float16,
        jnp.dtype(jnp.bfloat16): torch.bfloat16,
    }
    if jnp.dtype(dtype) not in table:
        raise ValueError(f"params must have a floating dtype torch has; got {dtype}")
    return table[jnp.dtype(dtype)]


def _to_torch_tensor(value: Any) -> torch.Tensor:
    array = np.asarray(jax.device_get(value))
    wide = np.float64 if array.dtype == np.float64 else np.float32
    return torch.from_numpy(np.array(array, dtype=wide))  # a writable copy


def _torch_tensors(weights: CudnnWeights, names: str) -> dict[str, Any]:
    tensors = {
        f"weight_ih_{names}": weights.weight_ih,
        f"weight_hh_{names}": weights.weight_hh,
        f"bias_ih_{names}": weights.bias_ih,
        f"bias_hh_{names}": weights.bias_hh,
    }
    if weights.weight_hr is not None:
        tensors[f"weight_hr_{names}"] = weights.weight_hr
    return tensors


def to_torch(layer: Layer, params: Any, *, batch_first: bool = False) -> Any:
    """The ``torch.nn.RNN``/``LSTM``/``GRU`` (in eval mode) that computes ``layer`` with ``params``.

    ``layer`` is an ``rj.rnn`` of a simple (tanh or relu), LSTM (with or
    without ``proj_size``) or GRU (``reset_after=True``) cell, an
    ``rj.bidirectional`` of two such with ``merge="concat"``, or an
    ``rj.stack`` of equal such layers (its ``dropout`` becomes the module's).
    Anything torch cannot express (peepholes, layer norm, MGU, IndRNN, other
    activations, residual stacks, other merges, dropout inside a layer)
    raises a ValueError saying what. For an LSTM or RNN the summed bias goes
    to ``bias_ih`` and ``bias_hh`` is zero.

    Example:
        >>> layer = rj.bidirectional(rj.lstm(16))
        >>> params = layer.init(jax.random.key(0), 8)
        >>> module = to_torch(layer, params)
        >>> module.hidden_size, module.bidirectional
        (16, True)
    """
    if not isinstance(layer, Layer):
        raise TypeError(f"layer must be an rnn_jax Layer; got {type(layer).__name__}")
    spec = layer.spec
    if isinstance(spec, StackSpec):
        if spec.residual or spec.skip_connections:
            raise _refuse("a residual stack" if spec.residual else "a stack with skip connections")
        parts, part_params, dropout = list(spec.layers), list(params), spec.dropout
    else:
        parts, part_params, dropout = [layer], [params], 0.0
    per_layer = [_directions(part, p) for part, p in zip(parts, part_params, strict=True)]

    described = {
        (len(directions), *_torch_cell(cell)) for directions in per_layer for cell, _ in directions
    }
    if len(described) != 1:
        raise _refuse(
            "layers that differ in cell, size or direction count (torch repeats one layer); got "
            + ", ".join(sorted(str(d) for d in described))
        )
    ((num_directions, mode, hidden, proj),) = described
    first_cell, first = per_layer[0][0]
    first_weights = first_cell.cudnn_layout.to_weights(first)
    dtype = first_weights.weight_ih.dtype
    module_type = {"LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU}.get(mode, torch.nn.RNN)
    kwargs: dict[str, Any] = {}
    if mode == "LSTM":
        kwargs["proj_size"] = proj
    if module_type is torch.nn.RNN:
        kwargs["nonlinearity"] = "tanh" if mode == "RNN_TANH" else "relu"
    module = module_type(
        int(first_weights.weight_ih.shape[1]),
        int(hidden),
        num_layers=len(per_layer),
        bias=True,
        batch_first=batch_first,
        dropout=dropout if len(per_layer) > 1 else 0.0,
        bidirectional=num_directions == 2,
        dtype=_torch_dtype(dtype),
        **kwargs,
    )
    own = dict(module.named_parameters())
    tensors: dict[str, Any] = {}
    for k, directions in enumerate(per_layer):
        for (cell, p), suffix in zip(directions, ["", "_reverse"], strict=False):
            tensors.update(_torch_tensors(cell.cudnn_layout.to_weights(p), f"l{k}{suffix}"))
    with torch.no_grad():
        for name, value in tensors.items():
            target = own[name]
            if tuple(value.shape) != tuple(target.shape):
                raise ValueError(
                    f"params must give {name} the shape {tuple(target.shape)} of the torch "
                    f"module; got {tuple(value.shape)}"
                )
            target.copy_(_to_torch_tensor(value))
    return module.eval()


# --- states ----------------------------------------------------------------------------------


def _carries(state: Any) -> list[Any]:
    """Per-direction carries in torch's order (layer-major, forward before backward)."""
    if isinstance(state, list):
        return [carry for part in state for carry in _carries(part)]
    if isinstance(state, LSTMState) or hasattr(state, "shape"):
        return [state]
    if isinstance(state, tuple) and len(state) == 2:
        return [*_carries(state[0]), *_carries(state[1])]
    raise TypeError(
        f"state must be a final state of a from_torch layer; got {type(state).__name__}"
    )


def torch_final_state(state: Any) -> Any:
    """A from_torch layer's final state laid out as the module's: ``h_n`` or ``(h_n, c_n)``.

    ``h_n: [D * num_layers, *batch, H_out]`` and, for an LSTM,
    ``c_n: [D * num_layers, *batch, H]``, ordered as PyTorch orders them
    (layer by layer, the forward direction first).
    """
    carries = _carries(state)
    if isinstance(carries[0], LSTMState):
        return (
            jnp.stack([carry.h for carry in carries]),
            jnp.stack([carry.c for carry in carries]),
        )
    return jnp.stack(carries)


def initial_state_from_torch(layer: Layer, hx: Any) -> Any:
    """``initial_state`` for ``layer.apply`` from torch's ``h_0`` (or ``(h_0, c_0)`` for LSTM).

    The inverse of ``torch_final_state``: ``h_0: [D * num_layers, *batch, H_out]``.
    """
    if isinstance(hx, tuple | list):
        h0, c0 = (_to_jax(v) for v in hx)
    else:
        h0, c0 = _to_jax(hx), None
    index = iter(range(h0.shape[0]))

    def carry() -> Any:
        i = next(index)
        return h0[i] if c0 is None else LSTMState(h0[i], c0[i])

    def build(part: Layer) -> Any:
        if isinstance(part.spec, StackSpec):
            return [build(p) for p in part.spec.layers]
        if isinstance(part.spec, BidirectionalSpec):
            return (carry(), carry())
        return carry()

    try:
        state = build(layer)
    except StopIteration:
        raise ValueError(
            f"hx must hold one state per layer and direction; got {h0.shape[0]}"
        ) from None
    if next(index, None) is not None:
        raise ValueError(
            f"hx must hold one state per layer and direction; got {h0.shape[0]}, more than "
            "the layer has"
        )
    if c0 is not None and c0.shape[0] != h0.shape[0]:
        raise ValueError(
            f"hx's c_0 must hold one state per layer and direction, as h_0 does "
            f"({h0.shape[0]}); got {c0.shape[0]}"
        )
    return state
