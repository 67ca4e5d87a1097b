"""Where a Pallas kernel is lowered, and the choice among those places at lowering time.

Three targets, one per platform the backend's program may be lowered for:

- ``cuda``: Pallas' **Triton** lowering, named explicitly (`Target.compiler_params` gives
  ``pltriton.CompilerParams``), never Pallas' default GPU lowering, which
  has changed between releases. Why Triton and not Mosaic GPU: Triton
  lowers a ``pallas_call`` over a grid whose programs hold arrays of any
  power-of-two shape, with ``tl.dot`` for M, N, K >= 16 and software
  pipelining left to the compiler; on JAX 0.10.2 and 0.12.1 it compiles every
  kernel here, forward and backward, for every cell the lane tiles express.
  Mosaic GPU is Hopper-only, its matmul layout wants 64-row tiles
  (``WGMMA``: m % 64 == 0; a batch of 16 would be padded fourfold), its
  pipelines are explicit (``plgpu.emit_pipeline``), ``pallas_call`` on it
  is deprecated in favour of ``plgpu.kernel`` and its API is documented as
  "highly unstable". The Triton backend is itself deprecated since JAX 0.11
  (Pallas changelog: "will be removed in a future version"); the kernels
  still compile on JAX 0.12.1 (``tests/compile``), and the JAX pin in
  ``pyproject.toml`` stops below the next release, not yet checked.
- ``tpu``: Mosaic, the time axis a sequential ("arbitrary") grid axis
  through which time blocks stream while the carry stays in VMEM.
- ``cpu``: interpret mode, running the GPU kernel's tiling (plain interpret
  mode) or the TPU kernel's (TPU interpret mode, which also checks
  out-of-bounds reads, uninitialised VMEM and the grid order), for tests.

`on_each_platform` traces one variant per target under
``jax.lax.platform_dependent``: lowering for a platform keeps only its
branch, so ``jax.export(..., platforms=["cuda"])`` on a CPU lowers the
Triton kernels. A target whose budget the shapes exceed gets a branch that
fails at lowering, naming the reason (`refusal.refused`).

Each target is a type, `TritonGPU` or `MosaicTPU`, whose methods say how that
compiler tiles (lane widths, batch tiles, compiler parameters); the plans of
the kernels dispatch on the type for their budgets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import jax
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas import triton as pltriton

from rnn_jax.backends.pallas.refusal import Refusal

KIB = 1024


def next_power_of_2(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


@dataclass(frozen=True, kw_only=True)
class Target:
    """A chip the kernels compile for, and how they are tiled there.

    - ``name``: how messages name it (``"GPU"``, ``"TPU"``); ``platform``: the
      lowering platform.
    - ``memory``: how messages name its budget, ``memory_bytes``: the budget
      one program of a kernel may use (a GPU's shared memory per block, the
      VMEM limit a TPU kernel asks for).
    - ``row_multiple``: batch rows per program are a multiple of it;
      ``max_rows``: the most rows one program takes by default.
    - ``min_dot``: the smallest M, N, K on the matrix unit.
    - ``max_lanes``: the widest tile of lanes.
    - ``interpret``: False on the chip; True or ``pltpu.InterpretParams``
      when a CPU interprets this target's kernel.
    """

    name: str
    platform: str
    memory: str
    memory_bytes: int
    row_multiple: int
    max_rows: int
    min_dot: int
    max_lanes: int
    interpret: Any = False

    def lane_width(self, chunk: int) -> int:
        """Physical lanes of a tile holding ``chunk`` logical ones."""
        raise NotImplementedError

    def rows(self, batch: int, requested: int | None) -> int:
        """Batch rows per program for ``batch`` rows: ``requested`` or the default."""
        raise NotImplementedError

    def check_rows(self, rows: int) -> None:
        """Raises `Refusal` for a batch tile this target's compiler cannot take."""
        raise NotImplementedError

    def compiler_params(self, sequential_axes: tuple[bool, ...], *, num_warps: int = 4):
        """The lowering's parameters, which also name it (None: plain interpret mode)."""
        raise NotImplementedError

    def check_memory(self, what: str, held: int) -> None:
        """Raises `Refusal` when ``what`` would use ``held`` bytes, over the budget."""
        if held > self.memory_bytes and self.interpret is False:
            raise Refusal(
                f"on {self.name} {what} would need {held / KIB:.0f} KB, over the "
                f"{self.memory_bytes / KIB:.0f} KB of {self.memory}; use smaller heads (a "
                "multi-head cell) or another backend"
            )

    def interpreted(self, interpret: Any = True) -> Target:
        return replace(self, interpret=interpret)


