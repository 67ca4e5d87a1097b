"""Several cells trained on the same task and data: a table, their runs, one plot."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rnn_jax.app.build import make_task
from rnn_jax.app.config import ConfigError, RunConfig
from rnn_jax.app.plots import check_plotting, plot_curves
from rnn_jax.app.records import results_document, write_json
from rnn_jax.app.runs import diverged, loss_baselines, run, solved_when
from rnn_jax.app.tables import table
from rnn_jax.data import Task
from rnn_jax.train import TrainingError


def baseline_text(task: Task, metric: str) -> str:
    """The task's baselines on ``metric`` in words (``"predict 1 0.1667"``), or ``"-"``."""
    parts = [
        f"{name} {values[metric]:.4g}"
        for name, values in task.baselines.items()
        if metric in values
    ]
    return "; ".join(parts) or "-"


def compare(
    config: RunConfig,
    cells: Sequence[str],
    *,
    out_dir: str | Path | None = None,
    progress: bool | None = None,
    echo: Callable[[str], None] | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Trains ``config`` with each of ``cells`` on the same task and data.

    Returns the summary (JSON): the ``table`` of parameters, steps, time,
    test metrics and whether each solved the task, and every run's results
    (a run whose loss diverges is recorded as such; the others go on).
    ``echo`` is called with a line as each run ends. With ``out_dir``, writes
    ``compare.json`` (all results and histories) and ``compare.png``
    (validation loss by step, one line per cell, baselines dashed) once every
    run is done.

    Example:
        >>> config = rj.app.RunConfig(task_options={"length": 10}, hidden=8, batch=16, steps=20)
        >>> summary = rj.app.compare(config, ["simple", "gru"], progress=False)
        >>> [r["cell"] for r in summary["runs"]]
        ['simple', 'gru']
    """
    if not cells:
        raise ConfigError("cells must name at least one cell; got none")
    checked = [dataclasses.replace(config, cell=name).check() for name in cells]
    if out_dir is not None:
        check_plotting()
    task = make_task(config)
    metric = compared_metric(task)
    started = time.perf_counter()
    runs = [compared_run(run_config, task, metric, progress, echo) for run_config in checked]
    summary = {
        "task": task.name,
        "description": task.description,
        "metric": metric,
        "baselines": task.baselines,
        "solved_when": solved_when(task),
        "config": config.to_dict(),
        "cells": list(cells),
        "table": comparison_table(runs, task, metric),
        "seconds": round(time.perf_counter() - started, 1),
        "runs": runs,
    }
    if out_dir is not None:
        out = Path(out_dir)
        document = results_document(f"training-compare-{task.name}", command, **summary)
        write_json(out / "compare.json", document)
        plot_validation_losses(runs, task, out / "compare.png")
    return summary


def compared_metric(task: Task) -> str:
    """The metric the table ranks by: the task's loss where it is a metric, else its first."""
    info = task.info()
    return info["loss"] if info["loss"] in info["metrics"] else info["metrics"][0]


def compared_run(
    config: RunConfig,
    task: Task,
    metric: str,
    progress: bool | None,
    echo: Callable[[str], None] | None,
) -> dict[str, Any]:
    """The results of one cell's run, or the record of its divergence (the others go on);
    ``echo`` is told the outcome in a line."""
    try:
        results = run(config, task=task, progress=progress)
        note = f"test {metric} {results['test'][metric]:.4g}"
    except TrainingError as error:
        results = diverged(config, task.info(), error)
        note = str(error)
    if echo is not None:
        echo(f"{config.cell}: {note} ({results['train_seconds']:.0f} s)")
    return results


def comparison_table(runs: Sequence[dict[str, Any]], task: Task, metric: str) -> str:
    """The runs side by side: parameters, steps, time, test metrics, solved; the baselines."""
    shown = [m for m in task.info()["metrics"] if m != metric][:2]
    rows = [
        [
            results["cell"],
            results["params"],
            results["steps"],
            results["train_seconds"],
            *[results["test"].get(m) for m in [metric, *shown]],
            "diverged" if "diverged" in results else results["solved"],
        ]
        for results in runs
    ]
    header = ["cell", "params", "steps", "train s", *[f"test {m}" for m in [metric, *shown]]]
    text = table(rows, [*header, "solved?"])
    text += f"\nbaseline ({metric}): {baseline_text(task, metric)}"
    if task.solved is not None:
        text += f"; solved means test {solved_when(task)}"
    return text


def plot_validation_losses(runs: Sequence[dict[str, Any]], task: Task, path: Path) -> Path:
    """Validation loss by step, one line per run's cell; the baselines and the bar dashed."""
    curves = {
        r["cell"]: (
            [v["step"] for v in r["history"]["val"]],
            [v["loss"] for v in r["history"]["val"]],
        )
        for r in runs
    }
    loss = task.info()["loss"]
    baselines = loss_baselines(task)
    if task.solved is not None and task.solved[0] == loss:
        baselines[f"solved ({task.solved[1]} {task.solved[2]})"] = task.solved[2]
    positive = all(y > 0 for _, ys in curves.values() for y in ys)
    return plot_curves(
        curves,
        path,
        title=task.description,
        ylabel=f"validation {loss}",
        baselines=baselines,
        log_y=positive,
    )
