"""Where a Pallas kernel is lowered, and the choice among those places at lowering time.

Three targets, one per platform the backend's program may be lowered for:

- ``cuda``: Pallas' **Triton** lowering, named explicitly (`Target.compiler_params` gives
  ``pltriton.CompilerParams``), never Pallas' default GPU lowering, which
  has changed between releases. Why Triton and not Mosaic GPU: Triton
  lowers a ``pallas_call`` over a grid whose programs hold arrays of any
  power-of-two shape, with ``tl.dot`` for M, N, K >= 16 and software
  pipelining left to the compiler; on JAX 0.10.2 and 0.11.2 it lowers every
  kernel here, forward and backward, for every cell the lane tiles express.
  Mosaic GPU is Hopper-only, its matmul layout wants 64-row tiles
  (``WGMMA``: m % 64 == 0; a batch of 16 would be padded fourfold), its
  pipelines are explicit (``plgpu.emit_pipeline``), ``pallas_call`` on it
  is deprecated in favour of ``plgpu.kernel`` and its API is documented as
  "highly unstable". The Triton backend is itself deprecated since JAX 0.11
  (Pallas changelog: "will be removed in a future version"); the JAX pin in
  ``pyproject.toml`` stops below the release that would remove it.
- ``tpu``: Mosaic, the time axis a sequential ("arbitrary") grid axis
  through which time blocks stream while the carry stays in VMEM.
- ``cpu``: interpret mode, running the GPU kernel's tiling (plain interpret
  mode) or the TPU kernel's (TPU interpret mode, which also checks
  out-of-bounds reads, uninitialised VMEM and the grid order), for tests.

`on_each_platform` traces one variant per target under
``jax.lax.platform_dependent``: lowering for a platform keeps only its
branch, so ``jax.export(..., platforms=["cuda"])`` on a CPU lowers the
Triton kernels. A target whose budget the shapes exceed gets a branch that
fails at lowering, naming the reason (`refused`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import jax
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas import triton as pltriton
from jax.extend.core import Primitive
from jax.interpreters import mlir

KIB = 1024


def next_power_of_2(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


@dataclass(frozen=True)
class Target:
    """A chip the kernels compile for, and how they are tiled there.

    - ``name``: ``"gpu"`` or ``"tpu"``; ``platform``: the lowering platform.
    - ``interpret``: False on the chip; True or ``pltpu.InterpretParams``
      when a CPU interprets this target's kernel.
    - ``row_multiple``: batch rows per program are a multiple of it (GPU: a
      power of two, at least 16, Triton's smallest ``tl.dot``; TPU: 8
      sublanes); ``max_rows``: the most rows one program takes by default.
    - ``min_dot``: the smallest M, N, K on the matrix unit.
    - ``max_lanes``: the widest tile of lanes.
    - ``sequential_time``: time is a grid axis (TPU); else one program runs
      the whole sequence (GPU, whose programs run concurrently).
    - ``on_chip_bytes``: what one program may hold: on an H100/H200 (sm_90)
      227 KB of shared memory per block and a 256 KB register file; on TPU
      the scoped VMEM limit the kernels ask for.
    - ``shared_bytes``: the part of it that can hold data across the time
      loop (GPU shared memory; on TPU all of VMEM).
    """

    name: str
    platform: str
    row_multiple: int
    max_rows: int
    min_dot: int
    max_lanes: int
    sequential_time: bool
    on_chip_bytes: int
    shared_bytes: int
    interpret: Any = False

    def lane_width(self, chunk: int) -> int:
        """Physical lanes of a tile holding ``chunk`` logical ones."""
        if self.name == "gpu":
            return 1 if chunk == 1 else max(self.min_dot, next_power_of_2(chunk))
        return round_up(chunk, 128)

    def rows(self, batch: int, requested: int | None) -> int:
        """Batch rows per program for ``batch`` rows: ``requested`` or the default."""
        if requested is not None:
            return requested
        if self.name == "gpu":
            return min(max(next_power_of_2(batch), self.row_multiple), self.max_rows)
        return min(round_up(batch, self.row_multiple), self.max_rows)

    def check_rows(self, rows: int) -> str | None:
        if self.name == "gpu" and (rows < self.row_multiple or rows & (rows - 1)):
            return f"on GPU a batch tile is a power of two of at least 16 rows; got {rows}"
        if self.name == "tpu" and rows % self.row_multiple:
            return f"on TPU a batch tile is a multiple of 8 rows; got {rows}"
        return None

    def compiler_params(self, sequential_axes: tuple[bool, ...], *, num_warps: int = 4):
        """The lowering's parameters, which also name it: Triton on GPU, Mosaic on TPU."""
        if self.interpret is True:
            return None
        if self.name == "gpu":
            return pltriton.CompilerParams(num_warps=num_warps, num_stages=1)
        semantics = tuple("arbitrary" if s else "parallel" for s in sequential_axes)
        return pltpu.CompilerParams(
            dimension_semantics=semantics, vmem_limit_bytes=self.on_chip_bytes
        )

    def interpreted(self, interpret: Any = True) -> Target:
        return replace(self, interpret=interpret)


GPU = Target(
    name="gpu",
    platform="cuda",
    row_multiple=16,
    max_rows=16,
    min_dot=16,
    max_lanes=128,
    sequential_time=False,
    on_chip_bytes=(227 + 256) * KIB,
    shared_bytes=227 * KIB,
)
TPU = Target(
    name="tpu",
    platform="tpu",
    row_multiple=8,
    max_rows=128,
    min_dot=1,
    max_lanes=512,
    sequential_time=True,
    on_chip_bytes=16 * 1024 * KIB,
    shared_bytes=16 * 1024 * KIB,
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


def on_each_platform(build: Callable[[Target], Callable], interpret: str, *args):
    """``build(target)(*args)`` for the target of the platform being lowered for."""
    return jax.lax.platform_dependent(
        *args,
        cpu=build(cpu_target(interpret)),
        cuda=build(GPU),
        tpu=build(TPU),
    )


# ----------------------------------------------------------------------------- refusals


refused_p = Primitive("rnn_jax_pallas_refused")
refused_p.multiple_results = True


@refused_p.def_abstract_eval
def _refused_abstract(*args, outputs, reason):
    del args, reason
    return outputs


def _refused_lowering(ctx, *args, outputs, reason):
    raise ValueError(reason)


mlir.register_lowering(refused_p, _refused_lowering)


def refused(reason: str, outputs: Any) -> Callable[..., Any]:
    """A branch with the avals ``outputs`` (a pytree of ShapeDtypeStructs) that stops the
    lowering for its platform with ``reason``."""
    leaves, treedef = jax.tree.flatten(outputs)
    avals = tuple(jax.core.ShapedArray(x.shape, x.dtype) for x in leaves)

    def branch(*args):
        flat = refused_p.bind(*jax.tree.leaves(args), outputs=avals, reason=reason)
        return jax.tree.unflatten(treedef, flat)

    return branch
