"""The onednn backend's compiled kernels: found, loaded and registered with XLA on first use.

Two shared libraries make the backend: oneDNN itself (``libdnnl.so.3``, which
oneDNN's wheels install into the environment's ``lib`` folder, outside
``sys.path``) and rnn_jax's kernels, built at install time against oneDNN 3.2's
headers (``rnn_jax/backends/_onednn_kernels*.so``: XLA FFI handlers in C++, from
``csrc/onednn``; setup.py). oneDNN is loaded first, globally, so the kernels'
dependency on it resolves wherever the wheel put it; the kernels are loaded with
ctypes (they are no Python module) and their handlers registered as XLA FFI
targets for the CPU. oneDNN keeps its ABI within a major version: the kernels
built against 3.2 run on 3.13, the ``onednn`` extra's (the tests run them there).

Which oneDNN: the first installed of `ONEDNN_DISTRIBUTIONS`. The ``onednn`` extra
installs the ``onednn`` wheel (oneDNN 3.13, a SYCL build: its CPU primitives run
on the SYCL CPU device of Intel's OpenCL runtime, ``intel-opencl-rt``, over TBB
threads); ``onednn-cpu-gomp`` (oneDNN 3.2 on GNU OpenMP, the newest build of
that kind on the package index) is used where it is the one installed. Both put
their library at the same path, so an environment holds one of them. The
OpenCL runtime's vendor file names a path from Intel's build machine, so the
runtime's library is named to the OpenCL loader through ``OCL_ICD_FILENAMES``
(added to, never replaced) before oneDNN loads.

Nothing is loaded by ``import rnn_jax``: `unavailable` loads on first call and
says, in words, why the backend cannot run (the kernels were not built, oneDNN
is not installed, a library failed to load), or None.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import os
from functools import cache
from pathlib import Path

import jax

ONEDNN_DISTRIBUTIONS = ("onednn", "onednn-cpu-gomp")
ONEDNN_LIBRARY = "libdnnl.so.3"
OPENCL_DISTRIBUTION, OPENCL_LIBRARY = "intel-opencl-rt", "libintelocl.so"
# What the SYCL build of libdnnl.so.3 links, in an order in which each one's own
# dependencies come first. The wheels install them beside it, and libdnnl has no
# RUNPATH to find them there, so they are loaded from there first.
SYCL_BUILD_DEPENDENCIES = (
    "libintlc.so.5",
    "libimf.so",
    "libsvml.so",
    "libtbb.so.12",
    "libsycl.so.9",
)
# dnnl_version_t's cpu_runtime values (oneapi/dnnl/dnnl_config.h)
CPU_RUNTIMES = {0: "none", 1: "OpenMP", 2: "sequential", 4: "TBB", 8: "threadpool", 512: "SYCL"}
KERNELS_MODULE = "rnn_jax.backends._onednn_kernels"
FFI_TARGETS = ("rnn_onednn_forward_inference", "rnn_onednn_forward_training", "rnn_onednn_backward")
INSTALL = "pip install 'rnn_jax[onednn]'"


class Unavailable(Exception):
    """Why the kernels cannot be used, in words."""


def installed_file(distribution: str, name: str) -> Path | None:
    """The file ``name`` that ``distribution`` installed (its record says), or None."""
    try:
        files = importlib.metadata.distribution(distribution).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    located = (Path(file.locate()).resolve() for file in files if file.name == name)
    return next((path for path in located if path.exists()), None)


def onednn_path() -> Path:
    """``libdnnl.so.3`` of the first installed of `ONEDNN_DISTRIBUTIONS`."""
    for distribution in ONEDNN_DISTRIBUTIONS:
        path = installed_file(distribution, ONEDNN_LIBRARY)
        if path is not None:
            return path
    raise Unavailable(f"oneDNN's library is not installed (its extra: {INSTALL})")


def load_dependencies(onednn: Path) -> None:
    """Loads, globally, those of `SYCL_BUILD_DEPENDENCIES` that lie beside ``onednn``."""
    for name in SYCL_BUILD_DEPENDENCIES:
        path = onednn.parent / name
        if path.exists():
            ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)


def name_opencl_runtime() -> None:
    """Adds Intel's OpenCL CPU runtime, where installed, to ``OCL_ICD_FILENAMES``."""
    runtime = installed_file(OPENCL_DISTRIBUTION, OPENCL_LIBRARY)
    named = [name for name in os.environ.get("OCL_ICD_FILENAMES", "").split(":") if name]
    if runtime is not None and str(runtime) not in named:
        os.environ["OCL_ICD_FILENAMES"] = ":".join([*named, str(runtime)])


