"""Long short-term memory, with peepholes, projection (LSTMP) and layer normalisation."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnn_jax._validate import optional_positive_int, positive_int
from rnn_jax.cells.activations import resolve_activation
from rnn_jax.cells.arrays import add_bias, along, dtype_of
from rnn_jax.cells.bound import bound
from rnn_jax.cells.capabilities import Gates
from rnn_jax.cells.cell import Cell, split_cell
from rnn_jax.cells.config import Config
from rnn_jax.cells.dense import (
    DenseInit,
    init_gate_weights,
    kernel_input_size,
    recurrent_kernel,
    same_keras_weights,
)
from rnn_jax.cells.initializers import Initializer, glorot_uniform, stacked_orthogonal, zeros
from rnn_jax.cells.layouts import CudnnLayout, CudnnWeights, KerasLayout


class LSTMState(NamedTuple):
    h: jax.Array  # [*batch, proj_size or H]: the output, fed back
    c: jax.Array  # [*batch, H]: the memory cell


class LayerNormParams(NamedTuple):
    scale: jax.Array
    offset: jax.Array


class LSTMParams(NamedTuple):
    kernel: jax.Array  # [F, 4H], gates i, f, g, o
    recurrent_kernel: jax.Array  # [P or H, 4H]
    bias: jax.Array  # [4H]
    peephole: jax.Array | None = None  # [3, H]: input, forget, output gates
    projection: jax.Array | None = None  # [H, P]
    input_norm: LayerNormParams | None = None  # over the 4H input pre-activations
    recurrent_norm: LayerNormParams | None = None  # over the 4H recurrent pre-activations
    cell_norm: LayerNormParams | None = None  # over the H cell before the output tanh


class LSTMOptions(NamedTuple):
    """What an LSTM's step computes, beyond its weights."""

    hidden_size: int
    act: Callable[[jax.Array], jax.Array]
    gate: Callable[[jax.Array], jax.Array]
    peephole: bool = False
    layer_norm: bool = False
    projection: bool = False


def apply_layer_norm(x: jax.Array, params: LayerNormParams, eps: float = 1e-5) -> jax.Array:
    """Layer normalisation over the last axis, with a learned scale and offset."""
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.var(x, axis=-1, keepdims=True)
    normalised = (x - mean) * jax.lax.rsqrt(var + eps)
    return add_bias(normalised * along(params.scale, x), params.offset)


def _norm_params(size: int, dtype) -> LayerNormParams:
    return LayerNormParams(jnp.ones((size,), dtype), jnp.zeros((size,), dtype))


def init_lstm(key, input_size, *, options: LSTMOptions, proj_size, forget_bias, init: DenseInit):
    """``init`` of an LSTM: the gate weights (forget bias added), then the optional parts."""
    k_gates, k_peep, k_proj = jax.random.split(key, 3)
    H, dtype = options.hidden_size, init.dtype
    kernel, recurrent, bias = init_gate_weights(
        k_gates, input_size, H, 4, init, recurrent_size=proj_size or H
    )
    norm = options.layer_norm
    return LSTMParams(
        kernel=kernel,
        recurrent_kernel=recurrent,
        bias=bias.at[H : 2 * H].add(forget_bias),
        peephole=jax.random.uniform(k_peep, (3, H), dtype, -0.1, 0.1) if options.peephole else None,
        projection=init.kernel_init(k_proj, (H, proj_size), dtype) if proj_size else None,
        input_norm=_norm_params(4 * H, dtype) if norm else None,
        recurrent_norm=_norm_params(4 * H, dtype) if norm else None,
        cell_norm=_norm_params(H, dtype) if norm else None,
    )


def lstm_state(params, batch_shape=(), *, hidden_size: int, out_size: int) -> LSTMState:
    """``initial_state`` of an LSTM: zeros ``h [*batch, out_size]`` and ``c [*batch, H]``."""
    dt, batch_shape = dtype_of(params), tuple(batch_shape)
    return LSTMState(
        jnp.zeros((*batch_shape, out_size), dt), jnp.zeros((*batch_shape, hidden_size), dt)
    )


