"""Recurrent cells: one module per family, each a factory returning a `Cell`."""

from rnn_jax.cells.base import Cell, Gates, LinearRecurrence, split_cell
from rnn_jax.cells.gru import GRUParams, gru
from rnn_jax.cells.indrnn import IndRNNParams, indrnn
from rnn_jax.cells.lstm import LayerNormParams, LSTMParams, LSTMState, lstm
from rnn_jax.cells.mgu import MGUParams, mgu
from rnn_jax.cells.simple import SimpleParams, simple

__all__ = [
    "Cell",
    "Gates",
    "LinearRecurrence",
    "GRUParams",
    "IndRNNParams",
    "LSTMParams",
    "LSTMState",
    "LayerNormParams",
    "MGUParams",
    "SimpleParams",
    "gru",
    "indrnn",
    "lstm",
    "mgu",
    "simple",
    "split_cell",
]
