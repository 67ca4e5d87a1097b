"""The onednn backend's compiled kernels: found, loaded and registered with XLA on first use.

Two shared libraries make the backend: oneDNN itself (``libdnnl.so.3`` from the
``onednn-cpu-gomp`` wheel of the ``onednn`` extra, which installs it into the
environment's ``lib`` folder, outside ``sys.path``) and rnn_jax's kernels, built
against it at install time (``rnn_jax/backends/_onednn_kernels*.so``: XLA FFI
handlers in C++, from ``csrc/onednn``; setup.py). oneDNN is loaded first, globally, so the kernels'
dependency on it resolves wherever the wheel put it; the kernels are loaded with
ctypes (they are no Python module) and their handlers registered as XLA FFI
targets for the CPU.

Nothing is loaded by ``import rnn_jax``: `unavailable` loads on first call and
says, in words, why the backend cannot run (the kernels were not built, oneDNN
is not installed, a library failed to load), or None.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
from functools import cache
from pathlib import Path

import jax

ONEDNN_DISTRIBUTION = "onednn-cpu-gomp"
ONEDNN_LIBRARY = "libdnnl.so.3"
KERNELS_MODULE = "rnn_jax.backends._onednn_kernels"
FFI_TARGETS = ("rnn_onednn_forward_inference", "rnn_onednn_forward_training", "rnn_onednn_backward")
INSTALL = "pip install 'rnn_jax[onednn]'"


class Unavailable(Exception):
    """Why the kernels cannot be used, in words."""


def onednn_path() -> Path:
    """Where the ``onednn-cpu-gomp`` wheel installed ``libdnnl.so.3`` (its record says)."""
    try:
        files = importlib.metadata.distribution(ONEDNN_DISTRIBUTION).files or []
    except importlib.metadata.PackageNotFoundError:
        raise Unavailable(f"oneDNN's library is not installed (its extra: {INSTALL})") from None
    for file in files:
        if file.name == ONEDNN_LIBRARY:
            return Path(file.locate()).resolve()
    raise Unavailable(f"the {ONEDNN_DISTRIBUTION} package has no {ONEDNN_LIBRARY}")


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
    kernels.rnn_onednn_version.restype = ctypes.c_char_p


def _load() -> ctypes.CDLL:
    onednn, kernels = onednn_path(), kernels_path()
    try:
        ctypes.CDLL(str(onednn), mode=ctypes.RTLD_GLOBAL)
        library = ctypes.CDLL(str(kernels))
    except OSError as error:
        raise Unavailable(f"the oneDNN kernels failed to load: {error}") from None
    _declare(library)
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


def onednn_version() -> str:
    """oneDNN's version, ``"major.minor.patch"``, as the loaded library reports it."""
    return kernels().rnn_onednn_version().decode()


@cache
def workspace_bytes(mode: int, steps: int, batch: int, inputs: int, hidden: int, segments: int):
    """Bytes of the workspace a training forward pass of this shape keeps, for up to
    ``segments`` distinct lengths (see csrc/onednn/scan.h)."""
    library = kernels()
    size = library.rnn_onednn_workspace_bytes(mode, steps, batch, inputs, hidden, segments)
    if size < 0:
        raise ValueError(f"oneDNN refused the RNN: {library.rnn_onednn_last_error().decode()}")
    return size