def project(params, x, *, layer_norm: bool):
    """``x @ kernel`` (layer-normalised with ``layer_norm``) plus the bias: ``[..., 4H]``."""
    xw = x @ params.kernel
    if layer_norm:
        xw = apply_layer_norm(xw, params.input_norm)
    return add_bias(xw, params.bias)


def gate_update(c, z, options: LSTMOptions):
    """``(c_new, o)`` from the cell ``c [*, H]`` and the pre-activations ``z [*, 4H]`` (gates
    i, f, g, o) without peepholes: ``c_new = f c + i act(g)``, ``o`` activated."""
    H, act, gate = options.hidden_size, options.act, options.gate
    if gate is jax.nn.sigmoid and act is jnp.tanh:
        # tanh(g) = 2 sigmoid(2g) - 1: all four gates in one sigmoid over the contiguous
        # [*, 4H] row, which XLA's CPU loops run faster than four split activations:
        # 1.81x (forward) and 1.35x (forward+backward) at B16 H64, 1.07x and 1.10x at
        # B32 H256, equal at B64 H512 (benchmarks/lstm_gates.py, lstm_gates-cpu-*.json).
        # The g columns come from an iota (a Pallas kernel may capture no array), compared
        # with its bounds rather than divided, per element of every step.
        column = jax.lax.broadcasted_iota(jnp.int32, z.shape, z.ndim - 1)
        in_g = (column >= 2 * H) & (column < 3 * H)
        i, f, g, o = jnp.split(jax.nn.sigmoid(jnp.where(in_g, 2 * z, z)), 4, axis=-1)
        return f * c + i * (2 * g - 1), o
    i, f, g, o = jnp.split(z, 4, axis=-1)
    return gate(f) * c + gate(i) * act(g), gate(o)


def peephole_update(peephole, c, z, options: LSTMOptions):
    """`gate_update` with peepholes ``[3, H]``: the gates i, f see ``c``, the gate o ``c_new``."""
    act, gate = options.act, options.gate
    i, f, g, o = jnp.split(z, 4, axis=-1)
    i = i + along(peephole[0], c) * c
    f = f + along(peephole[1], c) * c
    c = gate(f) * c + gate(i) * act(g)
    return c, gate(o + along(peephole[2], c) * c)


def combine(params, carry: LSTMState, xp, hu, *, options: LSTMOptions):
    """``Gates.combine`` of an LSTM; it reads from ``params`` only the parts ``options`` name
    (peepholes, norms, projection), so a plain LSTM's combine reads no params at all."""
    if options.layer_norm:
        hu = apply_layer_norm(hu, params.recurrent_norm)
    if options.peephole:
        c, o = peephole_update(params.peephole, carry.c, xp + hu, options)
    else:
        c, o = gate_update(carry.c, xp + hu, options)
    h = o * options.act(apply_layer_norm(c, params.cell_norm) if options.layer_norm else c)
    if options.projection:
        h = h @ params.projection
    return LSTMState(h, c), h


def fed_back_h(carry):
    """``Gates.fed_back`` of cells whose carry has the output ``h`` (LSTM, sLSTM)."""
    return carry.h


def lstm_gates(options: LSTMOptions) -> Gates:
    """The `Gates` of an LSTM computing ``options``."""
    return Gates(
        kernel=recurrent_kernel, fed_back=fed_back_h, combine=bound(combine, options=options)
    )


def _to_cudnn(params) -> CudnnWeights:
    bias = params.bias
    projection = None if params.projection is None else params.projection.T
    return CudnnWeights(
        params.kernel.T, params.recurrent_kernel.T, bias, jnp.zeros_like(bias), projection
    )


