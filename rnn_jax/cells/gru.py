"""Gated recurrent unit, with the reset gate after (cuDNN) or before the recurrent matmul."""

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
    check_positive_int,
    glorot_uniform,
    resolve_activation,
    split_cell,
    stacked_orthogonal,
    zeros,
    zeros_state,
)
from rnn_jax.cells.dense import (
    identity,
    init_gate_weights,
    input_projection,
    kernel_input_size,
    recurrent_kernel,
)


class GRUParams(NamedTuple):
    kernel: jax.Array  # [F, 3H], gates r, z, n
    recurrent_kernel: jax.Array  # [H, 3H]
    bias: jax.Array  # [3H]: the input bias
    recurrent_bias: jax.Array | None = None  # [3H], reset_after only (PyTorch's b_hh)


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
    check_positive_int("hidden_size", hidden_size)
    act = resolve_activation("activation", activation)
    gate = resolve_activation("gate_activation", gate_activation)
    H = hidden_size

    def init(key, input_size):
        k_weights, k_rbias = jax.random.split(key)
        kernel, recurrent, bias = init_gate_weights(
            k_weights,
            input_size,
            H,
            3,
            kernel_init=kernel_init,
            recurrent_init=recurrent_init,
            bias_init=bias_init,
            dtype=dtype,
        )
        recurrent_bias = bias_init(k_rbias, (3 * H,), dtype) if reset_after else None
        return GRUParams(kernel, recurrent, bias, recurrent_bias)

    def combine_reset_after(params, h, xp, hu):
        hu = add_bias(hu, params.recurrent_bias)
        xr, xz, xn = jnp.split(xp, 3, axis=-1)
        hr, hz, hn = jnp.split(hu, 3, axis=-1)
        r = gate(xr + hr)
        z = gate(xz + hz)
        n = act(xn + r * hn)
        h = (1.0 - z) * n + z * h
        return h, h

    def recur_reset_before(params, h, xp):
        u_rz, u_n = params.recurrent_kernel[:, : 2 * H], params.recurrent_kernel[:, 2 * H :]
        x_rz, xn = xp[..., : 2 * H], xp[..., 2 * H :]
        r, z = jnp.split(gate(x_rz + h @ u_rz), 2, axis=-1)
        n = act(xn + (r * h) @ u_n)
        h = (1.0 - z) * n + z * h
        return h, h

    # reset_before needs a second matmul after the reset gate, so it has no Gates split.
    split = (
        {"gates": Gates(kernel=recurrent_kernel, fed_back=identity, combine=combine_reset_after)}
        if reset_after
        else {"recur": recur_reset_before}
    )

    def to_weights(params) -> CudnnWeights:
        return CudnnWeights(
            params.kernel.T, params.recurrent_kernel.T, params.bias, params.recurrent_bias
        )

    def from_weights(weights: CudnnWeights) -> GRUParams:
        return GRUParams(weights.weight_ih.T, weights.weight_hh.T, weights.bias_ih, weights.bias_hh)

    # cuDNN's and PyTorch's GRU: reset after the matmul, default activations.
    standard = reset_after and act is jnp.tanh and gate is jax.nn.sigmoid
    return split_cell(
        init=init,
        initial_state=zeros_state(H),
        project=input_projection,
        **split,
        input_size=kernel_input_size,
        name="gru",
        config={
            "hidden_size": hidden_size,
            "reset_after": reset_after,
            "activation": activation,
            "gate_activation": gate_activation,
        },
        cudnn_layout=CudnnLayout("gru", H, 0, to_weights, from_weights) if standard else None,
    )
