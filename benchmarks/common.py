"""Shared helpers for the benchmark suites: timing, machine description, results JSON.

Every suite writes one JSON file per run into ``benchmarks/results/`` with one
schema, which ``benchmarks/dispatch_table.py`` reads to build the table behind
``backend="auto"``::

    {
      "schema": 1,
      "suite": "cpu_suite",                  # which script wrote it
      "command": "python benchmarks/cpu_suite.py",
      "created": "2025-01-01T12:00:00Z",
      "quick": false,                        # --quick runs are never used for dispatch
      "machine": {"platform": "cpu" | "gpu" | "tpu", "device_kind": ..., "cpu": ...,
                  "cores": 2, "memory_gib": ..., "os": ..., "python": ...,
                  "gemm_gflops": ...},       # float32 GEMM rate measured in the same run
      "versions": {"jax": ..., "jaxlib": ..., ...},
      "records": [
        {"cell": "lstm", "backend": "sequential",   # or "library": "flax" for peers
         "B": 32, "T": 128, "I": 64, "H": 256, "dtype": "float32",
         "mode": "forward" | "forward_backward",
         "median_s": 0.0123, "q25_s": ..., "q75_s": ..., "repeats": 30,
         "gflops": ...,                              # achieved rate (matmul FLOPs / median)
         ...}                                        # suites may add fields
      ]
    }

A record names either ``backend`` (an ``rnn_jax`` scan backend, the ones the
dispatch table uses) or ``library`` (a peer: ``torch``, ``flax``, ...), never
both.

Timing: ``interleaved`` runs every case in turn, round after round in a
shuffled order, so slow drifts of a shared 2-core machine hit all cases alike;
medians over many repetitions, after compilation and warm-up.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple

SCHEMA_VERSION = 1
RESULTS_DIR = Path(__file__).resolve().parent / "results"
MODES = ("forward", "forward_backward")
# A mode timed only on request: the gradient of sum(outputs), for comparison with older runs.
EXTRA_MODES = ("forward_backward_sum",)
PLATFORMS = ("cpu", "gpu", "tpu")
RECORD_KEYS = ("cell", "B", "T", "I", "H", "dtype", "mode", "median_s")
VERSION_PACKAGES = (
    "rnn_jax",
    "jax",
    "jaxlib",
    "jax-cuda12-plugin",
    "onednn",
    "onednn-cpu-gomp",
    "libtpu",
    "numpy",
    "flax",
    "equinox",
    "keras",
    "torch",
    "optax",
)
# Matmuls per step of the gated cells: the gate count G (input and recurrent kernels are
# [I, G*H] and [H, G*H]).
GATE_COUNT = {"simple": 1, "gru": 3, "mgu": 2, "lstm": 4, "indrnn": 0}


# ----------------------------------------------------------------------------- timing


class Stats(NamedTuple):
    """Robust summary of repeated timings, in seconds."""

    median_s: float
    q25_s: float
    q75_s: float
    repeats: int

    @classmethod
    def of(cls, times: Iterable[float]) -> Stats:
        times = sorted(times)
        if not times:
            raise ValueError("Stats.of needs at least one timing")
        if len(times) == 1:
            return cls(times[0], times[0], times[0], 1)
        q = statistics.quantiles(times, n=4, method="inclusive")
        return cls(statistics.median(times), q[0], q[2], len(times))

    def as_dict(self) -> dict[str, float | int]:
        return self._asdict()


def blocking(fn: Callable[..., Any], *args: Any) -> Callable[[], Any]:
    """A zero-argument callable that runs ``fn(*args)`` and waits for its JAX results."""
    import jax

    def run():
        return jax.block_until_ready(fn(*args))

    return run


def time_once(run: Callable[[], Any]) -> float:
    """Wall time of one call of ``run`` (which must block until its work is done)."""
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def interleaved(
    cases: Mapping[str, Callable[[], Any]],
    *,
    rounds: int = 10,
    per_round: int = 3,
    warmup: int = 2,
    seed: int = 0,
    budget_s: float | None = None,
) -> dict[str, Stats]:
    """Times every case ``rounds * per_round`` times, interleaved; returns medians per case.

    Each callable must block until its work is done (see `blocking`). All cases
    are first called ``warmup`` times (compilation, caches). Each round then
    visits the cases in a fresh random order and times ``per_round`` calls of
    each. ``budget_s`` stops after the round in which it is exceeded (at least
    three rounds run), for cases that turn out slow.
    """
    for run in cases.values():
        for _ in range(warmup):
            run()
    rng = random.Random(seed)
    names = list(cases)
    times: dict[str, list[float]] = {name: [] for name in names}
    start = time.perf_counter()
    for r in range(rounds):
        rng.shuffle(names)
        for name in names:
            for _ in range(per_round):
                times[name].append(time_once(cases[name]))
        if budget_s is not None and r >= 2 and time.perf_counter() - start > budget_s:
            break
    return {name: Stats.of(ts) for name, ts in times.items()}


def op_profile(run: Callable[[], Any], repeats: int = 5, top: int = 12) -> list[dict[str, Any]]:
    """Wall time per XLA operation of ``run`` (which calls compiled JAX code), per call.

    From a ``jax.profiler`` trace: the CPU runtime records one event per
    executed operation (fusion, dot, loop), so this shows where a case spends
    its time. Returns the ``top`` operations: ``{"op", "ms", "calls"}``.
    """
    import glob
    import gzip
    import tempfile
    from collections import Counter

    import jax

    directory = tempfile.mkdtemp()
    with jax.profiler.trace(directory, create_perfetto_trace=True):
        for _ in range(repeats):
            run()
    path = glob.glob(f"{directory}/**/*.trace.json.gz", recursive=True)[0]
    with gzip.open(path) as f:
        events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    total, count = Counter(), Counter()
    for e in events:
        name = e.get("name", "")
        if e.get("ph") == "X" and not name.startswith(("$", "end:", "Thunk", "Pjit", "Common")):
            total[name] += e["dur"]
            count[name] += 1
    return [
        {"op": name, "ms": total[name] / repeats / 1e3, "calls": count[name] // repeats}
        for name, _ in total.most_common(top)
    ]


# ----------------------------------------------------------------------------- FLOPs


class Shape(NamedTuple):
    """A benchmark shape: batch ``B``, steps ``T``, input features ``I``, hidden units ``H``."""

    B: int
    T: int
    I: int  # noqa: E741  (the schema's name)
    H: int

    @property
    def label(self) -> str:
        return f"B{self.B} T{self.T} I{self.I} H{self.H}"


def training_loss(apply: Callable[..., Any], *args: Any) -> Callable[..., Any]:
    """``loss(*args)``: the mean squared error of ``apply(*args)`` (a pytree of outputs)
    against a fixed random target, the loss every suite's backward is timed on: its
    cotangent depends on the outputs, as in training (a constant one, as ``sum(outputs)``
    gives, flatters a custom backward pass)."""
    import jax
    import jax.numpy as jnp

    leaves, tree = jax.tree.flatten(jax.eval_shape(apply, *args))
    keys = jax.random.split(jax.random.key(2), len(leaves))
    targets = tree.unflatten(
        [jax.random.normal(k, s.shape, s.dtype) for k, s in zip(keys, leaves, strict=True)]
    )

    def loss(*args):
        errors = jax.tree.map(
            lambda y, t: jnp.mean((y - t).astype(jnp.float32) ** 2), apply(*args), targets
        )
        return sum(jax.tree.leaves(errors))

    return loss


def equinox_layer(cell_name: str, shape: Shape) -> tuple[Callable[..., Any], Any, Any] | None:
    """``(apply, params, x)``: Equinox's LSTM or GRU cell vmapped over the batch inside
    ``lax.scan`` on time-major ``x [T, B, I]``, as a user of Equinox writes a layer; None for
    other cells (Equinox has no Elman cell)."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    if cell_name not in ("lstm", "gru"):
        return None
    make = eqx.nn.LSTMCell if cell_name == "lstm" else eqx.nn.GRUCell
    params, static = eqx.partition(make(shape.I, shape.H, key=jax.random.key(0)), eqx.is_array)
    zeros = jnp.zeros((shape.B, shape.H))
    hidden0 = (zeros, zeros) if cell_name == "lstm" else zeros

    def apply(params, x):
        batched = jax.vmap(eqx.combine(params, static))

        def step(hidden, x_t):
            hidden = batched(x_t, hidden)
            return hidden, hidden[0] if cell_name == "lstm" else hidden

        return jax.lax.scan(step, hidden0, x)[1]

    return apply, params, jax.random.normal(jax.random.key(1), (shape.T, shape.B, shape.I))


