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
   times faster than ``sequential`` there, fits the memory budget, and
   *supports* this cell and problem (its ``supports`` returns no reason). A
   backend is never chosen on a lead that run-to-run noise could reverse, nor
   where it cannot be exact. Where none leads, a run-time tie is broken by
   compilation (``compile`` in the table: seconds XLA took to compile the
   program once): a rival within `MARGIN` of ``sequential``'s time that
   compiled at least `COMPILE_LEAD` times quicker is tried, fastest first.
   The first run of a program pays its compilation, so a tie inside the noise
   is not worth seconds of it (the rule `benchmarks/dispatch_table.py` applies
   to ``sequential``'s own settings).
5. Memory: a backend's temporaries for this problem are estimated from
   those XLA reported at that shape (``temporaries`` in the table: the
   compiled program's ``memory_analysis()``), scaled by ``T * B * (I + H)``.
   The budget is `memory_budget`: the ``RNN_JAX_MEMORY_BUDGET`` environment
   variable (bytes, or with a ``K``/``M``/``G`` suffix, binary), else half the
   device's ``bytes_limit`` where ``memory_stats()`` reports one (GPUs, TPUs),
   else a quarter of the host's physical memory (a CPU). Where
   ``sequential``'s estimate is over the budget, the rivals that fit are
   tried fastest first with no margin to beat, then those that do not, least
   memory first. Where it fits but takes over 1/`LARGE_SHARE` of the budget,
   a rival that is lighter and within the margin of its time (a tie that
   noise could decide) is tried after the faster ones, lightest first: that
   much memory is worth more than a lead inside the noise. A backend with no
   recorded temporaries counts as fitting.
6. Nothing recorded or nothing qualifies: ``sequential``, which computes
   every cell.

`explain` says what `choose` picks and why (``rj.explain_auto`` from arrays).

`tuned_sequential` applies rules 1–3 to the ``sequential`` backend's own
sweeps (``unroll``, ``chunk``, ``residuals``, ``pipeline`` and
``weight_grads`` per shape and mode: the forward-only path of inference has
settings of its own), and falls back to `SEQUENTIAL_DEFAULTS` for settings
not swept.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, NamedTuple

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
# A program compiled once is timed once: its compile time is noisier than a median. A rival
# tied with sequential on run time must compile in at most half its time to be preferred.
COMPILE_LEAD = 2.0


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


class Budget(NamedTuple):
    """Bytes of temporaries one scan may use, and where the figure comes from."""

    bytes: int
    source: str


BUDGET_VARIABLE = "RNN_JAX_MEMORY_BUDGET"
# A device's memory holds parameters, optimiser state and other layers' activations
# besides one scan's temporaries; a host's, everything else the machine runs.
DEVICE_SHARE = 2
HOST_SHARE = 4
# Where sequential's temporaries exceed this share of the budget, a rival within the noise
# margin of its time and lighter in memory runs instead (rule 5).
LARGE_SHARE = 16
UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_bytes(text: str) -> int:
    """``"512M"``, ``"2GiB"``, ``"1073741824"``: a byte count (binary units); a ValueError
    naming `BUDGET_VARIABLE` for anything else."""
    cleaned = text.strip().upper().removesuffix("B").removesuffix("I")
    number, unit = (cleaned[:-1], cleaned[-1]) if cleaned[-1:] in UNITS else (cleaned, "")
    try:
        value = float(number) * UNITS[unit]
    except ValueError:
        value = -1.0
    if value <= 0:
        raise ValueError(
            f"{BUDGET_VARIABLE} must be a positive byte count such as 2G or 512M; got {text!r}"
        )
    return int(value)


def host_memory() -> int | None:
    """The host's physical memory in bytes (None where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def memory_budget(device: jax.Device | None = None) -> Budget:
    """The budget of rule 5 (module docstring), for ``device`` (default: this process's first)."""
    text = os.environ.get(BUDGET_VARIABLE)
    if text:
        return Budget(parse_bytes(text), BUDGET_VARIABLE)
    # This process's own device: another process's cannot be asked, and every process of
    # a run must choose alike (they run one program together).
    device = device or jax.local_devices()[0]
    stats = device.memory_stats() or {}
    if stats.get("bytes_limit"):
        return Budget(stats["bytes_limit"] // DEVICE_SHARE, f"1/{DEVICE_SHARE} of the device's")
    host = host_memory()
    if host:
        return Budget(host // HOST_SHARE, f"1/{HOST_SHARE} of the host's memory")
    return Budget(2**62, "unknown: no limit")


def volume(shape: dict) -> int:
    """``T * B * (I + H)``: what a scan's temporaries grow with."""
    return shape["T"] * shape["B"] * (shape["I"] + shape["H"])


def temporaries(entry: dict, shape: dict, mode: str) -> dict[str, int]:
    """Rule 5's estimates: each backend's recorded temporaries at ``entry``'s shape in
    ``mode``, scaled to ``shape``."""
    recorded = entry.get("temporaries", {}).get(mode, {})
    return {name: int(b * volume(shape) / volume(entry)) for name, b in recorded.items()}


def measured_mode(entry: dict, mode: str) -> str:
    """``mode``, else the other mode where only it was recorded at ``entry``."""
    return mode if entry.get(mode) else MODES[1 - MODES.index(mode)]


def medians_in(entry: dict, mode: str) -> dict[str, float]:
    """``entry``'s medians in its `measured_mode` (empty where nothing was recorded)."""
    return entry.get(measured_mode(entry, mode)) or {}


def compile_seconds_in(entry: dict, mode: str) -> dict[str, float]:
    """``entry``'s compile times in its `measured_mode` (empty where unrecorded)."""
    return entry.get("compile", {}).get(measured_mode(entry, mode), {})


def quicker_to_compile(
    medians: dict[str, float], compiled: dict[str, float], rivals: list[str]
) -> list[str]:
    """Rule 4's tie-break: the ``rivals`` within `MARGIN` of ``sequential``'s median that
    compiled at least `COMPILE_LEAD` times quicker, fastest first."""
    baseline, compile_baseline = medians[DEFAULT_BACKEND], compiled.get(DEFAULT_BACKEND)
    if compile_baseline is None:
        return []
    tied = [
        n
        for n in rivals
        if medians[n] <= baseline * MARGIN
        and n in compiled
        and compiled[n] * COMPILE_LEAD <= compile_baseline
    ]
    return sorted(tied, key=medians.get)


def ranked(
    entry: dict,
    platform: str,
    available: list[str],
    mode: str,
    *,
    estimates: dict[str, int] | None = None,
    budget: int | None = None,
) -> list[str]:
    """Rules 4 and 5 before ``supports``: the backends to try instead of ``sequential`` at
    ``entry``'s shape in ``mode`` (else the other mode), best first."""
    medians = medians_in(entry, mode)
    if DEFAULT_BACKEND not in medians:
        return []  # never chosen against an unmeasured baseline
    estimates = estimates or {}

    def fits(name):
        return budget is None or estimates.get(name, 0) <= budget

    rivals = [
        name
        for name in medians
        if name in available
        and name != DEFAULT_BACKEND
        and not (platform == "cpu" and name.startswith(NEVER_ON_CPU))
    ]
    baseline = medians[DEFAULT_BACKEND]
    if not fits(DEFAULT_BACKEND):
        fitting = sorted((n for n in rivals if fits(n)), key=medians.get)
        return fitting + sorted((n for n in rivals if not fits(n)), key=estimates.get)
    faster = sorted(
        (n for n in rivals if fits(n) and medians[n] < baseline / MARGIN), key=medians.get
    )
    tied = [n for n in rivals if fits(n) and n not in faster]
    quicker = quicker_to_compile(medians, compile_seconds_in(entry, mode), tied)
    if budget is None or estimates.get(DEFAULT_BACKEND, 0) * LARGE_SHARE <= budget:
        return faster + quicker
    lighter = [
        n
        for n in rivals
        if n not in faster
        and n not in quicker
        and medians[n] <= baseline * MARGIN
        and estimates.get(n, math.inf) < estimates[DEFAULT_BACKEND]
    ]
    return faster + quicker + sorted(lighter, key=estimates.get)


def table_and_platform(table: dict | None, platform: str | None) -> tuple[dict, str]:
    """The table to read (default: the packaged one) and the platform to read it for
    (default: JAX's default backend's)."""
    return (packaged_table() if table is None else table), (platform or jax.default_backend())


def entry_for(cell, problem: Problem, table: dict, platform: str) -> dict | None:
    """Rules 1–3: the table's entry nearest to this cell and problem."""
    entries = table.get("backends", {}).get(platform, [])
    return nearest(entries, cell.name, str(problem.xs.dtype), shape_of(cell, problem))


class Assessment(NamedTuple):
    """Rules 1–5 for one problem: the nearest ``entry`` (None: nothing recorded), each
    backend's ``estimates`` of temporaries there, and the ``names`` to try, best first."""

    entry: dict | None
    estimates: dict[str, int]
    names: list[str]


def assess(cell, problem: Problem, table: dict, platform: str, budget: Budget) -> Assessment:
    """Rules 1–5 before ``supports`` (see `Assessment`)."""
    entry = entry_for(cell, problem, table, platform)
    if entry is None:
        return Assessment(None, {}, [])
    mode = mode_of(problem)
    estimates = temporaries(entry, shape_of(cell, problem), mode)
    names = ranked(
        entry, platform, registry.names(), mode, estimates=estimates, budget=budget.bytes
    )
    return Assessment(entry, estimates, names)


def candidates(
    cell,
    problem: Problem,
    *,
    table: dict | None = None,
    platform: str | None = None,
    budget: Budget | None = None,
) -> list[str]:
    """Rules 1–5 before ``supports``: the names ``auto`` would try, best first."""
    table, platform = table_and_platform(table, platform)
    return assess(cell, problem, table, platform, budget or memory_budget()).names


@dataclass(frozen=True)
class Choice:
    """What ``auto`` runs for one problem, and why (`explain`).

    ``backend``: the one that runs; ``settings``: its tuned options where it is
    ``sequential``; ``shape``/``mode``: the problem's; ``measured_at``: the
    table's nearest shape (None: nothing recorded); ``seconds``: the medians
    there; ``temporaries``: the estimated bytes per backend; ``budget``: rule 5's;
    ``reason``: one sentence; ``compiled``: the seconds each backend's program took
    to compile there, where recorded.
    """

    backend: Backend
    settings: dict[str, Any]
    shape: dict[str, int]
    mode: str
    measured_at: dict[str, int] | None
    seconds: dict[str, float]
    temporaries: dict[str, int]
    budget: Budget
    reason: str
    compiled: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [f"auto runs {self.backend.name}: {self.reason}"]
        for name, seconds in sorted(self.seconds.items(), key=lambda item: item[1]):
            estimate = self.temporaries.get(name)
            memory = "" if estimate is None else f", ~{estimate / 2**20:,.0f} MiB of temporaries"
            compiled = self.compiled.get(name)
            compiled = "" if compiled is None else f", compiled in {compiled:.2f} s"
            lines.append(f"  {name}: {seconds * 1e3:,.1f} ms measured{memory}{compiled}")
        lines.append(f"  budget: {self.budget.bytes / 2**20:,.0f} MiB ({self.budget.source})")
        return "\n".join(lines)


def first_supported(cell, problem: Problem, names: list[str]) -> tuple[Backend | None, list]:
    """The first of ``names`` whose backend supports the problem, and the refusals before it."""
    refusals = []
    for name in names:
        backend = registry.get(name)
        refusal = backend.supports(cell, problem)
        if refusal is None:
            return backend, refusals
        refusals.append(f"{name} refuses: {refusal}")
    return None, refusals


def reason_for(
    name: str, seconds: dict, estimates: dict, budget: Budget, compiled: dict | None = None
) -> str:
    """One sentence on why ``name`` runs, from the medians, estimates and compile times at
    its shape."""
    if not seconds:
        return "nothing is measured for this cell"

    def mib(n):
        return f"~{estimates[n] / 2**20:,.0f} MiB" if n in estimates else "unrecorded memory"

    if name == DEFAULT_BACKEND:
        if estimates.get(name, 0) > budget.bytes:
            return f"over the memory budget ({mib(name)}), but no backend that fits runs this"
        return f"no rival measured {MARGIN}x faster within the budget runs this problem"
    lead = seconds[DEFAULT_BACKEND] / seconds[name]
    if lead >= MARGIN:
        return f"measured {lead:.2f}x faster than {DEFAULT_BACKEND}, {mib(name)} of temporaries"
    if estimates.get(DEFAULT_BACKEND, 0) > budget.bytes:
        return f"{DEFAULT_BACKEND} is over the memory budget ({mib(DEFAULT_BACKEND)}); {mib(name)}"
    if name in quicker_to_compile(seconds, compiled or {}, [name]):
        return (
            f"within the noise margin of {DEFAULT_BACKEND}'s time ({1 / lead:.2f}x it) and "
            f"compiled in {compiled[name]:.2f} s against {compiled[DEFAULT_BACKEND]:.2f} s"
        )
    return (
        f"within the noise margin of {DEFAULT_BACKEND}'s time ({1 / lead:.2f}x it) with "
        f"{mib(name)} of temporaries against {mib(DEFAULT_BACKEND)}"
    )


def explain(
    cell,
    problem: Problem,
    *,
    table: dict | None = None,
    platform: str | None = None,
    budget: Budget | None = None,
) -> Choice:
    """The backend ``auto`` runs for this cell and problem, with the evidence (`Choice`)."""
    table, platform = table_and_platform(table, platform)
    budget = budget or memory_budget()
    entry, estimates, names = assess(cell, problem, table, platform, budget)
    chosen, refusals = first_supported(cell, problem, names)
    chosen = chosen or registry.get(DEFAULT_BACKEND)
    seconds = {} if entry is None else medians_in(entry, mode_of(problem))
    compiled = {} if entry is None else compile_seconds_in(entry, mode_of(problem))
    reason = "; ".join([reason_for(chosen.name, seconds, estimates, budget, compiled), *refusals])
    sequential = chosen.name == DEFAULT_BACKEND
    return Choice(
        backend=chosen,
        settings=tuned_sequential(cell, problem, table=table, platform=platform)
        if sequential
        else {},
        shape=shape_of(cell, problem),
        mode=mode_of(problem),
        measured_at=None if entry is None else {k: entry[k] for k in SHAPE_KEYS},
        seconds=seconds,
        temporaries=estimates,
        budget=budget,
        reason=reason,
        compiled=compiled,
    )


def choose(
    cell,
    problem: Problem,
    *,
    table: dict | None = None,
    platform: str | None = None,
    budget: Budget | None = None,
) -> Backend:
    """The backend ``auto`` runs for this cell and problem (see the module docstring)."""
    names = candidates(cell, problem, table=table, platform=platform, budget=budget)
    return first_supported(cell, problem, names)[0] or registry.get(DEFAULT_BACKEND)


def tuned_sequential(
    cell, problem: Problem, *, table: dict | None = None, platform: str | None = None
) -> dict[str, Any]:
    """`SEQUENTIAL_DEFAULTS`' settings for ``sequential``, as measured (see the module doc)."""
    table, platform = table_and_platform(table, platform)
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
