"""The fused kernel's launch on each target: block sizes checked against the chip's memory.

`plan_launch` gives the `Launch` of one pass (forward, or backward) on one
target, or raises `Refusal` in words. The budgets are the ones the compilers
enforce, measured against them by deviceless compilation
(``benchmarks/budget_grid.py``, ``tests/compile/``):

- GPU (Triton): the recurrent block is *resident* (loaded once, held in
  shared memory for the whole time loop: the backward holds it twice, as
  ``W`` and as ``W^T`` for the two products) or *streamed* (each tile read
  from L2 right where its product needs it, so one tile, or a few of a
  backward reduction, is in shared memory at a time). On top of it Triton
  stages the other operand and converts layouts through shared memory
  (``GPU_SCRATCH_TILES`` tiles of the step's values).
  The sum must fit the 227 KB of shared memory a block may have, which the
  compiler refuses beyond; and one program's values (the carry, a step's
  inputs, pre-activations and outputs, and in the backward their
  cotangents) must fit the register file with the shared memory left over,
  beyond which they would spill.
- TPU (Mosaic): every block double-buffered within the VMEM limit the
  kernel asks for (cautious: Mosaic fits some cases beyond it); the longest
  time block (up to 32 steps) that fits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import singledispatch
from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp

from rnn_jax.backends.pallas.fused_kernels import FusedBlocks, Launch
from rnn_jax.backends.pallas.lanes import Lanes, Unsupported, choose_lanes, evaluate, zeros
from rnn_jax.backends.pallas.refusal import Refusal
from rnn_jax.backends.pallas.step_jaxprs import Leaf, StepJaxprs
from rnn_jax.backends.pallas.targets import MosaicTPU, Target, TritonGPU, round_up

if TYPE_CHECKING:
    from rnn_jax.backends.pallas.fused import FusedOptions

f32 = jnp.float32
FOUR_WARPS_REGISTERS = 4 * 32 * 255 * 4  # bytes: 4 warps of 32 threads, 255 registers each
# Triton's shared memory beside the recurrent block, in [rows, lanes] float32 tiles: the
# products' other operand and the layout conversions around them (measured on sm_90a: up to
# 2 in a forward step, 5 in a backward one).
GPU_SCRATCH_TILES = {False: 2, True: 6}
# Tiles of a streamed recurrent block Triton holds at once: one per product, but a backward
# product of 2-byte weights reads up to 4 tiles of its reduction together (measured on sm_90a).
GPU_STREAMED_GROUP = 4


@dataclass(frozen=True)
class Sizes:
    """The sizes of one call: heads, steps, batch, whether masks and restarts come, and the
    steps per iteration of the in-kernel time loop."""

    num_heads: int
    steps: int
    batch: int
    reverse: bool
    has_valid: bool
    has_starts: bool
    unroll: int


def _elements(lanes: Lanes, leaf: Leaf) -> int:
    return math.prod(lanes.stored(leaf.tail))


def _bytes(lanes: Lanes, leaves, dtype=None) -> int:
    return sum(_elements(lanes, x) * jnp.dtype(dtype or x.dtype).itemsize for x in leaves)


class Footprint(NamedTuple):
    """Bytes one program keeps: per row and step (``live``), and once."""

    live: int  # the carry, a step's inputs, pre-activations, outputs (and cotangents)
    carry: int  # one carry, float32
    weights: int  # the recurrent block
    weight_tile: int  # one tile of it
    weight_itemsize: int
    reduction_tiles: int  # tiles of the recurrent block along G*H (the backward's reduction)
    params: int  # combine's parameters (and their float32 gradient sums)
    lanes: Lanes

    def values(self, rows: int) -> int:
        """One program's values: ``rows`` rows of them and the parameters."""
        return rows * self.live + self.params

    def shared(self, rows: int, backward: bool, resident: bool) -> int:
        """The shared memory Triton asks for (GPU): the recurrent block, held whole when
        ``resident`` (twice in the backward: as ``W`` and as ``W^T``), else the tiles of it a
        product reads at once; and its scratch for ``rows`` rows."""
        if resident:
            weights = self.weights * (2 if backward else 1)
        elif backward and self.weight_itemsize == 2:
            weights = self.weight_tile * min(self.reduction_tiles, GPU_STREAMED_GROUP)
        else:
            weights = self.weight_tile
        return weights + GPU_SCRATCH_TILES[backward] * rows * self.lanes.width * 4


def footprint(step: StepJaxprs, lanes: Lanes, backward: bool) -> Footprint:
    hu = Leaf((step.weights.tail[1],), f32)
    carry = _bytes(lanes, step.carry, f32)
    xp, pre, y = _bytes(lanes, step.xp), _bytes(lanes, [hu]), _bytes(lanes, step.y)
    copies = 2 if backward else 1  # the backward holds each value and its cotangent
    params = _bytes(lanes, step.params) + (_bytes(lanes, step.params, f32) if backward else 0)
    itemsize = step.weights.dtype.itemsize
    weights = _elements(lanes, step.weights) * itemsize
    tile = lanes.width * lanes.width * itemsize
    live = copies * (carry + xp + pre) + y
    (reduction,) = lanes.grid(hu.tail)
    return Footprint(live, carry, weights, tile, itemsize, reduction, params, lanes)


