"""Recurrent cells: one module per family, each a factory returning a `Cell`.

The protocol and its builders are in `rnn_jax.cells.cell`, the typed
capabilities backends ask for in `rnn_jax.cells.capabilities`, other
libraries' weight layouts in `rnn_jax.cells.layouts`.
"""

from rnn_jax.cells.bound import bound
from rnn_jax.cells.capabilities import (
    Gates,
    HeadedGates,
    LinearRecurrence,
    MatrixMemory,
    MatrixMemoryState,
    MemoryInputs,
)
from rnn_jax.cells.cell import Cell, initial_carry, split_cell, wrap_cell
from rnn_jax.cells.config import Config
from rnn_jax.cells.conv_lstm import ConvLSTMParams, conv_lstm
from rnn_jax.cells.gru import GRUParams, gru
from rnn_jax.cells.indrnn import IndRNNParams, indrnn
from rnn_jax.cells.layouts import CudnnLayout, CudnnWeights, KerasLayout, KerasWeights
from rnn_jax.cells.lru import LRUParams, lru
from rnn_jax.cells.lstm import LayerNormParams, LSTMParams, LSTMState, lstm
from rnn_jax.cells.mgu import MGUParams, mgu
from rnn_jax.cells.min_gru import MinGRUParams, min_gru
from rnn_jax.cells.min_lstm import MinLSTMParams, min_lstm
from rnn_jax.cells.mlstm import MLSTMParams, mlstm
from rnn_jax.cells.multihead import MultiHeadParams, multihead_gru, multihead_lstm, multihead_simple
from rnn_jax.cells.registry import CELLS, cell_factory, cell_names, get_cell
from rnn_jax.cells.rg_lru import RGLRUParams, rg_lru
from rnn_jax.cells.simple import SimpleParams, simple
from rnn_jax.cells.slstm import SLSTMState, slstm

__all__ = [
    "CELLS",
    "Cell",
    "Config",
    "ConvLSTMParams",
    "CudnnLayout",
    "CudnnWeights",
    "Gates",
    "HeadedGates",
    "KerasLayout",
    "KerasWeights",
    "LinearRecurrence",
    "MatrixMemory",
    "MatrixMemoryState",
    "MemoryInputs",
    "GRUParams",
    "IndRNNParams",
    "LRUParams",
    "LSTMParams",
    "LSTMState",
    "LayerNormParams",
    "MGUParams",
    "MLSTMParams",
    "MinGRUParams",
    "MinLSTMParams",
    "MultiHeadParams",
    "RGLRUParams",
    "SimpleParams",
    "SLSTMState",
    "bound",
    "cell_factory",
    "cell_names",
    "conv_lstm",
    "get_cell",
    "gru",
    "indrnn",
    "initial_carry",
    "lru",
    "lstm",
    "mgu",
    "min_gru",
    "mlstm",
    "min_lstm",
    "multihead_gru",
    "multihead_lstm",
    "multihead_simple",
    "rg_lru",
    "simple",
    "slstm",
    "split_cell",
    "wrap_cell",
]
