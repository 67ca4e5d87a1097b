"""``backend="auto"`` and the sequential kernel's tuning: choices from measurements only.

Both read the packaged table ``rnn_jax/backends/dispatch.json``, which
``python benchmarks/dispatch_table.py`` compiles from the results files in
``benchmarks/results/`` (the suites' JSON; ``--quick`` runs never count).

The rule for `choose` (cell, problem):

1. The platform is ``jax.default_backend()`` (``cpu``, ``gpu``, ``tpu``); the
   shape is ``B`` (the problem's batch: under ``vmap`` the mapped axis is
   already folded in), ``T``, ``I`` = the last feature axis and ``H`` = the
   cell's ``hidden_size`` (else the width of its carry); the dtype is ``xs``'s.
2. Candidates are the table's entries for that platform and the cell's
   ``name`` (measurements are of that cell), of ``xs``'s dtype if any is
   recorded, else of any dtype.
3. Among them, the nearest shape wins: the smallest sum over ``B, T, I, H``
   of ``(log(recorded) - log(actual))**2``.
4. At that shape, the medians of the problem's mode decide: forward and
   backward when a gradient is taken (``problem.gradient``), forward alone for
   inference (the other mode's where only it was recorded): the fastest backend that
   is registered, is not ``pallas`` on a CPU, was measured at least `MARGIN`
   times faster than ``sequential`` there, and *supports* this cell and
   problem (its ``supports`` returns no reason). A backend is never chosen
   where the measurements show it slower than ``sequential``, nor on a lead
   that run-to-run noise could reverse, nor where it cannot be exact.
5. Nothing recorded or nothing qualifies: ``sequential``, which computes
   every cell.

`tuned_sequential` applies rules 1–3 to the ``sequential`` backend's own
sweeps (``unroll``, ``chunk``, ``residuals``, ``pipeline`` and
``weight_grads`` per shape and mode: the forward-only path of inference has
settings of its own), and falls back to `SEQUENTIAL_DEFAULTS` for settings
not swept.
"""

from __future__ import annotations

import json
import math
from functools import cache
from importlib import resources
from typing import Any

import jax

from rnn_jax.backends import registry
from rnn_jax.backends.contract import Backend, Problem

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


def hidden_size(cell, problem: Problem) -> int:
    """The cell's ``hidden_size`` (its config), else the width of its carry's first leaf."""
    hidden = cell.config.get("hidden_size")
    if isinstance(hidden, int):
        return hidden
    return int(jax.tree.leaves(problem.initial_state)[0].shape[-1])


def shape_of(cell, problem: Problem) -> dict[str, int]:
    """``{"B", "T", "I", "H"}`` of a problem: batch size, steps, features, hidden units."""
    sizes = {
        "B": problem.batch,
        "T": problem.steps,
        "I": int(problem.xs.shape[-1]),
        "H": hidden_size(cell, problem),
    }
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


MODES = ("forward", "forward_backward")


def mode_of(problem: Problem) -> str:
    """``"forward_backward"`` when a gradient is taken, ``"forward"`` for inference."""
    return "forward_backward" if problem.gradient else "forward"


def ranked(entry: dict, platform: str, available: list[str], mode: str) -> list[str]:
    """Rule 4 before ``supports``: the backends measured at least `MARGIN` times faster than
    ``sequential`` at ``entry``'s shape in ``mode`` (else the other mode), fastest first."""
    other = MODES[1 - MODES.index(mode)]
    medians = entry.get(mode) or entry.get(other) or {}
    if DEFAULT_BACKEND not in medians:
        return []  # never chosen against an unmeasured baseline
    bar = medians[DEFAULT_BACKEND] / MARGIN
    rivals = [
        name
        for name, seconds in medians.items()
        if name in available
        and name != DEFAULT_BACKEND
        and not (platform == "cpu" and name.startswith(NEVER_ON_CPU))
        and seconds < bar
    ]
    return sorted(rivals, key=medians.__getitem__)


def candidates(cell, problem: Problem, *, table: dict | None = None, platform: str | None = None):
    """Rules 1–4 before ``supports``: the names ``auto`` would try, best first."""
    table = packaged_table() if table is None else table
    platform = platform or jax.default_backend()
    entries = table.get("backends", {}).get(platform, [])
    entry = nearest(entries, cell.name, str(problem.xs.dtype), shape_of(cell, problem))
    if entry is None:
        return []
    return ranked(entry, platform, registry.names(), mode_of(problem))


def choose(
    cell, problem: Problem, *, table: dict | None = None, platform: str | None = None
) -> Backend:
    """The backend ``auto`` runs for this cell and problem (see the module docstring)."""
    for name in candidates(cell, problem, table=table, platform=platform):
        backend = registry.get(name)
        if backend.supports(cell, problem) is None:
            return backend
    return registry.get(DEFAULT_BACKEND)


def tuned_sequential(
    cell, problem: Problem, *, table: dict | None = None, platform: str | None = None
) -> dict[str, Any]:
    """`SEQUENTIAL_DEFAULTS`' settings for ``sequential``, as measured (see the module doc)."""
    table = packaged_table() if table is None else table
    platform = platform or jax.default_backend()
    swept = table.get("sequential", {}).get(platform, [])
    # sweeps from before modes were swept tuned forward and backward
    same_mode = [e for e in swept if e.get("mode", "forward_backward") == mode_of(problem)]
    entries = same_mode or swept
    shape, dtype = shape_of(cell, problem), str(problem.xs.dtype)
    entry = nearest(entries, cell.name, dtype, shape)
    if entry is None:  # another cell's sweep at the nearest shape beats no measurement
        entry = nearest([dict(e, cell=cell.name) for e in entries], cell.name, dtype, shape)
    if entry is None:
        return dict(SEQUENTIAL_DEFAULTS)
    return {key: entry.get(key, default) for key, default in SEQUENTIAL_DEFAULTS.items()}