def suite_parser(
    doc: str,
    shapes: Mapping[str, Shape],
    *,
    cells: Sequence[str] | None = None,
    quick_help: str | None = None,
) -> Any:
    """An argument parser described by ``doc``'s first line, with ``--shapes``
    (comma-separated labels of ``shapes``, default all), ``--out`` (results directory)
    and, where given, ``--cells`` (default all of ``cells``) and ``--quick``
    (``quick_help``); a suite adds its own arguments."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    if quick_help is not None:
        parser.add_argument("--quick", action="store_true", help=quick_help)
    if cells is not None:
        parser.add_argument("--cells", default=",".join(cells))
    parser.add_argument("--shapes", default=",".join(shapes))
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    return parser


def run_suite(
    suite: str,
    args: Any,
    labels: Sequence[str],
    shapes: Mapping[str, Shape],
    measure: Callable[[str, str, Shape, Any], list[dict[str, Any]]],
    machine: Mapping[str, Any],
) -> Path:
    """``measure(cell, label, shape, args)`` for every cell of ``args.cells`` and label,
    written as one ``suite`` results file (``args.quick``, ``args.out``); returns its path."""
    records = []
    for cell_name in args.cells.split(","):
        for label in labels:
            records += measure(cell_name, label, shapes[label], args)
    path = write_results(suite, records, machine=machine, quick=args.quick, directory=args.out)
    print(f"wrote {path}")
    return path


def shape_study(
    doc: str, shapes: Mapping[str, Shape], argv: list[str] | None, **choices: str
) -> tuple[Any, dict[str, Any]]:
    """``(args, machine)`` of a study of one kernel's variants at labelled ``shapes``:
    `suite_parser`'s ``--shapes`` and ``--out`` and one ``--NAME`` per ``choices`` entry
    (its default), parsed from ``argv``; the machine's description with its GEMM rate."""
    parser = suite_parser(doc, shapes)
    for name, default in choices.items():
        parser.add_argument(f"--{name}", default=default)
    return parser.parse_args(argv), machine_info(gemm_gflops=gemm_gflops())