@singledispatch
def plan_blocks(
    target: Target, sizes: Sizes, options: FusedOptions, rows, need: Footprint, backward: bool
):
    """`FusedBlocks` for ``target`` within its memory, or `Refusal`."""
    raise NotImplementedError(f"no fused-kernel plan for {type(target).__name__}")


@plan_blocks.register(TritonGPU)
def _gpu_blocks(
    target: TritonGPU, sizes: Sizes, options: FusedOptions, rows, need: Footprint, backward: bool
):
    """One time block; the recurrent block resident when it fits in shared memory with
    Triton's scratch, else streamed; 8 warps once the step's values need more registers
    than 4 warps have (255 per thread)."""
    if options.weights == "auto":
        resident = need.shared(rows, backward, True) <= target.memory_bytes
    else:
        resident = options.weights == "resident"
    shared = need.shared(rows, backward, resident)
    kind = "backward" if backward else "forward"
    held = "the recurrent block" if resident else "tiles of the recurrent block"
    target.check_memory(
        f"one program of the {kind} pass ({held} and Triton's scratch for {rows} rows)", shared
    )
    values = need.values(rows)
    target.check_registers(
        f"one program of the {kind} pass (the carry, a step's inputs, pre-activations and "
        f"outputs{' and their cotangents' if backward else ''} for {rows} rows)",
        values,
        shared,
    )
    num_warps = 4 if values <= FOUR_WARPS_REGISTERS // 2 else 8
    return FusedBlocks(rows, max(sizes.steps, 1), need.lanes, resident, num_warps)


@plan_blocks.register(MosaicTPU)
def _tpu_blocks(
    target: MosaicTPU, sizes: Sizes, options: FusedOptions, rows, need: Footprint, backward: bool
):
    """Every block double-buffered in VMEM, the recurrent block too; the longest time block
    (up to 32 steps) that fits. Cautious: Mosaic compiles some cases beyond this count (a
    float32 GRU(1024), whose 12 MiB block could not be held twice in the 16 MiB limit),
    but counting the block once lets through one it refuses (a bfloat16 LSTM(1024) in time
    blocks of 8 steps; benchmarks/budget_grid.py)."""
    masks = 2 * 128 * 4  # two [rows, 1] int32 masks per step, each padded to 128 lanes
    per_step = need.live + need.carry + masks  # and the stored carry
    candidates = [options.block_time] if options.block_time else [32, 16, 8, 4, 2, 1]
    steps = max(sizes.steps, 1)
    held = {
        bt: 2 * (need.weights + need.params + rows * (4 * need.carry + bt * per_step))
        for bt in candidates
        if bt <= steps or options.block_time
    }
    fitting = [bt for bt, n in held.items() if n <= target.memory_bytes]
    block_time = max(fitting) if fitting else min(held)
    kind = "backward" if backward else "forward"
    target.check_memory(
        f"one program of the {kind} pass (the recurrent block and blocks of {block_time} "
        f"steps, all double-buffered, for {rows} rows)",
        held[block_time],
    )
    return FusedBlocks(rows, block_time, need.lanes, True)


def step_lanes(step: StepJaxprs, target: Target, rows: int) -> Lanes:
    """How the step's feature axes are cut into tiles on ``target``."""
    return choose_lanes(
        step.feature_sizes(),
        rows=rows,
        width_of=target.lane_width,
        max_width=target.max_lanes,
        min_dot=target.min_dot,
    )


def plan_launch(
    step: StepJaxprs, sizes: Sizes, target: Target, options: FusedOptions, *, backward: bool
) -> Launch:
    """The `Launch` of the fused kernel's forward (or ``backward``) pass on ``target``;
    raises `Refusal` when it cannot fit there, saying what would not."""
    rows = target.rows(sizes.batch, options.block_batch)
    target.check_rows(rows)
    need = footprint(step, step_lanes(step, target, rows), backward)
    blocks = plan_blocks(target, sizes, options, rows, need, backward)
    padded_time = round_up(max(sizes.steps, 1), blocks.block_time)
    return Launch(
        step=step,
        target=target,
        blocks=blocks,
        num_heads=sizes.num_heads,
        padded_time=padded_time,
        padded_batch=round_up(max(sizes.batch, 1), rows),
        reverse=sizes.reverse,
        has_valid=sizes.has_valid or padded_time != sizes.steps,
        has_starts=sizes.has_starts,
        unroll=min(sizes.unroll, blocks.block_time),
    )


def check_tiles(step: StepJaxprs, target: Target) -> None:
    """Raises `Refusal` when the step's functions cannot run on ``target``'s lane tiles
    (traced, not run)."""
    lanes = step_lanes(step, target, target.row_multiple)

    def run():
        for jaxpr in (step.fed_back, step.combine, step.combine_vjp, step.fed_back_vjp):
            args = [zeros(v.aval.shape, v.aval.dtype, lanes) for v in jaxpr.jaxpr.invars]
            evaluate(jaxpr, lanes, *args)

    try:
        jax.eval_shape(run)
    except Unsupported as exc:
        raise Refusal(f"on {target.name} tiles: {exc}") from None
