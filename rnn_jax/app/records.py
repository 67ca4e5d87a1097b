"""The files a run leaves, written atomically: results documents in the benchmark suites' schema.

Every file is written to a temporary name beside its target and renamed into
place (`write_atomically`), so a reader, or a run killed mid-write, never sees
half a file.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO


def write_atomically(path: str | Path, write: Callable[[BinaryIO], Any]) -> Path:
    """Calls ``write(file)`` on a temporary file beside ``path``, then renames it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # as a plain open() would have made it
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def environment() -> dict[str, Any]:
    """Where a run ran: ``machine`` (platform, device, CPU, cores, load) and package ``versions``.

    The same fields as the benchmark suites' results (``benchmarks/results/``),
    whose schema training results follow with an empty ``records`` list.
    """
    import platform
    import sys
    from importlib import metadata

    import jax

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    versions = {}
    for name in ("rnn_jax", "jax", "jaxlib", "optax", "orbax-checkpoint", "numpy"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "machine": {
            "platform": jax.default_backend(),
            "device_kind": jax.devices()[0].device_kind,
            "cpu": cpu,
            "cores": cores,
            "load_average_1min": round(os.getloadavg()[0], 2)
            if hasattr(os, "getloadavg")
            else None,
            "os": platform.platform(),
            "python": sys.version.split()[0],
        },
        "versions": versions,
    }


def results_document(suite: str, command: str | None, **content: Any) -> dict[str, Any]:
    """A results JSON in the benchmark suites' schema (no timing ``records``) around ``content``."""
    import datetime
    import sys

    return {
        "schema": 1,
        "suite": suite,
        "command": command or " ".join(["python", *sys.argv]),
        "created": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "quick": False,
        **environment(),
        "records": [],
        **content,
    }


def _clean(value: Any) -> Any:
    """JSON-safe: numpy scalars to Python, non-finite floats to None."""
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | Path, data: Any) -> Path:
    """Writes ``data`` as indented JSON, atomically; numpy scalars become numbers, NaN null.

    Example:
        >>> import json, pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "results.json"
        >>> json.loads(rj.app.write_json(path, {"loss": float("nan"), "steps": 3}).read_text())
        {'loss': None, 'steps': 3}
    """
    text = json.dumps(_clean(data), indent=2, sort_keys=False) + "\n"
    return write_atomically(path, lambda file: file.write(text.encode()))