def time_major_inputs(shape: Shape, seed: int = 1) -> Any:
    """Standard-normal inputs ``[T, B, I]`` of ``shape``."""
    import jax

    return jax.random.normal(jax.random.key(seed), (shape.T, shape.B, shape.I))


def rnn_matmul_flops(cell: str, shape: Shape, mode: str) -> float:
    """Matmul FLOPs of a dense gated RNN layer (input and recurrent kernels; 2 per MAC).

    Forward: ``2 * T * B * (I + H) * G * H``. Forward and backward, with the
    gradient taken with respect to the parameters and the inputs (as the
    suites take it): three times that (the forward, the gradients with respect
    to the activations and the inputs, and with respect to the weights).
    ``forward_backward_sum`` (the parameters only): that less the inputs'
    ``2 * T * B * I * G * H``.
    """
    B, T, I, H = shape  # noqa: E741
    forward = 2.0 * T * B * (I + H) * GATE_COUNT[cell] * H
    flops = {
        "forward": forward,
        "forward_backward": 3.0 * forward,
        "forward_backward_sum": 3.0 * forward - 2.0 * T * B * I * GATE_COUNT[cell] * H,
    }
    if mode not in flops:
        raise ValueError(f"mode must be one of {sorted(flops)}; got {mode!r}")
    return flops[mode]


def gemm_gflops(size: int = 2048, repeats: int = 10, dtype: str = "float32") -> float:
    """This machine's GEMM rate: the median GFLOP/s of one jitted ``[n, n] @ [n, n]`` matmul."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (size, size), dtype)
    b = jax.random.normal(jax.random.key(1), (size, size), dtype)
    matmul = jax.jit(jnp.matmul)
    stats = interleaved({"gemm": blocking(matmul, a, b)}, rounds=repeats, per_round=1, warmup=2)
    return 2.0 * size**3 / stats["gemm"].median_s / 1e9


# ----------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def chosen_groups(parser: Any, text: str, groups: Sequence[str]) -> list[str]:
    """The comma list ``text`` of a suite's ``--groups``; ``parser.error`` names unknown ones."""
    chosen = [g for g in text.split(",") if g]
    unknown = sorted(set(chosen) - set(groups))
    if unknown:
        parser.error(f"unknown groups {unknown}; choose from {tuple(groups)}")
    return chosen


def load_average() -> float | None:
    """The 1-minute load average (other processes sharing the cores inflate timings)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def usable_cores() -> int | None:
    """The cores this process may run on (its affinity where the system says, else all)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count()


# Timings taken above this 1-minute load per core are inflated by other processes: the
# cell report once measured 7x ratios between cells at load 6.8 on 2 cores.
QUIET_LOAD_PER_CORE = 0.5


def require_quiet(force: bool = False, per_core: float = QUIET_LOAD_PER_CORE) -> float | None:
    """The 1-minute load average; a SystemExit naming it where it is over ``per_core`` times
    the cores this process may use (other processes would inflate the timings), unless
    ``force`` (then a warning is printed and the caller records the load)."""
    load = load_average()
    cores = usable_cores()
    limit = per_core * (cores or 1)
    if load is not None and load > limit:
        message = (
            f"the 1-minute load average is {load} on {cores} cores (over {limit:g}): other "
            "processes would inflate the timings"
        )
        if not force:
            raise SystemExit(message + "; wait for a quiet machine or pass --force")
        print(f"warning: {message}; timing anyway (--force)", flush=True)
    return load