def kernels_path() -> Path:
    """The kernels built at install time (an extension file, never imported as a module)."""
    spec = importlib.util.find_spec(KERNELS_MODULE)
    if spec is None or spec.origin is None:
        raise Unavailable(
            "rnn_jax was installed without its oneDNN kernels (they build on Linux x86-64 with "
            f"a C++17 compiler and OpenMP: reinstall there, {INSTALL})"
        )
    return Path(spec.origin)


def _declare(kernels: ctypes.CDLL) -> None:
    kernels.rnn_onednn_workspace_bytes.restype = ctypes.c_int64
    kernels.rnn_onednn_workspace_bytes.argtypes = [ctypes.c_int32] + [ctypes.c_int64] * 5
    kernels.rnn_onednn_last_error.restype = ctypes.c_char_p


def _load() -> ctypes.CDLL:
    onednn, kernels = onednn_path(), kernels_path()
    name_opencl_runtime()
    try:
        load_dependencies(onednn)
        ctypes.CDLL(str(onednn), mode=ctypes.RTLD_GLOBAL)
        library = ctypes.CDLL(str(kernels))
    except OSError as error:
        raise Unavailable(f"the oneDNN kernels failed to load: {error}") from None
    _declare(library)
    # oneDNN creates its CPU engine on first use; a SYCL build finds no CPU device where
    # the OpenCL runtime is missing or cannot run, which would otherwise surface only as
    # an error inside the first compiled call. A workspace query creates the engine now.
    if library.rnn_onednn_workspace_bytes(2, 1, 1, 1, 1, 1) < 0:
        reason = library.rnn_onednn_last_error().decode()
        raise Unavailable(f"oneDNN cannot run on this machine: {reason}")
    _register(library)
    return library


@cache
def _loaded() -> ctypes.CDLL | Unavailable:
    try:
        return _load()
    except Unavailable as reason:
        return reason


@cache
def _register(library: ctypes.CDLL) -> None:
    for target in FFI_TARGETS:
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, target)), "cpu")


def unavailable() -> str | None:
    """Why the onednn backend cannot run in this process, in words; None when it can."""
    loaded = _loaded()
    return str(loaded) if isinstance(loaded, Unavailable) else None


def kernels() -> ctypes.CDLL:
    """The loaded kernels; raises `Unavailable` where `unavailable` gives a reason."""
    loaded = _loaded()
    if isinstance(loaded, Unavailable):
        raise loaded
    return loaded


class _Version(ctypes.Structure):
    _fields_ = [
        ("major", ctypes.c_int),
        ("minor", ctypes.c_int),
        ("patch", ctypes.c_int),
        ("hash", ctypes.c_char_p),
        ("cpu_runtime", ctypes.c_uint),
        ("gpu_runtime", ctypes.c_uint),
    ]


@cache
def cpu_runtime() -> str:
    """What runs the loaded oneDNN's CPU primitives: ``"OpenMP"``, ``"SYCL"``, ``"TBB"``..."""
    kernels()
    version = ctypes.CDLL(str(onednn_path())).dnnl_version
    version.restype = ctypes.POINTER(_Version)
    code = version().contents.cpu_runtime
    return CPU_RUNTIMES.get(code, f"runtime {code}")


@cache
def workspace_bytes(mode: int, steps: int, batch: int, inputs: int, hidden: int, segments: int):
    """Bytes of the workspace a training forward pass of this shape keeps, for up to
    ``segments`` distinct lengths (see csrc/onednn/scan.h)."""
    library = kernels()
    size = library.rnn_onednn_workspace_bytes(mode, steps, batch, inputs, hidden, segments)
    if size < 0:
        raise ValueError(f"oneDNN refused the RNN: {library.rnn_onednn_last_error().decode()}")
    return size
