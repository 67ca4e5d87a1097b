"""The ``pallas`` backend: Pallas kernels for GPU (Triton) and TPU (Mosaic), interpreted on CPUs.

- `fused`: the fused recurrent kernel for cells with `Gates` (LSTM, GRU, Elman
  and their block-diagonal multi-head forms): time loop inside the kernel,
  recurrent blocks on chip, a reverse-time backward kernel via ``custom_vjp``;
  its bodies in `fused_kernels`, the cell's step as jaxprs in `step_jaxprs`,
  evaluated on lane tiles by `lanes`.
- `linear_scan`: ``h_t = a_t * h_{t-1} + b_t`` over time blocks for cells with
  a `LinearRecurrence`, and its reverse-scan backward.
- `plans`: each pass's launch on each target, its blocks checked against the
  chip's memory as the compilers count it; `refusal`: why a case does not
  fit, in words.
- `targets`: the GPU, TPU and CPU targets and the choice among them at
  lowering time.
- `backend`: the backend, `Pallas`: ``rj.backends.Pallas(block_time=64)``.
"""

from rnn_jax.backends.pallas.backend import Pallas
from rnn_jax.backends.pallas.fused import fused_recurrence, fused_scan
from rnn_jax.backends.pallas.heads import dense_heads, head_view, recurrent_blocks
from rnn_jax.backends.pallas.linear_scan import linear_scan

__all__ = [
    "Pallas",
    "dense_heads",
    "fused_recurrence",
    "fused_scan",
    "head_view",
    "linear_scan",
    "recurrent_blocks",
]