@dataclass(frozen=True, kw_only=True)
class TritonGPU(Target):
    """A CUDA GPU through Pallas' Triton lowering: tiles of power-of-two lanes, batch tiles a
    power of two from 16 rows (Triton's smallest ``tl.dot``) to ``max_block_rows``, one
    program per SM holding its values in ``registers_bytes`` of registers and
    ``memory_bytes`` of shared memory (what the compiler refuses beyond)."""

    registers_bytes: int
    max_block_rows: int

    def lane_width(self, chunk: int) -> int:
        return 1 if chunk == 1 else max(self.min_dot, next_power_of_2(chunk))

    def rows(self, batch: int, requested: int | None) -> int:
        if requested is not None:
            return requested
        return min(max(next_power_of_2(batch), self.row_multiple), self.max_rows)

    def check_rows(self, rows: int) -> None:
        if rows < self.row_multiple or rows > self.max_block_rows or rows & (rows - 1):
            raise Refusal(
                f"on {self.name} a batch tile is a power of two of {self.row_multiple} to "
                f"{self.max_block_rows} rows; got {rows} (from 64 rows Triton turns to "
                "warp-group matrix products, whose shared memory the plans do not model)"
            )

    def check_registers(self, what: str, values: int, shared: int) -> None:
        """Raises `Refusal` when ``what``'s ``values`` bytes exceed the register file and the
        shared memory the kernel leaves (``shared`` bytes used), where they would spill."""
        room = self.registers_bytes + self.memory_bytes - shared
        if values > room and self.interpret is False:
            raise Refusal(
                f"on {self.name} {what} would hold {values / KIB:.0f} KB, over the "
                f"{room / KIB:.0f} KB of registers and shared memory left to them; use "
                "smaller heads (a multi-head cell) or another backend"
            )

    def compiler_params(self, sequential_axes: tuple[bool, ...], *, num_warps: int = 4):
        if self.interpret is True:
            return None
        return pltriton.CompilerParams(num_warps=num_warps, num_stages=1)


@dataclass(frozen=True, kw_only=True)
class MosaicTPU(Target):
    """A TPU through Mosaic: lanes in multiples of 128, batch tiles in multiples of 8
    sublanes, every block double-buffered in the VMEM limit the kernel asks for
    (``memory_bytes``); time is a sequential grid axis."""

    def lane_width(self, chunk: int) -> int:
        return round_up(chunk, 128)

    def rows(self, batch: int, requested: int | None) -> int:
        if requested is not None:
            return requested
        return min(round_up(batch, self.row_multiple), self.max_rows)

    def check_rows(self, rows: int) -> None:
        if rows % self.row_multiple:
            raise Refusal(
                f"on {self.name} a batch tile is a multiple of {self.row_multiple} rows; got {rows}"
            )

    def compiler_params(self, sequential_axes: tuple[bool, ...], *, num_warps: int = 4):
        if self.interpret is True:
            return None
        semantics = tuple("arbitrary" if s else "parallel" for s in sequential_axes)
        return pltpu.CompilerParams(
            dimension_semantics=semantics, vmem_limit_bytes=self.memory_bytes
        )


# sm_90 and sm_100 (H100, H200, B200): 227 KB of shared memory per block (XLA's target
# configurations: shared_memory_per_block_optin 232448) and 64K 32-bit registers per block.
GPU = TritonGPU(
    name="GPU",
    platform="cuda",
    memory="shared memory per block of an H100, H200 or B200",
    memory_bytes=227 * KIB,
    registers_bytes=256 * KIB,
    max_block_rows=32,
    row_multiple=16,
    max_rows=16,
    min_dot=16,
    max_lanes=128,
)
TPU = MosaicTPU(
    name="TPU",
    platform="tpu",
    memory="VMEM the kernel asks for",
    memory_bytes=16 * 1024 * KIB,
    row_multiple=8,
    max_rows=128,
    min_dot=1,
    max_lanes=512,
)
TARGETS = {"gpu": GPU, "tpu": TPU}


def tpu_interpret_params() -> Any:
    """TPU interpret mode that checks what plain interpret mode cannot: reads out of bounds
    raise, VMEM starts as NaN (so a block read before it is written shows), and the
    ``parallel`` grid axes run in a shuffled order (so no program may depend on another)."""
    return pltpu.InterpretParams(
        out_of_bounds_reads="raise", uninitialized_memory="nan", random_seed=0
    )


def cpu_target(interpret: str) -> Target:
    """The target a CPU interprets: ``"gpu"`` (plain interpret mode) or ``"tpu"``.

    The GPU's tiles in interpret mode are as wide as the cell's arrays allow
    (not capped at 128 lanes): the same tiles as on the GPU up to 128 lanes,
    and fewer, wider ones beyond, which a CPU runs faster."""
    if interpret == "tpu":
        return TPU.interpreted(tpu_interpret_params())
    return replace(GPU, max_lanes=1 << 20).interpreted()


def varying_like(out_shape: Any, inputs: Any) -> Any:
    """``out_shape`` (a pytree of ShapeDtypeStructs) marked as varying across every mesh axis
    any of ``inputs`` varies across, as a kernel's outputs do inside ``jax.shard_map`` (where
    Pallas asks for it); outside one, nothing varies."""
    mats = [jax.typeof(x).mat for x in jax.tree.leaves(inputs)]
    mat = type(mats[0])(varying=frozenset().union(*(m.varying for m in mats)))
    return jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, manual_axis_type=mat), out_shape
    )


def on_each_platform(build: Callable[[Target], Callable], interpret: str, *args):
    """``build(target)(*args)`` for the target of the platform being lowered for."""
    return jax.lax.platform_dependent(
        *args,
        cpu=build(cpu_target(interpret)),
        cuda=build(GPU),
        tpu=build(TPU),
    )
