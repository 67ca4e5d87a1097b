"""``backend="auto"`` and the sequential kernel's tuning: choices from measurements only.

Both read the packaged table ``rnn_jax/backends/dispatch.json``, which
``python benchmarks/dispatch_table.py`` compiles from the results files in
``benchmarks/results/`` (the suites' JSON; ``--quick`` runs never count).

The rule for ``choose_backend(cell, xs, length)``:

1. The platform is ``jax.default_backend()`` (``cpu``, ``gpu``, ``tpu``); the
   shape is ``B`` = the product of the batch axes, ``T``, ``I`` = the feature
   axis of ``xs`` and ``H`` = the cell's ``hidden_size`` (else the width of
   its carry); the dtype is ``xs``'s.
2. Candidates are the table's entries for that platform and the cell's
   ``name``, of ``xs``'s dtype if any is recorded, else of any dtype.
3. Among them, the nearest shape wins: the smallest sum over ``B, T, I, H``
   of ``(log(recorded) - log(actual))**2``.
4. At that shape, the entry's forward-and-backward medians decide (the
   forward medians where no backward was recorded): the fastest backend that
   is registered, is not ``pallas`` on a CPU and was measured at least
   `MARGIN` times faster than ``sequential`` there. A backend is never chosen
   where the measurements show it slower than ``sequential``, nor on a lead
   that run-to-run noise could reverse.
5. Nothing recorded, or the winner declines the cell at trace time (a
   ``ValueError`` naming it): ``sequential``.

``tuned_sequential(cell, xs)`` applies rules 1–3 to the ``sequential``
backend's own sweeps (``unroll``, ``chunk``, ``residuals``, ``pipeline`` and
``weight_grads`` per shape), and falls back to `SEQUENTIAL_DEFAULTS` for settings not swept.
"""

from __future__ import annotations

import json
import math
from functools import cache
from importlib import resources
from typing import Any

import jax
import numpy as np

from rnn_jax.backends.registry import Backend, backend_names, get_backend

TABLE = "dispatch.json"
DEFAULT_BACKEND = "sequential"
SHAPE_KEYS = ("B", "T", "I", "H")
# Used where nothing is recorded for the platform; see the module docstring.
SEQUENTIAL_DEFAULTS = {
    "unroll": 1,
    "chunk": 16,
    "residuals": "recompute",
    "pipeline": True,
    "weight_grads": "per_chunk",
}
NEVER_ON_CPU = ("pallas",)
# Medians of one setting in two runs on a shared 2-core machine differ by up to ~30%
# (Elman at L: 64 ms in cpu_sweep-cpu-20261122T014900Z.json, 87 ms in
# cpu_suite-cpu-20261122T015631Z.json); ratios within one run by far less. A 10% lead
# within one run is what a rival backend must show.
MARGIN = 1.1


@cache
def packaged_table() -> dict[str, Any]:
    """The dispatch table shipped with the package (empty where none is built yet)."""
    try:
        text = resources.files("rnn_jax.backends").joinpath(TABLE).read_text()
    except (FileNotFoundError, OSError):
        return {}
    return json.loads(text)


def shape_of(cell, xs) -> dict[str, int]:
    """``{"B", "T", "I", "H"}`` of a scan: batch size, steps, features, hidden units."""
    batch = int(np.prod(xs.shape[1:-1], dtype=np.int64))
    hidden = (cell.config or {}).get("hidden_size")
    if not isinstance(hidden, int):
        try:
            carry = jax.eval_shape(lambda: cell.initial_state(None, ()))
            hidden = int(jax.tree.leaves(carry)[0].shape[-1])
        except Exception:  # a cell whose zeros need real params: the shape barely matters
            hidden = int(xs.shape[-1])
    sizes = {"B": batch, "T": int(xs.shape[0]), "I": int(xs.shape[-1]), "H": hidden}
    return {k: max(v, 1) for k, v in sizes.items()}


def log_distance(a: dict, b: dict) -> float:
    return sum((math.log(a[k]) - math.log(b[k])) ** 2 for k in SHAPE_KEYS)


def nearest(entries: list[dict], cell_name: str, dtype: str, shape: dict) -> dict | None:
    """Rules 2 and 3: the entry for ``cell_name`` nearest to ``shape`` (``dtype`` first)."""
    same_cell = [e for e in entries if e.get("cell") == cell_name]
    same_dtype = [e for e in same_cell if e.get("dtype") == dtype]
    pool = same_dtype or same_cell
    if not pool:
        return None
    return min(pool, key=lambda e: log_distance(e, shape))


def fastest(entry: dict, platform: str, available: list[str]) -> str:
    """Rule 4: the recorded backend to run at ``entry``'s shape."""
    medians = entry.get("forward_backward") or entry.get("forward") or {}
    if DEFAULT_BACKEND not in medians:
        return DEFAULT_BACKEND  # never chosen against an unmeasured baseline
    best, best_time = DEFAULT_BACKEND, medians[DEFAULT_BACKEND] / MARGIN
    for name, seconds in medians.items():
        if name not in available or (platform == "cpu" and name.startswith(NEVER_ON_CPU)):
            continue
        if seconds < best_time:
            best, best_time = name, seconds
    return best


def choose_backend_name(cell, xs, *, table: dict | None = None, platform: str | None = None) -> str:
    """The name of the backend ``auto`` picks (rules 1–4), from ``table`` or the packaged one."""
    table = packaged_table() if table is None else table
    platform = platform or jax.default_backend()
    entries = table.get("backends", {}).get(platform, [])
    entry = nearest(entries, cell.name, str(xs.dtype), shape_of(cell, xs))
    if entry is None:
        return DEFAULT_BACKEND
    return fastest(entry, platform, backend_names())


def choose_backend(cell, xs, length) -> Backend:
    """The backend ``auto`` runs for this cell and input (see the module docstring)."""
    del length
    name = choose_backend_name(cell, xs)
    if name == DEFAULT_BACKEND:
        return get_backend(DEFAULT_BACKEND)
    chosen = get_backend(name)

    def run(cell, params, xs, **kwargs):
        try:
            return chosen.run(cell, params, xs, **kwargs)
        except ValueError as error:
            if name not in str(error):
                raise
            return get_backend(DEFAULT_BACKEND).run(cell, params, xs, **kwargs)

    return Backend(f"auto:{name}", run)


def tuned_sequential(
    cell, xs, *, table: dict | None = None, platform: str | None = None
) -> dict[str, Any]:
    """`SEQUENTIAL_DEFAULTS`' settings for ``sequential``, as measured (see the module doc)."""
    table = packaged_table() if table is None else table
    platform = platform or jax.default_backend()
    entries = table.get("sequential", {}).get(platform, [])
    entry = nearest(entries, cell.name, str(xs.dtype), shape_of(cell, xs))
    if entry is None:  # another cell's sweep at the nearest shape beats no measurement
        entry = nearest(
            [dict(e, cell=cell.name) for e in entries], cell.name, str(xs.dtype), shape_of(cell, xs)
        )
    if entry is None:
        return dict(SEQUENTIAL_DEFAULTS)
    return {key: entry.get(key, default) for key, default in SEQUENTIAL_DEFAULTS.items()}