def machine_info(**extra: Any) -> dict[str, Any]:
    """Platform (``cpu``/``gpu``/``tpu`` as JAX sees it), device, CPU, cores, memory, OS, flags."""
    import jax

    devices = jax.devices()
    cores = usable_cores()
    info = {
        "platform": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "cpu": _cpu_model(),
        "cores": cores,
        "memory_gib": _memory_gib(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "load_average_1min": load_average(),
    }
    info.update(extra)
    return info


def versions(packages: Iterable[str] = VERSION_PACKAGES) -> dict[str, str]:
    """Installed versions of the packages that matter to a benchmark (absent ones skipped)."""
    found = {}
    for name in packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


# ----------------------------------------------------------------------------- results JSON


def record(
    *,
    cell: str,
    shape: Shape,
    dtype: str,
    mode: str,
    stats: Stats,
    backend: str | None = None,
    library: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One measurement in the results schema (exactly one of ``backend`` and ``library``)."""
    if (backend is None) == (library is None):
        raise ValueError("a record names exactly one of backend (rnn_jax) and library (a peer)")
    if mode not in MODES + EXTRA_MODES:
        raise ValueError(f"mode must be one of {MODES + EXTRA_MODES}; got {mode!r}")
    who = {"backend": backend} if backend is not None else {"library": library}
    out = {"cell": cell, **who, **Shape(*shape)._asdict(), "dtype": dtype, "mode": mode}
    out.update(stats.as_dict())
    if cell in GATE_COUNT and GATE_COUNT[cell]:
        out["gflops"] = rnn_matmul_flops(cell, Shape(*shape), mode) / stats.median_s / 1e9
    out.update(extra)
    return out


def check_results(doc: Mapping[str, Any]) -> None:
    """Raises ValueError naming the first field of ``doc`` that breaks the schema."""
    for key in ("suite", "machine", "versions", "records"):
        if key not in doc:
            raise ValueError(f"results file lacks the field {key!r}")
    platform_ = doc["machine"].get("platform")
    if platform_ not in PLATFORMS:
        raise ValueError(f"machine.platform must be one of {PLATFORMS}; got {platform_!r}")
    for i, rec in enumerate(doc["records"]):
        missing = [k for k in RECORD_KEYS if k not in rec]
        if missing:
            raise ValueError(f"records[{i}] lacks {missing}")
        if ("backend" in rec) == ("library" in rec):
            raise ValueError(f"records[{i}] must name exactly one of backend and library")
        if rec["mode"] not in MODES + EXTRA_MODES:
            raise ValueError(
                f"records[{i}].mode must be one of {MODES + EXTRA_MODES}; got {rec['mode']!r}"
            )


def write_results(
    suite: str,
    records: list[dict[str, Any]],
    *,
    machine: Mapping[str, Any],
    quick: bool = False,
    command: str | None = None,
    directory: Path = RESULTS_DIR,
    **extra: Any,
) -> Path:
    """Writes one results file ``{suite}-{platform}-{UTC time}.json``; returns its path."""
    now = _dt.datetime.now(_dt.UTC)
    doc = {
        "schema": SCHEMA_VERSION,
        "suite": suite,
        "command": command or " ".join(["python", *sys.argv]),
        "created": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "quick": quick,
        "machine": dict(machine),
        "versions": versions(),
        "records": records,
        **extra,
    }
    check_results(doc)
    directory.mkdir(parents=True, exist_ok=True)
    tag = "-quick" if quick else ""
    path = directory / f"{suite}-{machine['platform']}-{now.strftime('%Y%m%dT%H%M%SZ')}{tag}.json"
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


def load_results(directory: Path = RESULTS_DIR, *, include_quick: bool = False) -> list[dict]:
    """All results documents in ``directory`` (checked against the schema), oldest first."""
    docs = []
    for path in sorted(directory.glob("*.json")):
        doc = json.loads(path.read_text())
        check_results(doc)
        if doc.get("quick") and not include_quick:
            continue
        doc["_path"] = str(path)
        docs.append(doc)
    return sorted(docs, key=lambda d: d.get("created", ""))


# ----------------------------------------------------------------------------- tables


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    """A GitHub-flavoured markdown table (floats to 3 significant digits)."""

    def cell(v):
        if isinstance(v, float):
            return f"{v:.3g}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
