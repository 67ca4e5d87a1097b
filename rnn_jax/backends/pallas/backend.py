"""The ``pallas`` backend: the fused recurrent kernel or the linear-scan kernel, per cell.

- Cells with a `LinearRecurrence` (minGRU, minLSTM, LRU, RG-LRU) run the
  linear-scan kernel: only elementwise work per step.
- Cells with `Gates` and a projection (LSTM, GRU, Elman, the multi-head
  cells) run the fused recurrent kernel: one program per (head, batch tile)
  with that head's block of the recurrent matrix on chip.
- Other cells, and shapes over a chip's budget, are refused by ``supports``,
  in words.

Each kernel is chosen by the platform the program is lowered for
(`rnn_jax.backends.pallas.targets`): Triton on CUDA GPUs, Mosaic on TPU,
interpret mode on a CPU, which is for tests: ``backend="auto"`` never picks
``pallas`` without measurements showing it faster on the platform.

Example:
    >>> cell = rj.gru(16)
    >>> params = cell.init(jax.random.key(0), 8)
    >>> tuned = rj.backends.Pallas(block_time=16)      # or backend="pallas" for the defaults
    >>> carry, ys = rj.scan(cell, params, jnp.ones((10, 4, 8)), backend=tuned)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import jax

from rnn_jax import _validate
from rnn_jax.backends.contract import Backend, Problem
from rnn_jax.backends.pallas.fused import WEIGHTS, FusedOptions, fused_refusal, fused_scan
from rnn_jax.backends.pallas.linear_scan import LinearOptions, linear_cell_scan

KERNELS = ("auto", "fused", "linear")
INTERPRET = ("gpu", "tpu")


def kernel_for(cell, kernel: str) -> str | None:
    """``"linear"`` or ``"fused"``: the kernel that runs ``cell``; None when none can."""
    if kernel in ("auto", "linear") and cell.linear is not None:
        return "linear"
    if kernel in ("auto", "fused") and cell.gates is not None and cell.project is not None:
        return "fused"
    return None


def refusal(cell, problem: Problem, *, kernel: str, fused: FusedOptions) -> str | None:
    """Why no kernel of this backend runs ``cell`` over ``problem`` exactly, or None."""
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
    if chosen == "fused":
        return fused_refusal(cell, problem, fused)
    return None


def pallas_scan(
    cell, params, problem: Problem, *, kernel, fused: FusedOptions, linear: LinearOptions
):
    if kernel_for(cell, kernel) == "linear":
        return linear_cell_scan(cell, params, problem, linear)
    return fused_scan(cell, params, problem, fused)


@dataclass(frozen=True)
class Pallas(Backend):
    """A configured ``pallas`` backend.

    Args:
        kernel: ``"auto"`` (the linear-scan kernel for cells with ``linear``,
            else the fused kernel for cells with ``gates``), ``"fused"`` or
            ``"linear"``.
        block_batch: batch rows per program (the batch is padded to a
            multiple); None: the target's default (GPU: 16 for the fused
            kernel, a power of two up to 8 for the linear scan; TPU: the
            batch rounded up to 8, up to 128 or 64).
        block_time: steps per time block on TPU, where time blocks stream
            through one program in turn (on GPU one block covers the
            sequence); None: the longest that fits the VMEM limit.
        block_features: lanes per program of the linear-scan kernel.
        weights: the fused kernel's recurrent block on GPU: ``"resident"``
            (loaded once, held on chip), ``"streamed"`` (its tiles read from
            L2 every step) or ``"auto"`` (resident when it fits in shared
            memory beside the step's values).
        interpret: which target's kernel a CPU runs in interpret mode:
            ``"gpu"`` (Triton's tiling) or ``"tpu"`` (Mosaic's, under TPU
            interpret mode, which also checks out-of-bounds reads,
            uninitialised memory and the order of the grid).

    The ``unroll`` argument of `rj.scan` unrolls the fused kernel's in-kernel
    time loop (within a time block); the linear-scan kernel ignores it.
    """

    name = "pallas"
    kernel: Literal["auto", "fused", "linear"] = "auto"
    block_batch: int | None = None
    block_time: int | None = None
    block_features: int | None = None
    weights: Literal["auto", "resident", "streamed"] = "auto"
    interpret: Literal["gpu", "tpu"] = "gpu"

    def __post_init__(self):
        _validate.one_of("kernel", self.kernel, KERNELS)
        _validate.one_of("weights", self.weights, WEIGHTS)
        _validate.one_of("interpret", self.interpret, INTERPRET)
        for name in ("block_batch", "block_time", "block_features"):
            _validate.optional_positive_int(name, getattr(self, name))

    @property
    def fused(self) -> FusedOptions:
        return FusedOptions(self.block_batch, self.block_time, self.weights, self.interpret)

    @property
    def linear(self) -> LinearOptions:
        return LinearOptions(self.block_batch, self.block_time, self.block_features, self.interpret)

    def supports(self, cell, problem: Problem) -> str | None:
        return refusal(cell, problem, kernel=self.kernel, fused=self.fused)

    def run(self, cell, params, problem: Problem):
        return pallas_scan(
            cell, params, problem, kernel=self.kernel, fused=self.fused, linear=self.linear
        )
