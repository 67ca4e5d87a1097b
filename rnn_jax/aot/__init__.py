"""Compiling for a chip that is not here: deviceless ahead-of-time compilation.

The real compilers run on a CPU-only machine: for a GPU, XLA's GPU compiler with
Triton and ``ptxas`` (from the CUDA plugin and the nvcc wheel, no driver needed),
given XLA's own description of the chip (the ``*.txtpb`` files next to this
module, with their source in their first lines); for a TPU, libtpu's compiler
with Mosaic, given a topology name. A program is compiled for a chip by placing
its abstract arguments on one of the chip's compile-only devices
(`on_chip`); ``jax.jit(f).lower(...).compile()`` then runs every pass that
decides whether a kernel fits the chip, such as the shared memory a Triton
kernel asks for.

Chips (`CHIPS`): ``h100`` (H100 SXM, sm_90a), ``h200``, ``b200`` (sm_100a),
each four to a host, and ``v5e`` and ``v6e`` (2x2 slices); four devices for
meshes (`devices`), or one of them (`on_chip`).

Needs the ``aot`` extra (``pip install "rnn_jax[aot]"``). It changes nothing
for programs that run here: set ``JAX_PLATFORMS=cpu`` on a machine without an
accelerator so that JAX does not try to start the CUDA and TPU runtimes.

Example:
    >>> double = lambda x: 2 * x
    >>> x = jax.ShapeDtypeStruct((8, 128), jnp.float32)
    >>> compiled = compile_for("h100", double, x)
    >>> compiled.input_shardings[0][0].device_set.pop().device_kind
    'NVIDIA H100 80GB HBM3'
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

import jax
from jax.experimental import topologies

HERE = Path(__file__).resolve().parent
__all__ = [
    "CHIPS",
    "Chip",
    "Kernel",
    "compile_error_bytes",
    "compile_for",
    "compile_with_kernels",
    "devices",
    "lowering_for",
    "missing",
    "on_chip",
    "ptxas_path",
    "target_config",
    "tpu_kernels",
]

# libtpu's own defaults for a machine without TPUs: no metadata-server query, no lock on
# /tmp/libtpu_lockfile (compiling needs no chip, and several processes may compile at once),
# and a named host so that it does not warn about the ones it cannot find.
TPU_ENVIRONMENT = {
    "TPU_SKIP_MDS_QUERY": "1",
    "ALLOW_MULTIPLE_LIBTPU_LOAD": "1",
    "TPU_WORKER_HOSTNAMES": "localhost",
    "TPU_ACCELERATOR_TYPE": "v5litepod-4",
}


GPU_HOST = "1x1x4"  # four GPUs in one process: for meshes, or one of them


@dataclass(frozen=True)
class Chip:
    """A chip to compile for: a GPU by XLA's target configuration (``target_config``, a file
    next to this module) and a topology of them, a TPU by libtpu's topology name."""

    name: str
    platform: str  # "cuda" or "tpu"
    description: str
    target_config: str | None = None
    topology: str | None = None


CHIPS = {
    chip.name: chip
    for chip in (
        Chip("h100", "cuda", "NVIDIA H100 SXM (sm_90a)", "h100_sxm.txtpb", GPU_HOST),
        Chip("h200", "cuda", "NVIDIA H200 (sm_90a)", "h200.txtpb", GPU_HOST),
        Chip("b200", "cuda", "NVIDIA B200 (sm_100a)", "b200.txtpb", GPU_HOST),
        Chip("v5e", "tpu", "TPU v5e, a 2x2 slice", topology="v5e:2x2"),
        Chip("v6e", "tpu", "TPU v6e, a 2x2 slice", topology="v6e:2x2"),
    )
}


def chip_named(name: str) -> Chip:
    if name not in CHIPS:
        raise ValueError(f"chip must be one of {sorted(CHIPS)}; got {name!r}")
    return CHIPS[name]


def target_config(name: str) -> str:
    """The text of a GPU's target configuration (XLA's ``GpuTargetConfigProto``)."""
    chip = chip_named(name)
    if chip.target_config is None:
        raise ValueError(f"{name} is a {chip.platform} chip, described by a topology")
    return (HERE / chip.target_config).read_text()


# What each platform's compiler comes in: one of each group (CUDA 12 or 13 builds).
_PACKAGES = {"cuda": (("jax_cuda12_plugin", "jax_cuda13_plugin"),), "tpu": (("libtpu",),)}


def missing(name: str) -> str | None:
    """Why chip ``name`` cannot be compiled for here (a package of the ``aot`` extra is not
    installed), or None."""
    for group in _PACKAGES[chip_named(name).platform]:
        if all(importlib.util.find_spec(package) is None for package in group):
            return f"compiling for {name} needs {' or '.join(group)} (pip install 'rnn_jax[aot]')"
    return None


@cache
def devices(name: str) -> tuple[jax.Device, ...]:
    """The compile-only devices of chip ``name``: four GPUs of a host, a TPU slice's chips."""
    chip = chip_named(name)
    if chip.platform == "tpu":
        for key, value in TPU_ENVIRONMENT.items():
            os.environ.setdefault(key, value)
        topology = topologies.get_topology_desc(topology_name=chip.topology, platform="tpu")
        return tuple(topology.devices)
    try:
        topology = topologies.get_topology_desc(
            platform="cuda", target_config=target_config(name), topology=chip.topology
        )
    except NotImplementedError as exc:  # the CUDA plugin was started, found no GPU, gave up
        raise RuntimeError(
            f"no CUDA compiler to compile for {name}: on a machine without a GPU set "
            "JAX_PLATFORMS=cpu before JAX starts, so that JAX loads the CUDA plugin's compiler "
            "without starting (and failing to start) its runtime"
        ) from exc
    return tuple(topology.devices)


