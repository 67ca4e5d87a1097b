"""The ``pallas`` backend: the fused recurrent kernel or the linear-scan kernel, per cell.

- Cells with a `LinearRecurrence` (minGRU, minLSTM, LRU, RG-LRU) run the
  linear-scan kernel: only elementwise work per step, over time blocks.
- Cells with `Gates` and a projection (LSTM, GRU, Elman, the multi-head
  cells) run the fused recurrent kernel: one program per (head, batch tile)
  with that head's block of the recurrent matrix on chip.
- Other cells are refused by ``supports``, in words.

On GPU and TPU the kernels are compiled; elsewhere (CPU) they run with
``interpret=True``, which is for tests: ``backend="auto"`` never picks
``pallas`` without measurements showing it faster on the platform.

Example:
    >>> cell = rj.gru(16)
    >>> params = cell.init(jax.random.key(0), 8)
    >>> tuned = rj.backends.pallas(block_time=64)      # or backend="pallas" for the defaults
    >>> carry, ys = rj.scan(cell, params, jnp.ones((10, 4, 8)), backend=tuned)
"""

from __future__ import annotations

from functools import cache, partial

import jax

from rnn_jax.backends.contract import Backend, Problem
from rnn_jax.backends.pallas.fused import fused_scan
from rnn_jax.backends.pallas.linear_scan import LinearScanOptions, linear_cell_scan
from rnn_jax.backends.pallas.platform import check_block

KERNELS = ("auto", "fused", "linear")


def kernel_for(cell, kernel: str) -> str | None:
    """``"linear"`` or ``"fused"``: the kernel that runs ``cell``; None when none can."""
    if kernel in ("auto", "linear") and cell.linear is not None:
        return "linear"
    if kernel in ("auto", "fused") and cell.gates is not None and cell.project is not None:
        return "fused"
    return None


def supports(cell, problem: Problem, *, kernel: str) -> str | None:
    chosen = kernel_for(cell, kernel)
    if chosen is None:
        wanted = {
            "auto": "`gates` and `project` (fused kernel) or `linear` (linear-scan kernel)",
            "fused": "`gates` and `project` (the fused kernel)",
            "linear": "`linear` (the linear-scan kernel)",
        }[kernel]
        return f"it has no {wanted}"
    if chosen == "linear" and jax.tree.structure(problem.initial_state).num_leaves != 1:
        return "the linear-scan kernel needs a carry that is one array h [*batch, H]"
    if chosen == "fused" and problem.valid is not None and problem.length is None:
        return "the fused kernel takes lengths (right padding), not masks with holes"
    if chosen == "fused" and problem.starts is not None:
        return "the fused kernel does not restart its carry (resets)"
    return None


def run(cell, params, problem: Problem, *, kernel, block_batch, block_time, options):
    if kernel_for(cell, kernel) == "linear":
        return linear_cell_scan(cell, params, problem, options=options)
    return fused_scan(
        cell,
        params,
        problem,
        block_batch=block_batch,
        block_time=block_time,
        interpret=options.interpret,
    )


@cache
def configure(
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
    options = LinearScanOptions(block_batch, block_time, block_features, interpret)
    return Backend(
        "pallas",
        partial(supports, kernel=kernel),
        partial(
            run, kernel=kernel, block_batch=block_batch, block_time=block_time, options=options
        ),
    )
