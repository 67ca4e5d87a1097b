"""The scan kernels (backends) behind ``rj.scan``: one module each, one class each.

A backend is a frozen dataclass of its options (`Backend`); ``rj.scan`` takes
one, or its name for the defaults::

    rj.scan(cell, params, xs, backend="sequential")                     # defaults
    rj.scan(cell, params, xs, backend=rj.backends.Sequential(chunk=8))  # configured

- `Reference` (`reference`): the plain ``lax.scan`` over ``cell.step``, the oracle.
- `Sequential` (`sequential`): ``lax.scan`` with hoisted projections and a custom
  backward pass.
- `Checkpointed` (`checkpointed`): backpropagation through time in O(√T) memory.
- `Parallel` (`parallel`): parallel scans over linear recurrences.
- `Newton` (`newton`): DEER / quasi-DEER Newton iterations, parallel in time for any cell.
- `Sharded` (`sharded`): the time axis of a linear recurrence split across devices.
- `Pallas` (`pallas`): fused kernels for GPU and TPU.
- `Cudnn` (`cudnn`): cuDNN's LSTM through ``jax.experimental.rnn``.
- `OneDNN` (`onednn`): oneDNN's RNN, LSTM and GRU on the CPU, through XLA's FFI.

The contract between them and the driver is in `rnn_jax.backends.contract`,
the names in `rnn_jax.backends.registry`; ``auto`` (`rnn_jax.backends.auto`)
picks one from measurements. `Pallas`, `Cudnn` and `OneDNN` (and their modules)
are imported on first use, so ``import rnn_jax`` does not import Pallas or load
oneDNN.
"""

import importlib

from rnn_jax.backends.checkpointed import Checkpointed
from rnn_jax.backends.contract import Backend, Problem
from rnn_jax.backends.masking import flip_valid
from rnn_jax.backends.newton import Newton, NewtonInfo
from rnn_jax.backends.parallel import Parallel
from rnn_jax.backends.reference import Reference
from rnn_jax.backends.registry import get, names, register
from rnn_jax.backends.sequential import Sequential
from rnn_jax.backends.sharded import Sharded

_ON_FIRST_USE = {
    "Pallas": "rnn_jax.backends.pallas.backend",
    "Cudnn": "rnn_jax.backends.cudnn",
    "OneDNN": "rnn_jax.backends.onednn",
    "pallas": "rnn_jax.backends.pallas",
    "cudnn": "rnn_jax.backends.cudnn",
    "onednn": "rnn_jax.backends.onednn",
}


def __getattr__(name: str):
    if name not in _ON_FIRST_USE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(_ON_FIRST_USE[name])
    return module if name.islower() else getattr(module, name)


def __dir__():
    return sorted({*globals(), *_ON_FIRST_USE})


__all__ = [
    "Backend",
    "Checkpointed",
    "Cudnn",
    "Newton",
    "NewtonInfo",
    "OneDNN",
    "Pallas",
    "Parallel",
    "Problem",
    "Reference",
    "Sequential",
    "Sharded",
    "flip_valid",
    "get",
    "names",
    "register",
]
