"""Pallas kernels for GPU and TPU (run with ``interpret=True`` elsewhere, for tests).

- `fused`: the fused recurrent kernel for cells with `Gates` (LSTM, GRU, Elman
  and their block-diagonal multi-head forms): time loop inside the kernel,
  recurrent blocks on chip, a reverse-time backward kernel via ``custom_vjp``.
- `linear_scan`: ``h_t = a_t * h_{t-1} + b_t`` over time blocks for cells with
  a `LinearRecurrence`, and its reverse-scan backward.
- `backend`: the ``pallas`` backend (registered on import) and its factory.
"""

from rnn_jax.backends.pallas.backend import pallas
from rnn_jax.backends.pallas.fused import fused_recurrence, fused_scan
from rnn_jax.backends.pallas.heads import dense_heads, head_view, recurrent_blocks
from rnn_jax.backends.pallas.linear_scan import linear_cell_scan, linear_scan

__all__ = [
    "dense_heads",
    "fused_recurrence",
    "fused_scan",
    "head_view",
    "linear_cell_scan",
    "linear_scan",
    "pallas",
    "recurrent_blocks",
]
