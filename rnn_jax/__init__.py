"""rnn_jax: recurrent neural networks in JAX from pure functions, with fast scan kernels.

Example:
    >>> import jax, jax.numpy as jnp, rnn_jax as rj
    >>> cell = rj.lstm(64)
    >>> params = cell.init(jax.random.key(0), 16)
    >>> carry, ys = rj.scan(cell, params, jnp.ones((100, 8, 16)))
    >>> ys.shape
    (100, 8, 64)

Training, models, tasks and diagnostics are subpackages: ``rj.train``,
``rj.models``, ``rj.data``, ``rj.diagnostics`` (and the ``rnn-jax`` command line).
"""

from rnn_jax import app, data, diagnostics, models, train
from rnn_jax._driver import scan
from rnn_jax.backends import (
    Backend,
    NewtonInfo,
    backend_names,
    flip_valid,
    get_backend,
    newton_backend,
    newton_scan,
    parallel_backend,
    register_backend,
)
from rnn_jax.cells import (
    Cell,
    Gates,
    GRUParams,
    IndRNNParams,
    LayerNormParams,
    LinearRecurrence,
    LRUParams,
    LSTMParams,
    LSTMState,
    MGUParams,
    MinGRUParams,
    MinLSTMParams,
    RGLRUParams,
    SimpleParams,
    gru,
    indrnn,
    lru,
    lstm,
    mgu,
    min_gru,
    min_lstm,
    rg_lru,
    simple,
    split_cell,
)
from rnn_jax.cells.multihead import MultiHeadParams, multihead_gru, multihead_lstm, multihead_simple
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
    "Gates",
    "GRUParams",
    "IndRNNParams",
    "LRUParams",
    "LSTMParams",
    "LSTMState",
    "Layer",
    "LayerNormParams",
    "LinearRecurrence",
    "MGUParams",
    "NewtonInfo",
    "MinGRUParams",
    "MinLSTMParams",
    "MultiHeadParams",
    "RGLRUParams",
    "SimpleParams",
    "app",
    "as_layer",
    "backend_names",
    "bidirectional",
    "count_params",
    "data",
    "diagnostics",
    "flip_valid",
    "get_backend",
    "gru",
    "indrnn",
    "lru",
    "lstm",
    "mgu",
    "models",
    "newton_backend",
    "newton_scan",
    "min_gru",
    "min_lstm",
    "multihead_gru",
    "multihead_lstm",
    "multihead_simple",
    "parallel_backend",
    "register_backend",
    "reversed_layer",
    "rg_lru",
    "rnn",
    "scan",
    "simple",
    "split_cell",
    "stack",
    "summary",
    "train",
]
