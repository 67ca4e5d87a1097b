"""Gated recurrent unit, with the reset gate after (cuDNN) or before the recurrent matmul."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnn_jax._validate import positive_int
from rnn_jax.cells.activations import resolve_activation
from rnn_jax.cells.arrays import add_bias, zeros_state
from rnn_jax.cells.bound import bound
from rnn_jax.cells.capabilities import Gates
from rnn_jax.cells.cell import Cell, split_cell
from rnn_jax.cells.config import Config
from rnn_jax.cells.dense import (
    DenseInit,
    identity,
    init_gate_weights,
    input_projection,
    kernel_input_size,
    recurrent_kernel,
)
from rnn_jax.cells.initializers import Initializer, glorot_uniform, stacked_orthogonal, zeros
from rnn_jax.cells.layouts import CudnnLayout, CudnnWeights, KerasLayout, KerasWeights


class GRUParams(NamedTuple):
    kernel: jax.Array  # [F, 3H], gates r, z, n
    recurrent_kernel: jax.Array  # [H, 3H]
    bias: jax.Array  # [3H]: the input bias
    recurrent_bias: jax.Array | None = None  # [3H], reset_after only (PyTorch's b_hh)


def init_gru(key, input_size, *, hidden_size: int, reset_after: bool, init: DenseInit):
    """``init`` of a GRU: the gate weights, and the recurrent bias with ``reset_after``."""
    k_weights, k_rbias = jax.random.split(key)
    kernel, recurrent, bias = init_gate_weights(k_weights, input_size, hidden_size, 3, init)
    recurrent_bias = (
        init.bias_init(k_rbias, (3 * hidden_size,), init.dtype) if reset_after else None
    )
    return GRUParams(kernel, recurrent, bias, recurrent_bias)


def combine_reset_after(params, h, xp, hu, *, act, gate):
    """``Gates.combine`` of a GRU with the reset after the matmul.

    It reads ``params.recurrent_bias`` only (of a `GRUParams`, or one head's)."""
    hu = add_bias(hu, params.recurrent_bias)
    xr, xz, xn = jnp.split(xp, 3, axis=-1)
    hr, hz, hn = jnp.split(hu, 3, axis=-1)
    r = gate(xr + hr)
    z = gate(xz + hz)
    n = act(xn + r * hn)
    h = (1.0 - z) * n + z * h
    return h, h


def recur_reset_before(params, h, xp, *, act, gate):
    """``recur`` of a GRU with the reset before the matmul: ``n = act(xn + (r * h) U_n)``."""
    H = h.shape[-1]
    u_rz, u_n = params.recurrent_kernel[:, : 2 * H], params.recurrent_kernel[:, 2 * H :]
    x_rz, xn = xp[..., : 2 * H], xp[..., 2 * H :]
    r, z = jnp.split(gate(x_rz + h @ u_rz), 2, axis=-1)
    n = act(xn + (r * h) @ u_n)
    h = (1.0 - z) * n + z * h
    return h, h


def gru_gates(act, gate) -> Gates:
    """The `Gates` of a GRU with the reset after the matmul."""
    combine = bound(combine_reset_after, act=act, gate=gate)
    return Gates(kernel=recurrent_kernel, fed_back=identity, combine=combine, blocks=3)


def _to_cudnn(params) -> CudnnWeights:
    return CudnnWeights(
        params.kernel.T, params.recurrent_kernel.T, params.bias, params.recurrent_bias
    )


def _from_cudnn(weights: CudnnWeights) -> GRUParams:
    return GRUParams(weights.weight_ih.T, weights.weight_hh.T, weights.bias_ih, weights.bias_hh)


def swap_zr(array: jax.Array) -> jax.Array:
    """Swaps the first two thirds' blocks of the last axis ``[..., 3H]``: Keras' GRU gates z, r,
    h to rnn_jax's r, z, n and back (the map is its own inverse)."""
    H = array.shape[-1] // 3
    return jnp.concatenate([array[..., H : 2 * H], array[..., :H], array[..., 2 * H :]], axis=-1)


def _to_keras(params) -> KerasWeights:
    bias = swap_zr(params.bias)
    if params.recurrent_bias is not None:  # reset_after: Keras' (2, 3H) bias
        bias = jnp.stack([bias, swap_zr(params.recurrent_bias)])
    return KerasWeights(swap_zr(params.kernel), swap_zr(params.recurrent_kernel), bias)


def _from_keras(weights: KerasWeights, *, reset_after: bool) -> GRUParams:
    bias = weights.bias
    input_bias, recurrent_bias = (bias[0], swap_zr(bias[1])) if reset_after else (bias, None)
    return GRUParams(
        swap_zr(weights.kernel),
        swap_zr(weights.recurrent_kernel),
        swap_zr(input_bias),
        recurrent_bias,
    )


def _layouts(hidden_size: int, reset_after: bool, act, gate, config: Config) -> dict:
    """The cuDNN/PyTorch layout (reset after, default activations) and Keras' GRU layout (gates
    z, r, h; with reset_after one ``(2, 3H)`` bias)."""
    standard = reset_after and act is jnp.tanh and gate is jax.nn.sigmoid
    arguments = Config(
        units=hidden_size,
        activation=config["activation"],
        recurrent_activation=config["gate_activation"],
        reset_after=reset_after,
    )
    return {
        "cudnn_layout": (
            CudnnLayout("gru", hidden_size, 0, _to_cudnn, _from_cudnn) if standard else None
        ),
        "keras_layout": KerasLayout(
            "GRU", arguments, _to_keras, bound(_from_keras, reset_after=reset_after)
        ),
    }


def gru(
    hidden_size: int,
    *,
    reset_after: bool = True,
    activation: str | Callable[[jax.Array], jax.Array] = "tanh",
    gate_activation: str | Callable[[jax.Array], jax.Array] = "sigmoid",
    kernel_init: Initializer = glorot_uniform,
    recurrent_init: Initializer = stacked_orthogonal,
    bias_init: Initializer = zeros,
    dtype=jnp.float32,
) -> Cell:
    """GRU cell (Cho et al. 2014), gate order r, z, n.

    ``reset_after=True`` (PyTorch, cuDNN and Keras default) applies the reset
    gate after the recurrent matmul, ``n = act(x W_n + b_n + r * (h U_n + c_n))``,
    with a separate recurrent bias; ``reset_after=False`` is the original
    ``n = act(x W_n + b_n + (r * h) U_n)``. In both, ``h' = (1 - z) * n + z * h``.
    Carry and output: ``h: [*batch, hidden_size]``.

    Example:
        >>> cell = rj.gru(64, reset_after=False)
        >>> params = cell.init(jax.random.key(0), 16)
        >>> params.kernel.shape
        (16, 192)
    """
    positive_int("hidden_size", hidden_size)
    act = resolve_activation("activation", activation)
    gate = resolve_activation("gate_activation", gate_activation)
    config = Config(
        hidden_size=hidden_size,
        reset_after=reset_after,
        activation=activation,
        gate_activation=gate_activation,
    )
    # reset_before needs a second matmul after the reset gate, so it has no Gates split.
    split = (
        {"gates": gru_gates(act, gate)}
        if reset_after
        else {"recur": bound(recur_reset_before, act=act, gate=gate)}
    )
    init = DenseInit(kernel_init, recurrent_init, bias_init, dtype)
    return split_cell(
        init=bound(init_gru, hidden_size=hidden_size, reset_after=reset_after, init=init),
        initial_state=zeros_state(hidden_size),
        project=input_projection,
        **split,
        input_size=kernel_input_size,
        name="gru",
        config=config,
        **_layouts(hidden_size, reset_after, act, gate, config),
    )
