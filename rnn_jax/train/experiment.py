"""Runs from settings: a task by name, a cell by name, a model that fits the task, and training.

`RunConfig` holds everything that decides what a run computes (it is stored
in checkpoints and checked on resume); `run` trains one and reports test
metrics beside the task's baselines; `compare` runs several cells on one task.
The CLI is a thin shell over these.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax

from rnn_jax import cells as cell_library
from rnn_jax.cells.base import Cell
from rnn_jax.data import Task, get_task, is_solved
from rnn_jax.layers import bidirectional, rnn, stack
from rnn_jax.models import Model, classifier, forecaster, generator, seq2seq, tagger
from rnn_jax.summary import count_params
from rnn_jax.train.checkpoint import Checkpointer
from rnn_jax.train.history import (
    plot_curves,
    plot_history,
    results_document,
    table,
    write_json,
)
from rnn_jax.train.loop import EarlyStopping, FitResult, TrainingError, evaluate, fit
from rnn_jax.train.objective import Objective, supervised
from rnn_jax.train.optim import OPTIMIZERS, SCHEDULES, make_optimizer

DEFAULT_STEPS = 1000


class ConfigError(ValueError):
    """Settings that cannot make a run (an unknown cell, a negative size, ...)."""


def available_cells() -> dict[str, Callable[..., Cell]]:
    """Cell factories by name: each ``rnn_jax.cells`` factory whose first argument is
    ``hidden_size``."""
    found = {}
    for name in getattr(cell_library, "__all__", dir(cell_library)):
        factory = getattr(cell_library, name, None)
        if not callable(factory) or not name.islower():
            continue
        try:
            first = next(iter(inspect.signature(factory).parameters), None)
        except (TypeError, ValueError):
            continue
        if first == "hidden_size":
            found[name] = factory
    return found


@dataclass
class RunConfig:
    """What a training run computes; every field is JSON and is checked on resume."""

    task: str = "adding"
    task_options: dict[str, Any] = field(default_factory=dict)
    cell: str = "lstm"
    cell_options: dict[str, Any] = field(default_factory=dict)
    hidden: int = 64
    layers: int = 1
    embed: int = 32
    bidirectional: bool = False
    dropout: float = 0.0
    backend: str = "auto"
    attention: str | None = "additive"
    optimizer: str = "adam"
    lr: float = 1e-3
    schedule: str = "constant"
    warmup: int = 0
    clip: float = 1.0
    weight_decay: float = 0.0
    batch: int = 64
    steps: int | None = None
    epochs: float | None = None
    eval_every: int | None = None
    patience: int | None = None
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def check(self) -> RunConfig:
        """Raises `ConfigError` naming the first bad setting; returns self."""
        cells = available_cells()
        if self.cell not in cells:
            raise ConfigError(f"cell must be one of {sorted(cells)}; got {self.cell!r}")
        for name in ("hidden", "layers", "embed", "batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer; got {value!r}")
        for name in ("steps", "eval_every", "patience"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a positive integer; got {value!r}")
        if self.epochs is not None and not self.epochs > 0:
            raise ConfigError(f"epochs must be positive; got {self.epochs!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"optimizer must be one of {list(OPTIMIZERS)}; got {self.optimizer!r}"
            )
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {list(SCHEDULES)}; got {self.schedule!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a positive number; got {self.lr!r}")
        if self.clip < 0:
            raise ConfigError(f"clip must be >= 0 (0 turns clipping off); got {self.clip!r}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must lie in [0, 1); got {self.dropout!r}")
        if self.attention not in ("additive", "multiplicative", None):
            raise ConfigError(
                f"attention must be additive, multiplicative or none; got {self.attention!r}"
            )
        from rnn_jax.backends import backend_names

        if self.backend != "auto" and self.backend not in backend_names():
            raise ConfigError(
                f"backend must be 'auto' or one of {backend_names()}; got {self.backend!r}"
            )
        try:
            cells[self.cell](self.hidden, **self.cell_options)
        except (TypeError, ValueError) as error:
            raise ConfigError(
                f"cell {self.cell} with options {self.cell_options}: {error}"
            ) from None
        return self


def make_cell(config: RunConfig) -> Cell:
    return available_cells()[config.cell](config.hidden, **config.cell_options)


def make_body(config: RunConfig, *, allow_bidirectional: bool = True):
    """The sequence layer: ``layers`` cells stacked, each bidirectional if asked."""
    parts = []
    for _ in range(config.layers):
        forward = rnn(make_cell(config), backend=config.backend)
        if config.bidirectional and allow_bidirectional:
            parts.append(
                bidirectional(forward, rnn(make_cell(config), reverse=True, backend=config.backend))
            )
        else:
            parts.append(forward)
    return parts[0] if len(parts) == 1 else stack(parts, dropout=config.dropout)


def make_model(config: RunConfig, info: dict[str, Any]) -> Model:
    """The model a task of ``info`` (`Task.info`) needs, built from ``config``."""
    kind = info["kind"]
    if kind in ("regression", "classification"):
        return classifier(
            make_body(config),
            info["output_size"],
            input_size=info["input_size"],
            vocab_size=info["vocab_size"],
            embed_size=config.embed,
        )
    if kind == "tagging":
        return tagger(
            make_body(config),
            info["output_size"],
            input_size=info["input_size"],
            vocab_size=info["vocab_size"],
            embed_size=config.embed,
        )
    if kind == "forecasting":
        return forecaster(
            make_body(config, allow_bidirectional=False), info["input_size"], info["output_size"]
        )
    if kind == "language_model":
        if config.bidirectional:
            raise ConfigError("a language model reads left to right; drop --bidirectional")
        return generator(make_body(config), info["vocab_size"], embed_size=config.embed)
    if kind == "seq2seq":
        return seq2seq(
            make_body(config),
            make_cell(config),
            source_vocab=info["vocab_size"],
            target_vocab=info["target_vocab_size"],
            embed_size=config.embed,
            attention=config.attention,
        )
    raise ConfigError(f"no model for tasks of kind {kind!r}")


def make_objective(model: Model, info: dict[str, Any]) -> Objective:
    return supervised(
        model.apply,
        info["loss"],
        info["metrics"],
        stateful=info["kind"] == "language_model",
        decode=model.decode,
    )


def make_task(config: RunConfig) -> Task:
    return get_task(config.task, **config.task_options)


def total_steps(config: RunConfig, task: Task) -> int:
    if config.steps is not None:
        return config.steps
    if config.epochs is not None:
        return max(1, math.ceil(config.epochs * task.train.steps_per_epoch(config.batch)))
    return DEFAULT_STEPS


def run(
    config: RunConfig,
    *,
    task: Task | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    out_dir: str | Path | None = None,
    progress: bool | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Trains one run and returns its results (JSON): test metrics, baselines, history, timing.

    With ``out_dir``, writes ``results.json`` and ``history.png`` there once
    training is done. With ``checkpoint_dir``, checkpoints as `fit` does.

    Example:
        >>> results = rj.train.run(rj.train.RunConfig(task="adding", cell="gru", hidden=16,
        ...                                            task_options={"length": 20}, steps=100))
        >>> sorted(results["test"])
        ['loss', 'mse']
    """
    config.check()
    task = task or make_task(config)
    info = task.info()
    model = make_model(config, info)
    objective = make_objective(model, info)
    steps = total_steps(config, task)
    optimizer, learning_rate = make_optimizer(
        config.optimizer,
        config.lr,
        steps=steps,
        schedule_name=config.schedule,
        warmup=config.warmup,
        clip_norm=config.clip or None,
        weight_decay=config.weight_decay,
    )
    params = model.init(jax.random.key(config.seed))
    eval_batch = max(config.batch, 256) if not task.stateful else config.batch
    early = EarlyStopping(config.patience) if config.patience else None
    result: FitResult = fit(
        objective,
        params,
        optimizer,
        lambda step: task.train.batch(step, config.batch, config.seed),
        steps=steps,
        seed=config.seed,
        batch_size=config.batch,
        val=lambda: task.val.batches(eval_batch),
        eval_every=config.eval_every or max(1, steps // 20),
        early_stopping=early,
        checkpointer=Checkpointer(checkpoint_dir) if checkpoint_dir is not None else None,
        checkpoint_every=checkpoint_every,
        resume=resume,
        config=config.to_dict(),
        meta={"task_info": info},
        learning_rate=learning_rate,
        progress=progress,
        description=f"{config.cell} on {task.name}",
    )
    started = time.perf_counter()
    test = evaluate(objective, result.params, task.test.batches(eval_batch))
    results = {
        "task": task.name,
        "description": task.description,
        "config": config.to_dict(),
        "cell": config.cell,
        "params": count_params(result.params),
        "steps": result.step,
        "train_seconds": round(result.seconds, 2),
        "test_seconds": round(time.perf_counter() - started, 2),
        "stopped_early": result.stopped_early,
        "best_step": result.best_step,
        "test": test,
        "val": result.history["val"][-1] if result.history["val"] else None,
        "baselines": task.baselines,
        "solved": is_solved(task.solved, test),
        "solved_when": None if task.solved is None else " ".join(map(str, task.solved)),
        "history": result.history,
    }
    if out_dir is not None:
        out = Path(out_dir)
        write_json(
            out / "results.json", results_document(f"training-run-{task.name}", command, **results)
        )
        loss_baselines = {
            name: v[info["loss"]] for name, v in task.baselines.items() if info["loss"] in v
        }
        plot_history(
            result.history,
            out / "history.png",
            title=f"{config.cell} on {task.description}",
            baselines=loss_baselines,
        )
    return results


def diverged(config: RunConfig, info: dict[str, Any], error: TrainingError) -> dict[str, Any]:
    """The record of a run whose loss stopped being finite: its history, no test metrics."""
    shapes = jax.eval_shape(make_model(config, info).init, jax.random.key(config.seed))
    seconds = error.history["train"][-1]["seconds"] if error.history["train"] else 0.0
    return {
        "task": info["name"],
        "config": config.to_dict(),
        "cell": config.cell,
        "params": count_params(shapes),
        "steps": error.step,
        "train_seconds": seconds,
        "diverged": str(error),
        "test": {},
        "solved": False,
        "history": error.history,
    }


def baseline_text(task: Task, metric: str) -> str:
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
    """Trains each of ``cells`` on the same task and data; returns the table, rows and runs.

    With ``out_dir``, writes ``compare.json`` (all results and histories) and
    ``compare.png`` (validation loss by step, one line per cell, baselines
    dashed) once every run is done.
    """
    if not cells:
        raise ConfigError("give at least one cell to compare")
    checked = [dataclasses.replace(config, cell=name).check() for name in cells]
    task = make_task(config)
    info = task.info()
    metric = info["loss"] if info["loss"] in info["metrics"] else info["metrics"][0]
    shown = [m for m in info["metrics"] if m != metric][:2]
    runs, rows = [], []
    started = time.perf_counter()
    for run_config in checked:
        try:
            results = run(run_config, task=task, progress=progress)
            outcome = results["solved"]
            note = f"test {metric} {results['test'][metric]:.4g}"
        except TrainingError as error:  # one diverging cell does not end the comparison
            results = diverged(run_config, info, error)
            outcome, note = "diverged", str(error)
        runs.append(results)
        rows.append(
            [
                run_config.cell,
                results["params"],
                results["steps"],
                results["train_seconds"],
                results["test"].get(metric),
                *[results["test"].get(m) for m in shown],
                outcome,
            ]
        )
        if echo is not None:
            echo(f"{run_config.cell}: {note} ({results['train_seconds']:.0f} s)")
    header = [
        "cell",
        "params",
        "steps",
        "train s",
        f"test {metric}",
        *[f"test {m}" for m in shown],
        "solved?",
    ]
    text = table(rows, header)
    text += f"\nbaseline ({metric}): {baseline_text(task, metric)}"
    if task.solved is not None:
        text += f"; solved means test {' '.join(map(str, task.solved))}"
    summary = {
        "task": task.name,
        "description": task.description,
        "metric": metric,
        "baselines": task.baselines,
        "solved_when": None if task.solved is None else " ".join(map(str, task.solved)),
        "config": config.to_dict(),
        "cells": list(cells),
        "table": text,
        "seconds": round(time.perf_counter() - started, 1),
        "runs": runs,
    }
    if out_dir is not None:
        out = Path(out_dir)
        write_json(
            out / "compare.json",
            results_document(f"training-compare-{task.name}", command, **summary),
        )
        curves = {
            r["cell"]: (
                [v["step"] for v in r["history"]["val"]],
                [v["loss"] for v in r["history"]["val"]],
            )
            for r in runs
        }
        baselines = {
            name: v[info["loss"]] for name, v in task.baselines.items() if info["loss"] in v
        }
        if task.solved is not None and task.solved[0] == info["loss"]:
            baselines[f"solved ({task.solved[1]} {task.solved[2]})"] = task.solved[2]
        positive = all(y > 0 for _, ys in curves.values() for y in ys)
        plot_curves(
            curves,
            out / "compare.png",
            title=task.description,
            ylabel=f"validation {info['loss']}",
            baselines=baselines,
            log_y=positive,
        )
    return summary
