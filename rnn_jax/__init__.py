"""rnn_jax: recurrent neural networks in JAX from pure functions, with fast scan kernels.

Example:
    >>> import jax, jax.numpy as jnp, rnn_jax as rj
    >>> cell = rj.lstm(64)
    >>> params = cell.init(jax.random.key(0), 16)
    >>> carry, ys = rj.scan(cell, params, jnp.ones((100, 8, 16)))
    >>> ys.shape
    (100, 8, 64)

The scan kernels are ``rj.backends``; training, models, tasks and diagnostics
are subpackages ``rj.train``, ``rj.models``, ``rj.data``, ``rj.diagnostics``,
and ``rj.app`` runs configured experiments (what the ``rnn-jax`` command line
drives).
"""

from rnn_jax import app, backends, data, deploy, diagnostics, models, train
from rnn_jax._driver import scan
from rnn_jax.backends import Backend, NewtonInfo, Problem, flip_valid, newton_scan
from rnn_jax.backends import get as get_backend
from rnn_jax.backends import names as backend_names
from rnn_jax.backends import register as register_backend
from rnn_jax.cells import (
    Cell,
    Config,
    ConvLSTMParams,
    CudnnLayout,
    CudnnWeights,
    Gates,
    GRUParams,
    HeadedGates,
    IndRNNParams,
    LayerNormParams,
    LinearRecurrence,
    LRUParams,
    LSTMParams,
    LSTMState,
    MatrixMemory,
    MatrixMemoryState,
    MemoryInputs,
    MGUParams,
    MinGRUParams,
    MinLSTMParams,
    MLSTMParams,
    RGLRUParams,
    SimpleParams,
    SLSTMState,
    conv_lstm,
    gru,
    indrnn,
    lru,
    lstm,
    mgu,
    min_gru,
    min_lstm,
    mlstm,
    rg_lru,
    simple,
    slstm,
    split_cell,
    wrap_cell,
)
from rnn_jax.cells.multihead import MultiHeadParams, multihead_gru, multihead_lstm, multihead_simple
from rnn_jax.deploy import export
from rnn_jax.layers import (
    BidirectionalParams,
    Layer,
    as_layer,
    bidirectional,
    reversed_layer,
    rnn,
    stack,
)
from rnn_jax.summary import count_params, summary

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "BidirectionalParams",
    "Cell",
    "Config",
    "ConvLSTMParams",
    "CudnnLayout",
    "CudnnWeights",
    "Gates",
    "HeadedGates",
    "GRUParams",
    "IndRNNParams",
    "LRUParams",
    "LSTMParams",
    "LSTMState",
    "Layer",
    "LayerNormParams",
    "LinearRecurrence",
    "MGUParams",
    "MLSTMParams",
    "MatrixMemory",
    "MatrixMemoryState",
    "MemoryInputs",
    "NewtonInfo",
    "MinGRUParams",
    "MinLSTMParams",
    "MultiHeadParams",
    "Problem",
    "RGLRUParams",
    "SimpleParams",
    "SLSTMState",
    "app",
    "as_layer",
    "backend_names",
    "backends",
    "bidirectional",
    "conv_lstm",
    "count_params",
    "data",
    "deploy",
    "diagnostics",
    "export",
    "flip_valid",
    "get_backend",
    "gru",
    "indrnn",
    "lru",
    "lstm",
    "mgu",
    "models",
    "newton_scan",
    "min_gru",
    "min_lstm",
    "mlstm",
    "multihead_gru",
    "multihead_lstm",
    "multihead_simple",
    "register_backend",
    "reversed_layer",
    "rg_lru",
    "rnn",
    "scan",
    "simple",
    "slstm",
    "split_cell",
    "stack",
    "summary",
    "train",
    "wrap_cell",
]
