"""Learning-curve plots saved as PNG, atomically: curves by step beside dashed baselines.

matplotlib draws on its Agg canvas (no display, no global pyplot state), so
plots can be written from threads and from machines without a screen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rnn_jax._extras import require
from rnn_jax.app.records import write_atomically


def check_plotting() -> None:
    """A `rnn_jax._extras.MissingExtra` now, before any work, if plots cannot be drawn."""
    require("matplotlib.figure", "writing plots")


def _figure(width: float = 7.0, height: float = 4.2):
    Figure = require("matplotlib.figure", "writing plots").Figure
    FigureCanvasAgg = require("matplotlib.backends.backend_agg", "writing plots").FigureCanvasAgg
    figure = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure, path: str | Path) -> Path:
    """Saves a matplotlib figure as PNG, atomically."""
    figure.tight_layout()
    return write_atomically(path, lambda file: figure.savefig(file, format="png"))


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
