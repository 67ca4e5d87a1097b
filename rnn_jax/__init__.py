"""rnn_jax: recurrent neural networks in JAX from pure functions, with fast scan kernels.

Example:
    >>> import jax, jax.numpy as jnp, rnn_jax as rj
    >>> cell = rj.lstm(64)
    >>> params = cell.init(jax.random.key(0), 16)
    >>> carry, ys = rj.scan(cell, params, jnp.ones((100, 8, 16)))
    >>> ys.shape
    (100, 8, 64)

The scan kernels are ``rj.backends``; training, models, tasks and diagnostics
are subpackages ``rj.train``, ``rj.models``, ``rj.data``, ``rj.diagnostics``;
``rj.app`` runs configured experiments (what the ``rnn-jax`` command line
drives) and ``rj.deploy`` exports trained models (``rj.export``). Those six load
at their first use, so ``import rnn_jax`` costs only the core (cells,
``rj.scan``, backends, layers).
"""

from importlib import import_module as _import_module

from rnn_jax import backends
from rnn_jax._driver import newton_scan, scan
from rnn_jax._explain import explain_auto
from rnn_jax.backends import Backend, NewtonInfo, Problem, flip_valid
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
    KerasLayout,
    KerasWeights,
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

# Subpackages above the core, imported by `__getattr__` when first named.
_SUBPACKAGES = ("app", "data", "deploy", "diagnostics", "models", "train")

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
    "KerasLayout",
    "KerasWeights",
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
    "explain_auto",
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


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        return _import_module(f"rnn_jax.{name}")  # which also binds it here
    if name == "export":  # rj.export, of rnn_jax.deploy
        return _import_module("rnn_jax.deploy").export
    raise AttributeError(f"module 'rnn_jax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_SUBPACKAGES, "export"})
