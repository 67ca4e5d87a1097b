"""Where the Pallas kernels run and how they are tiled there.

- On GPU (Triton lowering) every grid program runs concurrently, so the time
  loop of a program covers the whole (padded) sequence: one time block.
  Triton also wants power-of-two block sizes (batch tiles of at least 16 for
  its matmul), so batch and time are padded up to them.
- On TPU (Mosaic) the time axis is a sequential ("arbitrary") grid axis: the
  carry stays in the resident output block while time blocks stream through.
- Anywhere else (CPU) the kernels run with ``interpret=True``: the same kernel
  bodies evaluated by XLA, for tests; ``auto`` never picks them there.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax


def platform() -> str:
    """``"gpu"``, ``"tpu"`` or ``"cpu"``: the platform JAX runs on by default."""
    return jax.default_backend()


def resolve_interpret(interpret: bool | None) -> bool:
    """``interpret`` as given, or True when the default platform is neither GPU nor TPU."""
    if interpret is None:
        return platform() not in ("gpu", "tpu")
    return bool(interpret)


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def next_power_of_2(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


class Tiling(NamedTuple):
    """Block sizes and padded extents of one kernel launch."""

    block_batch: int
    block_time: int
    padded_batch: int
    padded_time: int

    @property
    def batch_blocks(self) -> int:
        return self.padded_batch // self.block_batch

    @property
    def time_blocks(self) -> int:
        return self.padded_time // self.block_time


def check_block(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
        raise ValueError(f"{name} must be a positive int or None; got {value!r}")


def tiling(
    batch: int,
    steps: int,
    *,
    block_batch: int | None,
    block_time: int | None,
    interpret: bool,
    gpu_min_batch: int = 16,
) -> Tiling:
    """Chooses block sizes for ``batch`` rows and ``steps`` time steps on this platform.

    Given sizes are used as they are (the extents are padded up to multiples
    of them); ``None`` picks the platform default: the whole batch and
    sequence in interpret mode; one power-of-two time block and power-of-two
    batch tiles of at least ``gpu_min_batch`` rows on GPU (16, the smallest
    Triton matmul, for the fused kernel; the linear scan has no matmul); tiles
    of up to 128 rows and time blocks of 32 on TPU.
    """
    check_block("block_batch", block_batch)
    check_block("block_time", block_time)
    where = "interpret" if interpret else platform()
    if where == "gpu":
        if block_time is not None and block_time < steps:
            raise ValueError(
                "block_time must be None on GPU, where a kernel's programs run concurrently "
                f"and one program covers the whole sequence; got {block_time} < T={steps}"
            )
        bb = next_power_of_2(max(block_batch or gpu_min_batch, gpu_min_batch))
        bt = next_power_of_2(steps)
    elif where == "tpu":
        bb = block_batch or min(round_up(batch, 8), 128)
        bt = block_time or min(steps, 32)
    else:
        bb = block_batch or batch
        bt = block_time or steps
    bb, bt = max(bb, 1), max(bt, 1)
    return Tiling(bb, bt, round_up(max(batch, 1), bb), round_up(max(steps, 1), bt))


def compiler_params(interpret: bool, sequential_axes: tuple[bool, ...]) -> Any:
    """Backend compiler parameters: on TPU, which grid axes are sequential; else None."""
    if interpret or platform() != "tpu":
        return None
    from jax.experimental.pallas import tpu as pltpu

    semantics = tuple("arbitrary" if s else "parallel" for s in sequential_axes)
    return pltpu.CompilerParams(dimension_semantics=semantics)
