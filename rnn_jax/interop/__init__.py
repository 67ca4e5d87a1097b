"""Weights in and out of other frameworks.

Each framework has its own submodule, imported on demand so that
``import rnn_jax`` never imports the framework itself::

    import rnn_jax.interop.torch as rjt
    layer, params = rjt.from_torch(torch.nn.LSTM(16, 32, num_layers=2))

    import rnn_jax.interop.keras as rjk     # Keras 3, any backend (KERAS_BACKEND=jax to run it)
    layer, params = rjk.from_keras(keras_model)
"""

from __future__ import annotations

import importlib

__all__ = ["keras", "torch"]


def __getattr__(name: str):
    # ``rj.interop.torch`` imports PyTorch (``.keras`` Keras) only when first asked for.
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
