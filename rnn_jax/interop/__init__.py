"""Weights in and out of other frameworks.

Each framework has its own submodule, imported on demand so that
``import rnn_jax`` never imports the framework itself::

    import rnn_jax.interop.torch as rjt
    layer, params = rjt.from_torch(torch.nn.LSTM(16, 32, num_layers=2))
"""

from __future__ import annotations

import importlib

__all__ = ["torch"]


def __getattr__(name: str):
    # ``rj.interop.torch`` imports PyTorch only when first asked for.
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
