"""Run records written atomically: JSON histories and results, PNG plots.

Every file is written to a temporary name beside its target and renamed into
place, so a reader (or a killed run) never sees half a file.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def _atomic(path: str | Path, write) -> Path:
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
    """Writes ``data`` as indented JSON, atomically."""
    text = json.dumps(_clean(data), indent=2, sort_keys=False) + "\n"
    return _atomic(path, lambda file: file.write(text.encode()))


def _figure(width: float = 7.0, height: float = 4.2):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure, path: str | Path) -> Path:
    """Saves a matplotlib figure as PNG, atomically."""
    figure.tight_layout()
    return _atomic(path, lambda file: figure.savefig(file, format="png"))


def plot_curves(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: str | Path,
    *,
    title: str = "",
    xlabel: str = "step",
    ylabel: str = "loss",
    baselines: Mapping[str, float] | None = None,
    log_y: bool = True,
    styles: Mapping[str, str] | None = None,
) -> Path:
    """One line per curve ``label -> (xs, ys)``, dashed lines for ``baselines``; saved as PNG."""
    figure = _figure()
    axes = figure.add_subplot()
    for label, (xs, ys) in curves.items():
        axes.plot(xs, ys, (styles or {}).get(label, "-"), label=label, linewidth=1.4)
    for index, (label, value) in enumerate((baselines or {}).items()):
        axes.axhline(value, linestyle="--", color=f"C{7 + index % 3}", linewidth=1, label=label)
    if log_y:
        axes.set_yscale("log")
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small")
    return save_figure(figure, path)


def plot_history(
    history: Mapping[str, Any],
    path: str | Path,
    *,
    title: str = "",
    baselines: Mapping[str, float] | None = None,
) -> Path:
    """The learning curves of one run: training loss and validation loss by step."""
    curves = {}
    if history.get("train"):
        curves["train loss"] = (
            [r["step"] for r in history["train"]],
            [r["loss"] for r in history["train"]],
        )
    if history.get("val"):
        curves["validation loss"] = (
            [r["step"] for r in history["val"]],
            [r["loss"] for r in history["val"]],
        )
    positive = all(v > 0 for _, ys in curves.values() for v in ys if v is not None)
    return plot_curves(
        curves,
        path,
        title=title,
        baselines=baselines,
        log_y=positive,
        styles={"validation loss": "o-"},
    )


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """A plain-text table: left-aligned text, right-aligned numbers."""
    cells = [[str(h) for h in header]] + [[_format(v) for v in row] for row in rows]
    numeric = [all(_is_number(row[i]) for row in rows) for i in range(len(header))]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for index, row in enumerate(cells):
        parts = [
            c.rjust(w) if numeric[i] and index else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(parts).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
