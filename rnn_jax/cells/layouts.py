"""Declared weight layouts of other libraries: the capability of computing exactly their cells.

A cell that computes exactly what cuDNN/PyTorch's ``RNN``/``LSTM``/``GRU``
computes declares a `CudnnLayout`; one that computes exactly a Keras 3
recurrent layer declares a `KerasLayout`. The ``cudnn`` backend and the
PyTorch, Equinox and Keras converters read these, never the cell's name;
each layout says how the library names and lays out the weights and maps
them to and from the cell's params.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax

from rnn_jax.cells.capabilities import Params
from rnn_jax.cells.config import Config


class CudnnWeights(NamedTuple):
    """One layer and direction of a cuDNN/PyTorch RNN, in PyTorch's names and shapes.

    ``G`` gates (1 for RNN, 4 for LSTM in order i, f, g, o; 3 for GRU in
    order r, z, n), ``H`` hidden units, ``F`` inputs, ``R`` fed-back units
    (``proj_size`` for an LSTM with a projection, else ``H``).
    """

    weight_ih: jax.Array  # [G*H, F]
    weight_hh: jax.Array  # [G*H, R]
    bias_ih: jax.Array  # [G*H]
    bias_hh: jax.Array  # [G*H]
    weight_hr: jax.Array | None = None  # [P, H]: LSTM with proj_size only


class CudnnLayout(NamedTuple):
    """The capability of computing exactly cuDNN's (and PyTorch's) RNN of ``mode``.

    - ``mode``: ``"rnn_tanh"``, ``"rnn_relu"``, ``"lstm"`` or ``"gru"``
      (PyTorch's ``nn.RNN`` with that nonlinearity, ``nn.LSTM``, ``nn.GRU``).
    - ``hidden_size``, ``proj_size`` (0 without a projection; cuDNN's RNN
      API in JAX has none, PyTorch has).
    - ``to_weights(params) -> CudnnWeights`` and ``from_weights(weights) -> params``.
    """

    mode: str
    hidden_size: int
    proj_size: int
    to_weights: Callable[[Params], CudnnWeights]
    from_weights: Callable[[CudnnWeights], Params]


class KerasWeights(NamedTuple):
    """One Keras 3 recurrent cell's weights, by Keras' names and in its layout.

    ``G`` gates in Keras' order (LSTM and ConvLSTM i, f, c, o; GRU z, r, h),
    ``H`` units (filters), ``F`` inputs (channels), ``k`` the kernel's
    spatial shape (none for the dense cells).
    """

    kernel: jax.Array  # [*k, F, G*H]
    recurrent_kernel: jax.Array  # [*k, H, G*H]
    bias: jax.Array  # [G*H], or [2, G*H] for a GRU with reset_after: input, then recurrent


class KerasLayout(NamedTuple):
    """The capability of computing exactly the Keras 3 layer ``layer``.

    - ``layer``: the name of its class in ``keras.layers`` (``"SimpleRNN"``,
      ``"LSTM"``, ``"GRU"``, ``"ConvLSTM1D"``, ``"ConvLSTM2D"``, ``"ConvLSTM3D"``).
    - ``arguments``: its constructor's arguments that set what it computes
      (``units`` or ``filters``, ``activation``, ``recurrent_activation``,
      ``reset_after``, ``kernel_size``, ``strides``, ``padding``,
      ``dilation_rate``), activations as the cell was given them (a name or
      a function), for the converter to name in Keras' words.
    - ``to_weights(params) -> KerasWeights`` and ``from_weights(weights) -> params``.
    - ``spatial_shape``: the spatial axes of one step's input, which Keras builds a
      ConvLSTM for: ``()`` for the dense cells, a conv_lstm's ``spatial_shape``
      (None where the cell takes it from its input).

    Example:
        >>> layout = rj.gru(8).keras_layout
        >>> layout.layer, layout.arguments["reset_after"]
        ('GRU', True)
    """

    layer: str
    arguments: Config
    to_weights: Callable[[Params], KerasWeights]
    from_weights: Callable[[KerasWeights], Params]
    spatial_shape: tuple[int, ...] | None = ()
