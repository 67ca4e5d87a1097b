"""The ``pallas`` backend: the fused recurrent kernel or the linear-scan kernel, per cell.

- Cells with a `LinearRecurrence` (minGRU, minLSTM, LRU, RG-LRU) run the
  linear-scan kernel: only elementwise work per step, over time blocks.
- Cells with `Gates` (LSTM, GRU, Elman, the multi-head cells) run the fused
  recurrent kernel: one program per (head, batch tile) with that head's block
  of the recurrent matrix on chip.
- Other cells are refused with a ValueError naming the cell and the backend.

On GPU and TPU the kernels are compiled; elsewhere (CPU) they run with
``interpret=True``, which is for tests: ``backend="auto"`` never picks
``pallas`` without measurements showing it faster on the platform.

Example:
    >>> from rnn_jax.backends.pallas import pallas
    >>> cell = rj.gru(16)
    >>> params = cell.init(jax.random.key(0), 8)
    >>> tuned = pallas(block_time=64)      # or backend="pallas" for the defaults
    >>> carry, ys = rj.scan(cell, params, jnp.ones((10, 4, 8)), backend=tuned)
"""

from __future__ import annotations

from rnn_jax.backends.pallas.fused import fused_scan
from rnn_jax.backends.pallas.linear_scan import LinearScanOptions, linear_cell_scan
from rnn_jax.backends.pallas.platform import check_block
from rnn_jax.backends.registry import Backend, register_backend

KERNELS = ("auto", "fused", "linear")


def pallas(
    *,
    kernel: str = "auto",
    block_batch: int | None = None,
    block_time: int | None = None,
    block_features: int | None = None,
    interpret: bool | None = None,
) -> Backend:
    """A configured ``pallas`` backend.

    Args:
        kernel: ``"auto"`` (the linear-scan kernel for cells with ``linear``,
            else the fused kernel for cells with ``gates``), ``"fused"`` or
            ``"linear"``.
        block_batch: rows per batch tile (the batch is padded to a multiple);
            None: the platform default (the whole batch in interpret mode, 16 on
            GPU, up to 128 on TPU).
        block_time: steps per time block, streamed through one program in
            turn while the carry stays on chip (TPU and interpret mode; on GPU
            one block covers the sequence). None: the platform default.
        block_features: features per tile of the linear-scan kernel.
        interpret: run the kernels with ``interpret=True``; None: only when the
            default platform is neither GPU nor TPU.

    The ``unroll`` argument of `rj.scan` unrolls the fused kernel's in-kernel
    time loop (within a time block); the linear-scan kernel ignores it.
    """
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}; got {kernel!r}")
    for name, value in (
        ("block_batch", block_batch),
        ("block_time", block_time),
        ("block_features", block_features),
    ):
        check_block(name, value)
    linear_options = LinearScanOptions(block_batch, block_time, block_features, interpret)

    def run(cell, params, xs, *, initial_state, length, reverse, unroll):
        use_linear = kernel == "linear" or (kernel == "auto" and cell.linear is not None)
        if use_linear:
            return linear_cell_scan(
                cell,
                params,
                xs,
                initial_state=initial_state,
                length=length,
                reverse=reverse,
                options=linear_options,
            )
        if kernel == "auto" and cell.gates is None:
            raise ValueError(
                f"the pallas backend needs a cell with `gates` (fused recurrent kernel) or "
                f"`linear` (linear-scan kernel); the {cell.name} cell has neither"
            )
        return fused_scan(
            cell,
            params,
            xs,
            initial_state=initial_state,
            length=length,
            reverse=reverse,
            block_batch=block_batch,
            block_time=block_time,
            interpret=interpret,
            unroll=unroll,
        )

    return Backend("pallas", run)


default = register_backend(pallas())