def _from_cudnn(weights: CudnnWeights) -> LSTMParams:
    return LSTMParams(
        kernel=weights.weight_ih.T,
        recurrent_kernel=weights.weight_hh.T,
        bias=weights.bias_ih + weights.bias_hh,
        projection=None if weights.weight_hr is None else weights.weight_hr.T,
    )


def _layouts(options: LSTMOptions, config: Config, proj_size: int | None) -> dict:
    """The cuDNN/PyTorch layout (default activations, no peepholes or layer norm) and the
    Keras one (no peepholes, projection or layer norm) where the LSTM computes them."""
    if options.peephole or options.layer_norm:
        return {}
    standard = options.gate is jax.nn.sigmoid and options.act is jnp.tanh
    keras = KerasLayout(
        "LSTM",
        Config(
            units=options.hidden_size,
            activation=config["activation"],
            recurrent_activation=config["gate_activation"],
        ),
        *same_keras_weights(LSTMParams),
    )
    return {
        "cudnn_layout": (
            CudnnLayout("lstm", options.hidden_size, proj_size or 0, _to_cudnn, _from_cudnn)
            if standard
            else None
        ),
        "keras_layout": None if proj_size else keras,
    }


def lstm(
    hidden_size: int,
    *,
    peephole: bool = False,
    proj_size: int | None = None,
    layer_norm: bool = False,
    forget_bias: float = 1.0,
    activation: str | Callable[[jax.Array], jax.Array] = "tanh",
    gate_activation: str | Callable[[jax.Array], jax.Array] = "sigmoid",
    kernel_init: Initializer = glorot_uniform,
    recurrent_init: Initializer = stacked_orthogonal,
    bias_init: Initializer = zeros,
    dtype=jnp.float32,
) -> Cell:
    """LSTM cell (Hochreiter & Schmidhuber 1997; Gers et al. 2000).

    Gate order i, f, g, o as in cuDNN, PyTorch and Keras; the forget-gate bias
    starts at ``forget_bias`` (1.0, Jozefowicz et al. 2015). Carry
    ``LSTMState(h [*batch, P], c [*batch, H])`` with ``P = proj_size or H``;
    the output is ``h``.

    - ``peephole``: the gates also see the cell (Gers & Schmidhuber 2000).
    - ``proj_size``: LSTMP (Sak et al. 2014), ``h = (o * tanh(c)) @ projection``,
      as PyTorch's ``proj_size``.
    - ``layer_norm``: Ba et al. 2016, normalising the input and recurrent
      pre-activations and the cell.

    Example:
        >>> cell = rj.lstm(128)
        >>> rj.count_params(cell.init(jax.random.key(0), 64))
        98816
    """
    positive_int("hidden_size", hidden_size)
    if optional_positive_int("proj_size", proj_size) is not None and proj_size >= hidden_size:
        raise ValueError(
            f"proj_size must be smaller than hidden_size={hidden_size}; got {proj_size}"
        )
    options = LSTMOptions(
        hidden_size,
        act=resolve_activation("activation", activation),
        gate=resolve_activation("gate_activation", gate_activation),
        peephole=bool(peephole),
        layer_norm=bool(layer_norm),
        projection=bool(proj_size),
    )
    config = Config(
        hidden_size=hidden_size,
        peephole=peephole,
        proj_size=proj_size,
        layer_norm=layer_norm,
        forget_bias=forget_bias,
        activation=activation,
        gate_activation=gate_activation,
    )
    init = DenseInit(kernel_init, recurrent_init, bias_init, dtype)
    return split_cell(
        init=bound(
            init_lstm, options=options, proj_size=proj_size, forget_bias=forget_bias, init=init
        ),
        initial_state=bound(lstm_state, hidden_size=hidden_size, out_size=proj_size or hidden_size),
        project=bound(project, layer_norm=options.layer_norm),
        gates=lstm_gates(options),
        input_size=kernel_input_size,
        name="lstm",
        config=config,
        **_layouts(options, config, proj_size),
    )
