"""Long short-term memory, with peepholes, projection (LSTMP) and layer normalisation."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnn_jax.cells.base import (
    Cell,
    CudnnLayout,
    CudnnWeights,
    Gates,
    Initializer,
    add_bias,
    along,
    check_positive_int,
    dtype_of,
    glorot_uniform,
    resolve_activation,
    split_cell,
    stacked_orthogonal,
    zeros,
)
from rnn_jax.cells.dense import init_gate_weights, kernel_input_size, recurrent_kernel


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


def apply_layer_norm(x: jax.Array, params: LayerNormParams, eps: float = 1e-5) -> jax.Array:
    """Layer normalisation over the last axis, with a learned scale and offset."""
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.var(x, axis=-1, keepdims=True)
    normalised = (x - mean) * jax.lax.rsqrt(var + eps)
    return add_bias(normalised * along(params.scale, x), params.offset)


def _norm_params(size: int, dtype) -> LayerNormParams:
    return LayerNormParams(jnp.ones((size,), dtype), jnp.zeros((size,), dtype))


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
    check_positive_int("hidden_size", hidden_size)
    if proj_size is not None:
        check_positive_int("proj_size", proj_size)
        if proj_size >= hidden_size:
            raise ValueError(
                f"proj_size must be smaller than hidden_size={hidden_size}; got {proj_size}"
            )
    act = resolve_activation("activation", activation)
    gate = resolve_activation("gate_activation", gate_activation)
    out_size = proj_size or hidden_size
    H = hidden_size
    one_sigmoid = gate is jax.nn.sigmoid and act is jnp.tanh

    def init(key, input_size):
        k_gates, k_peep, k_proj = jax.random.split(key, 3)
        kernel, recurrent, bias = init_gate_weights(
            k_gates,
            input_size,
            H,
            4,
            kernel_init=kernel_init,
            recurrent_init=recurrent_init,
            bias_init=bias_init,
            dtype=dtype,
            recurrent_size=out_size,
        )
        bias = bias.at[H : 2 * H].add(forget_bias)
        return LSTMParams(
            kernel=kernel,
            recurrent_kernel=recurrent,
            bias=bias,
            peephole=(jax.random.uniform(k_peep, (3, H), dtype, -0.1, 0.1) if peephole else None),
            projection=kernel_init(k_proj, (H, proj_size), dtype) if proj_size else None,
            input_norm=_norm_params(4 * H, dtype) if layer_norm else None,
            recurrent_norm=_norm_params(4 * H, dtype) if layer_norm else None,
            cell_norm=_norm_params(H, dtype) if layer_norm else None,
        )

    def initial_state(params, batch_shape=()):
        dt = dtype_of(params)
        batch_shape = tuple(batch_shape)
        return LSTMState(jnp.zeros((*batch_shape, out_size), dt), jnp.zeros((*batch_shape, H), dt))

    def project(params, x):
        xw = x @ params.kernel
        if params.input_norm is not None:
            xw = apply_layer_norm(xw, params.input_norm)
        return add_bias(xw, params.bias)

    def combine(params, carry, xp, hu):
        c = carry.c
        if params.recurrent_norm is not None:
            hu = apply_layer_norm(hu, params.recurrent_norm)
        z = xp + hu
        if params.peephole is None and one_sigmoid:
            # tanh(g) = 2 sigmoid(2g) - 1: all four gates in one sigmoid over the contiguous
            # [*, 4H] row, which XLA's CPU loops run faster than four split activations:
            # 1.81x (forward) and 1.35x (forward+backward) at B16 H64, 1.07x and 1.10x at
            # B32 H256, equal at B64 H512 (benchmarks/lstm_gates.py, lstm_gates-cpu-*.json).
            # The g columns come from an iota (a Pallas kernel may capture no array), compared
            # with its bounds rather than divided, per element of every step.
            column = jax.lax.broadcasted_iota(jnp.int32, z.shape, z.ndim - 1)
            in_g = (column >= 2 * H) & (column < 3 * H)
            i, f, g, o = jnp.split(jax.nn.sigmoid(jnp.where(in_g, 2 * z, z)), 4, axis=-1)
            c = f * c + i * (2 * g - 1)
        else:
            i, f, g, o = jnp.split(z, 4, axis=-1)
            if params.peephole is not None:
                i = i + along(params.peephole[0], c) * c
                f = f + along(params.peephole[1], c) * c
            c = gate(f) * c + gate(i) * act(g)
            if params.peephole is not None:
                o = o + along(params.peephole[2], c) * c
            o = gate(o)
        shown = apply_layer_norm(c, params.cell_norm) if params.cell_norm is not None else c
        h = o * act(shown)
        if params.projection is not None:
            h = h @ params.projection
        return LSTMState(h, c), h

    def to_weights(params) -> CudnnWeights:
        bias = params.bias
        projection = None if params.projection is None else params.projection.T
        return CudnnWeights(
            params.kernel.T, params.recurrent_kernel.T, bias, jnp.zeros_like(bias), projection
        )

    def from_weights(weights: CudnnWeights) -> LSTMParams:
        return LSTMParams(
            kernel=weights.weight_ih.T,
            recurrent_kernel=weights.weight_hh.T,
            bias=weights.bias_ih + weights.bias_hh,
            projection=None if weights.weight_hr is None else weights.weight_hr.T,
        )

    # cuDNN's and PyTorch's LSTM: default activations, no peepholes, no layer norm.
    standard = one_sigmoid and not peephole and not layer_norm
    return split_cell(
        init=init,
        initial_state=initial_state,
        project=project,
        gates=Gates(kernel=recurrent_kernel, fed_back=lambda carry: carry.h, combine=combine),
        input_size=kernel_input_size,
        name="lstm",
        config={
            "hidden_size": hidden_size,
            "peephole": peephole,
            "proj_size": proj_size,
            "layer_norm": layer_norm,
            "forget_bias": forget_bias,
            "activation": activation,
            "gate_activation": gate_activation,
        },
        cudnn_layout=(
            CudnnLayout("lstm", hidden_size, proj_size or 0, to_weights, from_weights)
            if standard
            else None
        ),
    )
