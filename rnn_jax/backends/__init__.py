"""The scan kernels (backends) behind ``rj.scan``, one module each.

Every module is callable as its backend's factory::

    rj.scan(cell, params, xs, backend="sequential")                     # defaults
    rj.scan(cell, params, xs, backend=rj.backends.sequential(chunk=8))  # configured

- `reference`: the plain ``lax.scan`` over ``cell.step``, the oracle.
- `sequential`: ``lax.scan`` with hoisted projections and a custom backward pass.
- `checkpointed`: backpropagation through time in O(√T) memory.
- `parallel`: parallel scans over linear recurrences.
- `newton`: DEER / quasi-DEER Newton iterations, parallel in time for any cell.
- `pallas`: fused kernels for GPU and TPU.
- `cudnn`: cuDNN's LSTM through ``jax.experimental.rnn``.
- `sharded`: the time axis of a linear recurrence split across devices.

The contract between them and the driver is in `rnn_jax.backends.contract`;
``auto`` (`rnn_jax.backends.auto`) picks one from measurements.
"""

from rnn_jax.backends import (
    checkpointed,
    cudnn,
    newton,
    pallas,
    parallel,
    reference,
    sequential,
    sharded,
)
from rnn_jax.backends.contract import Backend, Problem, get, names, register
from rnn_jax.backends.masking import flip_valid
from rnn_jax.backends.newton import NewtonInfo, newton_scan

__all__ = [
    "Backend",
    "NewtonInfo",
    "Problem",
    "checkpointed",
    "cudnn",
    "flip_valid",
    "get",
    "names",
    "newton",
    "newton_scan",
    "pallas",
    "parallel",
    "reference",
    "register",
    "sequential",
    "sharded",
]
