"""Builds rnn_jax's one compiled part: the oneDNN kernels behind ``backend="onednn"``.

Everything else about the package is in ``pyproject.toml``. The extension is a plain
shared library of XLA FFI handlers (no Python C API), which ``rnn_jax.backends.
_onednn_library`` loads with ctypes. It is optional: where oneDNN's headers
(``onednn-devel-cpu-gomp``) or XLA's FFI headers (``jaxlib``) are not installed in the
build environment, or the compiler fails, the package installs without it and the
backend refuses in words.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

from setuptools import Extension, setup

SOURCES = [
    "csrc/onednn/cells.cc",
    "csrc/onednn/reused.cc",
    "csrc/onednn/scan.cc",
    "csrc/onednn/ffi.cc",
]


def installed_file(distribution: str, suffix: str) -> Path | None:
    """The file of the installed ``distribution`` whose path ends with ``suffix``, or None.

    The oneDNN wheels install into the environment's ``include`` and ``lib`` folders
    (outside site-packages), wherever the installer puts them; their records say where.
    """
    try:
        files = importlib.metadata.distribution(distribution).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    found = next((f for f in files if f.as_posix().endswith(suffix)), None)
    return None if found is None else Path(found.locate()).resolve()


def onednn_kernels() -> list[Extension]:
    header = installed_file("onednn-devel-cpu-gomp", "/oneapi/dnnl/dnnl.hpp")
    library = installed_file("onednn-cpu-gomp", "/libdnnl.so")
    jaxlib = importlib.util.find_spec("jaxlib")
    if header is None or library is None or jaxlib is None:
        print("rnn_jax: oneDNN or jaxlib headers not found; building without the onednn backend")
        return []
    ffi_headers = Path(next(iter(jaxlib.submodule_search_locations)), "include")
    return [
        Extension(
            "rnn_jax.backends._onednn_kernels",
            sources=SOURCES,
            depends=["csrc/onednn/cells.h", "csrc/onednn/reused.h", "csrc/onednn/scan.h"],
            include_dirs=[str(header.parents[2]), str(ffi_headers)],
            library_dirs=[str(library.parent)],
            libraries=["dnnl"],
            extra_compile_args=["-std=c++17", "-O2", "-fopenmp"],
            extra_link_args=["-fopenmp"],
            language="c++",
            optional=True,  # a failed build leaves the backend refusing, not the install failing
        )
    ]


setup(ext_modules=onednn_kernels())