def on_chip(tree: Any, name: str) -> Any:
    """``tree``'s arrays (or shape structs) as shape structs on chip ``name``'s first device."""
    sharding = jax.sharding.make_single_device_sharding(devices(name)[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def lowering_for(name: str):
    """A context in which programs lower for chip ``name``: its first device is the default
    one, which Pallas' Triton lowering asks for the GPU's compute capability (JAX 0.11 on)."""
    return jax.default_device(devices(name)[0])


def compile_for(
    name: str, fn: Callable, *args: Any, compiler_options: dict[str, Any] | None = None
) -> jax.stages.Compiled:
    """``jax.jit(fn)`` compiled for chip ``name``, its arguments shaped like ``args``."""
    with lowering_for(name):
        lowered = jax.jit(fn).lower(*on_chip(args, name))
    return lowered.compile(compiler_options=compiler_options)


# ----------------------------------------------------------------------------- what kernels use


class Kernel(NamedTuple):
    """One GPU kernel of a compiled program, as XLA launches it: its ``shared_bytes`` of shared
    memory per block, ``threads`` per block, and from ``ptxas -v`` its ``registers`` per thread
    and ``spilled_bytes`` (spill stores) per thread. XLA numbers repeated names
    (``name__1``); ``kind`` is the name without that number."""

    name: str
    shared_bytes: int
    threads: int
    registers: int | None = None
    spilled_bytes: int | None = None

    @property
    def kind(self) -> str:
        return re.sub(r"__\d+$", "", self.name)


# A kernel launch in XLA's dump of a program's thunks (the format of JAX 0.10, then 0.12).
_THUNKS = (
    re.compile(r"\] (\S+) grid: .* threads: \[(\d+), (\d+), (\d+)\]\s+shared_memory: (\d+)"),
    re.compile(r"kernel=(\S+?),.* threads/block: \{(\d+), (\d+), (\d+)\},.* shmem_bytes=(\d+)"),
)


def compile_with_kernels(
    name: str, fn: Callable, *args: Any, pattern: str = "rnn_jax_", ptxas: bool = False
) -> tuple[jax.stages.Compiled, list[Kernel]]:
    """`compile_for` on a GPU, with the kernels whose names contain ``pattern`` (from XLA's
    dump of the program's launches; ``ptxas``: their registers and spills too)."""
    with tempfile.TemporaryDirectory() as dump:
        compiled = compile_for(name, fn, *args, compiler_options={"xla_dump_to": dump})
        kernels = []
        for path in sorted(Path(dump).glob("*.thunk_sequence.txt")):
            text = path.read_text()
            for match in (m for thunk in _THUNKS for m in thunk.finditer(text)):
                kernel, x, y, z, shared = match.groups()
                if pattern in kernel:
                    kernels.append(Kernel(kernel, int(shared), int(x) * int(y) * int(z)))
        if ptxas:
            kernels = [_with_registers(k, Path(dump), name) for k in kernels]
    return compiled, kernels


def tpu_kernels(compiled: jax.stages.Compiled, pattern: str = "rnn_jax_") -> list[str]:
    """The names of the Mosaic kernels in a program compiled for a TPU, in order."""
    calls = re.findall(
        r"%(\w+?)(?:\.\d+)? = .*custom_call_target=\"tpu_custom_call\"", compiled.as_text()
    )
    return [name for name in calls if pattern in name]


def compile_error_bytes(error: Exception) -> int | None:
    """The shared memory a kernel asked for in XLA's refusal, or None for another error."""
    match = re.search(r"Shared memory size limit exceeded: requested (\d+)", str(error))
    return int(match.group(1)) if match else None


def ptxas_path() -> Path:
    """``ptxas`` of the nvcc wheel (``nvidia-cuda-nvcc-cu12``, or CUDA 13's
    ``nvidia-cuda-nvcc``), which XLA runs too."""
    import nvidia

    for root in map(Path, nvidia.__path__):
        for candidate in (root / "cuda_nvcc" / "bin" / "ptxas", root / "cu13" / "bin" / "ptxas"):
            if candidate.exists():
                return candidate
    raise FileNotFoundError("no ptxas: pip install 'rnn_jax[aot]' (nvidia-cuda-nvcc-cu12)")


def _with_registers(kernel: Kernel, dump: Path, name: str) -> Kernel:
    arch = {"h100": "sm_90a", "h200": "sm_90a", "b200": "sm_100a"}[name]
    for ptx in dump.glob("*.ptx"):
        if f".entry {kernel.name}(" not in ptx.read_text():
            continue
        info = subprocess.run(
            [str(ptxas_path()), f"-arch={arch}", "-v", str(ptx), "-o", os.devnull],
            capture_output=True,
            text=True,
            check=True,
        ).stderr
        entry = info[info.index(f"entry function '{kernel.name}'") :]
        registers = re.search(r"Used (\d+) registers", entry)
        spills = re.search(r"(\d+) bytes spill stores", entry)
        return kernel._replace(
            registers=int(registers.group(1)) if registers else None,
            spilled_bytes=int(spills.group(1)) if spills else 0,
        )
    return kernel
