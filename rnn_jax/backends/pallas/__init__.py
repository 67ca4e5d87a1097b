"""The ``pallas`` backend: Pallas kernels for GPU (Triton) and TPU (Mosaic), interpreted on CPUs.

- `fused`: the fused recurrent kernel for cells with `Gates` (LSTM, GRU, Elman
  and their block-diagonal multi-head forms): time loop inside the kernel,
  recurrent blocks on chip, a reverse-time backward kernel via ``custom_vjp``;
  its bodies in `fused_kernels`, the cell's step as jaxprs in `step_jaxprs`,
  evaluated on lane tiles by `lanes`.
- `linear_scan`: ``h_t = a_t * h_{t-1} + b_t`` over time blocks for cells with
  a `LinearRecurrence`, and its reverse-scan backward.
- `targets`: the GPU, TPU and CPU targets and the choice among them at
  lowering time.
- `backend`: the backend's ``supports`` and ``run``; this package is callable
  as its factory, ``rj.backends.pallas(block_time=64)``.
"""

from rnn_jax.backends.contract import callable_module, register
from rnn_jax.backends.pallas.backend import configure
from rnn_jax.backends.pallas.fused import fused_recurrence, fused_scan
from rnn_jax.backends.pallas.heads import dense_heads, head_view, recurrent_blocks
from rnn_jax.backends.pallas.linear_scan import linear_scan

DEFAULT = register(configure())
callable_module(__name__)

__all__ = [
    "configure",
    "dense_heads",
    "fused_recurrence",
    "fused_scan",
    "head_view",
    "linear_scan",
    "recurrent_blocks",
]
