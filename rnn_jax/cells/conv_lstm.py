"""Convolutional LSTM (Shi et al. 2015): an LSTM whose matmuls are convolutions.

Inputs are images of 1, 2 or 3 spatial axes, ``[*batch, *spatial, channels]``
(the cell's ``feature_rank`` is the number of spatial axes plus one); the
gates are, as in Keras' ``ConvLSTM1D/2D/3D``,

    z = conv(x, W; strides, padding, dilation_rate) + b + conv(h, U; stride 1, "same")
    i, f, g, o = split(z)    c = gate(f) c + gate(i) act(g)    h = gate(o) act(c)

with the gate order i, f, g, o and the kernels ``[*kernel_size, in, 4F]`` of
Keras (so its weights load unchanged); the gate arithmetic is `rj.lstm`'s own.
The state has the spatial shape of the input convolution's output: the
input's own with ``"same"`` padding and stride 1, smaller with ``"valid"``
padding or strides. Shi et al.'s peepholes (``W_c * c``, elementwise over the
image) are not part of it, as they are not of Keras's and Flax's cells.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnn_jax._validate import one_of, positive_int
from rnn_jax.cells.activations import resolve_activation
from rnn_jax.cells.arrays import add_bias, dtype_of
from rnn_jax.cells.bound import bound
from rnn_jax.cells.cell import Cell, split_cell
from rnn_jax.cells.config import Config
from rnn_jax.cells.dense import same_keras_weights
from rnn_jax.cells.initializers import Initializer, glorot_uniform, orthogonal, zeros
from rnn_jax.cells.layouts import KerasLayout
from rnn_jax.cells.lstm import LSTMOptions, LSTMState, combine

PADDINGS = ("same", "valid")
_SPATIAL = "DHW"  # the spatial axes' letters in lax's dimension numbers, the last `rank` of them


class ConvLSTMParams(NamedTuple):
    kernel: jax.Array  # [*kernel_size, C, 4F]: the input convolution, gates i, f, g, o
    recurrent_kernel: jax.Array  # [*kernel_size, F, 4F]: the state convolution
    bias: jax.Array  # [4F]


class Convolution(NamedTuple):
    """The input convolution of a ConvLSTM: one entry per spatial axis."""

    kernel_size: tuple[int, ...]
    strides: tuple[int, ...]
    padding: str  # "same" or "valid"
    dilation_rate: tuple[int, ...]
    spatial_shape: tuple[int, ...] | None  # the input's, where fixed at construction

    @property
    def rank(self) -> int:
        return len(self.kernel_size)

    def output_shape(self, spatial: Sequence[int]) -> tuple[int, ...]:
        """The spatial shape this convolution makes of ``spatial`` (the state's)."""
        if self.padding == "same":
            return tuple(-(-n // s) for n, s in zip(spatial, self.strides, strict=True))
        reach = [d * (k - 1) + 1 for k, d in zip(self.kernel_size, self.dilation_rate, strict=True)]
        return tuple((n - r) // s + 1 for n, r, s in zip(spatial, reach, self.strides, strict=True))


def convolve(x: jax.Array, kernel: jax.Array, strides, padding: str, dilation) -> jax.Array:
    """``x [*lead, *spatial, C]`` convolved with ``kernel [*k, C, O]`` over any leading axes."""
    rank = kernel.ndim - 2
    lead, image = x.shape[: x.ndim - rank - 1], x.shape[x.ndim - rank - 1 :]
    letters = _SPATIAL[3 - rank :]
    y = jax.lax.conv_general_dilated(
        x.reshape(-1, *image),
        kernel,
        window_strides=strides,
        padding=padding.upper(),
        rhs_dilation=dilation,
        dimension_numbers=(f"N{letters}C", f"{letters}IO", f"N{letters}C"),
    )
    return y.reshape(*lead, *y.shape[1:])


def init_conv_lstm(key, input_size, *, features, conv: Convolution, forget_bias, inits, dtype):
    """``init``: Keras' kernels ``[*k, C, 4F]``, ``[*k, F, 4F]`` and the bias, forget gate
    offset by ``forget_bias``."""
    positive_int("input_size", input_size)
    kernel_init, recurrent_init, bias_init = inits
    k_in, k_rec, k_bias = jax.random.split(key, 3)
    F, k = features, conv.kernel_size
    return ConvLSTMParams(
        kernel=kernel_init(k_in, (*k, input_size, 4 * F), dtype),
        recurrent_kernel=recurrent_init(k_rec, (*k, F, 4 * F), dtype),
        bias=bias_init(k_bias, (4 * F,), dtype).at[F : 2 * F].add(forget_bias),
    )


def state_spatial(conv: Convolution, spatial: tuple[int, ...]) -> tuple[int, ...]:
    """The state's spatial shape for input images of ``spatial``, checked against the cell's
    ``spatial_shape`` and the kernel's reach."""
    if conv.spatial_shape is not None and spatial != conv.spatial_shape:
        raise ValueError(
            f"x must have images of spatial_shape {conv.spatial_shape} in its axes "
            f"{-conv.rank - 1} to -2 for the conv_lstm cell; got spatial shape {spatial}"
        )
    out = conv.output_shape(spatial)
    if min(out, default=1) < 1:
        raise ValueError(
            f"x's images of spatial shape {spatial} are smaller than the conv_lstm cell's "
            f"kernel_size={conv.kernel_size} with dilation_rate={conv.dilation_rate} reaches "
            f"under padding='valid'"
        )
    return out


def state_for_input(params, step_shape, *, features: int, conv: Convolution) -> LSTMState:
    """The zero carry for one step's inputs ``[*batch, *spatial, C]``: ``h`` and ``c`` both
    ``[*batch, *out_spatial, F]``."""
    batch, spatial = step_shape[: -conv.rank - 1], tuple(step_shape[-conv.rank - 1 : -1])
    zero = jnp.zeros((*batch, *state_spatial(conv, spatial), features), dtype_of(params))
    return LSTMState(zero, zero)


def conv_lstm_state(params, batch_shape=(), *, features: int, conv: Convolution) -> LSTMState:
    """``initial_state`` for a batch shape: needs ``spatial_shape``, given at construction."""
    if conv.spatial_shape is None:
        raise ValueError(
            "the conv_lstm cell built without spatial_shape learns its images' size from its "
            "input: take its initial state with rj.cells.initial_carry(cell, params, x.shape) "
            "for one step's x (rj.scan and the layers do), or build it with spatial_shape="
        )
    step_shape = (*tuple(batch_shape), *conv.spatial_shape, 0)
    return state_for_input(params, step_shape, features=features, conv=conv)


def project(params: ConvLSTMParams, x, *, conv: Convolution):
    """The input convolution plus the bias, for all steps at once: ``[..., *out, 4F]``."""
    y = convolve(x, params.kernel, conv.strides, conv.padding, conv.dilation_rate)
    return add_bias(y, params.bias)


def recur(params: ConvLSTMParams, carry: LSTMState, xp, *, options: LSTMOptions):
    """The state convolution (stride 1, "same"), then the LSTM's gate arithmetic."""
    ones = (1,) * (params.recurrent_kernel.ndim - 2)
    hu = convolve(carry.h, params.recurrent_kernel, ones, "same", ones)
    return combine(params, carry, xp, hu, options=options)


def channels(params: ConvLSTMParams) -> int:
    """The input channels the kernel expects."""
    return params.kernel.shape[-2]


def _per_axis(name: str, value, rank: int) -> tuple[int, ...]:
    items = (value,) * rank if isinstance(value, int) else tuple(value)
    for item in items:
        positive_int(name, item)
    return items


def convolution(kernel_size, strides, padding, dilation_rate, spatial_shape) -> Convolution:
    """The checked `Convolution`. The number of spatial axes comes from whichever of
    ``kernel_size``, ``strides``, ``dilation_rate`` and ``spatial_shape`` is a tuple (they
    must agree); an int stands for the same value on every axis."""
    given = {
        "kernel_size": kernel_size,
        "strides": strides,
        "dilation_rate": dilation_rate,
        "spatial_shape": spatial_shape,
    }
    tuples = {k: tuple(v) for k, v in given.items() if v is not None and not isinstance(v, int)}
    ranks = {len(value) for value in tuples.values()}
    if len(ranks) != 1 or not 1 <= min(ranks) <= 3:
        raise ValueError(
            "kernel_size, strides, dilation_rate and spatial_shape must give the number of "
            "spatial axes (1, 2 or 3), as tuples of one int per axis that agree; got "
            + (", ".join(f"{k}={v}" for k, v in tuples.items()) or "ints only")
        )
    rank = ranks.pop()
    per_axis = {k: _per_axis(k, v, rank) for k, v in given.items() if v is not None}
    return Convolution(
        kernel_size=per_axis["kernel_size"],
        strides=per_axis["strides"],
        padding=one_of("padding", str(padding).lower(), PADDINGS),
        dilation_rate=per_axis["dilation_rate"],
        spatial_shape=per_axis.get("spatial_shape"),
    )


def conv_lstm(
    features: int,
    kernel_size: int | Sequence[int],
    *,
    spatial_shape: Sequence[int] | None = None,
    strides: int | Sequence[int] = 1,
    padding: str = "same",
    dilation_rate: int | Sequence[int] = 1,
    forget_bias: float = 1.0,
    activation: str | Callable[[jax.Array], jax.Array] = "tanh",
    gate_activation: str | Callable[[jax.Array], jax.Array] = "sigmoid",
    kernel_init: Initializer = glorot_uniform,
    recurrent_init: Initializer = orthogonal,
    bias_init: Initializer = zeros,
    dtype=jnp.float32,
) -> Cell:
    """ConvLSTM cell (Shi et al. 2015) of ``features`` channels over 1-, 2- or 3-D images.

    ``xs: [T, *batch, *spatial, channels]``; carry ``LSTMState(h, c)``, both
    ``[*batch, *out_spatial, features]``; output ``h``. The input convolution
    takes ``strides``, ``padding`` (``"same"``, the default here, or
    ``"valid"``, Keras' default) and ``dilation_rate``; the state convolution
    has stride 1 and ``"same"`` padding, as in Keras' ``ConvLSTM1D/2D/3D``.
    ``kernel_size``, ``strides`` and ``dilation_rate`` are an int (every
    axis) or one int per spatial axis; a tuple among them, or
    ``spatial_shape``, gives the number of spatial axes. ``spatial_shape``
    (the input images' size) is optional: without it the cell takes the size
    from its input at the first step (`rnn_jax.cells.initial_carry`), as
    Keras and Flax do. The forget-gate bias starts at ``forget_bias``
    (Keras's ``unit_forget_bias``).

    Example:
        >>> cell = rj.conv_lstm(8, (3, 3), padding="valid", strides=2)
        >>> params = cell.init(jax.random.key(0), 3)
        >>> carry, ys = rj.scan(cell, params, jnp.ones((10, 2, 16, 16, 3)))
        >>> params.kernel.shape, ys.shape
        ((3, 3, 3, 32), (10, 2, 7, 7, 8))
    """
    positive_int("features", features)
    conv = convolution(kernel_size, strides, padding, dilation_rate, spatial_shape)
    config = Config(
        features=features,
        **conv._asdict(),
        forget_bias=forget_bias,
        activation=activation,
        gate_activation=gate_activation,
    )
    options = LSTMOptions(
        features,
        act=resolve_activation("activation", activation),
        gate=resolve_activation("gate_activation", gate_activation),
    )
    inits = (kernel_init, recurrent_init, bias_init)
    shape = {"features": features, "conv": conv}
    return split_cell(
        init=bound(init_conv_lstm, **shape, forget_bias=forget_bias, inits=inits, dtype=dtype),
        initial_state=bound(conv_lstm_state, **shape),
        project=bound(project, conv=conv),
        recur=bound(recur, options=options),
        input_size=channels,
        name="conv_lstm",
        config=config,
        feature_rank=conv.rank + 1,
        state_for_input=bound(state_for_input, **shape),
        keras_layout=KerasLayout(
            f"ConvLSTM{conv.rank}D",
            _keras_arguments(config),
            *same_keras_weights(ConvLSTMParams),
            spatial_shape=conv.spatial_shape,
        ),
    )


def _keras_arguments(config: Config) -> Config:
    """Keras' ConvLSTM constructor arguments of a conv_lstm ``config``."""
    names = ("kernel_size", "strides", "padding", "dilation_rate", "activation")
    return Config(
        {name: config[name] for name in names},
        filters=config["features"],
        recurrent_activation=config["gate_activation"],
    )


__all__ = ["ConvLSTMParams", "Convolution", "conv_lstm", "convolve"]
