"""A run in progress (`Run`) and what happens after each update: the hooks of the fit loop.

After every update the loop calls its hooks in order, each deciding for
itself whether this step is its turn: `Evaluation` (validation metrics and
early stopping), `LossLog` (the training history, the loss check, the
progress bar) and `Checkpoints` (saving the whole run). A hook reads and
updates the `Run`; none knows of the others but through it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np

from rnn_jax.train import sharding
from rnn_jax.train.checkpoint import Checkpointer
from rnn_jax.train.early_stopping import EarlyStopping, StoppingRecord
from rnn_jax.train.evaluation import evaluate
from rnn_jax.train.objective import Objective
from rnn_jax.train.progress import Progress
from rnn_jax.train.state import TrainState


class TrainingError(RuntimeError):
    """Training cannot go on (the loss is no longer finite); ``history`` holds the run so far."""

    def __init__(self, message: str, *, step: int = 0, history: dict[str, Any] | None = None):
        super().__init__(message)
        self.step = step
        self.history = history or {"train": [], "val": []}


def empty_history() -> dict[str, list]:
    return {"train": [], "val": []}


@dataclass
class Run:
    """A run of ``steps`` updates in progress: its state, its history, early stopping's record,
    its training time so far (``seconds_before`` from the processes before a resume), and the
    losses of the updates not yet in the history."""

    state: TrainState
    steps: int
    history: dict[str, list] = field(default_factory=empty_history)
    stopping: StoppingRecord = StoppingRecord()
    seconds_before: float = 0.0
    started: float = field(default_factory=time.perf_counter)
    losses: list[jax.Array] = field(default_factory=list)

    @property
    def last(self) -> bool:
        """Whether the latest update was the run's last."""
        return self.state.step == self.steps

    @property
    def stopped(self) -> bool:
        return self.stopping.stopped_early

    def seconds(self) -> float:
        return self.seconds_before + time.perf_counter() - self.started


@dataclass
class Evaluation:
    """Validation every ``every`` updates and at the last, and early stopping on its metrics
    (keeping the best params in the state when the rule restores them)."""

    objective: Objective
    val: Callable[[], Iterable[Any]] | None
    every: int
    mesh: Any
    early_stopping: EarlyStopping | None = None

    def __post_init__(self):
        self.evaluate_fn = jax.jit(self.objective.evaluate)

    def __call__(self, run: Run) -> None:
        step = run.state.step
        if self.val is None or not (step % self.every == 0 or run.last):
            return
        metrics = evaluate(
            self.objective,
            run.state.params,
            self.val(),
            evaluate_fn=self.evaluate_fn,
            mesh=self.mesh,
        )
        run.history["val"].append({"step": step, **metrics})
        if self.early_stopping is None:
            return
        run.stopping = run.stopping.after(self.early_stopping, metrics, step)
        if run.stopping.best_step == step and run.state.best_params is not None:
            run.state = run.state._replace(best_params=run.state.params)


@dataclass
class LossLog:
    """The mean training loss of the updates since the last record, every ``every`` updates
    and when the run ends: in the history (with the learning rate), on the progress bar, and
    a `TrainingError` once it is not finite."""

    every: int
    learning_rate: Callable[[int], Any] | None
    bar: Progress

    def __call__(self, run: Run) -> None:
        if run.state.step % self.every == 0 or run.last or run.stopped:
            self.flush(run)

    def flush(self, run: Run) -> None:
        """Records the losses not yet in the history, if any."""
        if not run.losses:
            return
        step = run.state.step
        mean_loss = float(np.mean(jax.device_get(run.losses)))
        run.losses = []
        if not math.isfinite(mean_loss):
            raise TrainingError(
                f"the training loss became {mean_loss} by step {step}; lower the learning rate "
                "or clip gradients",
                step=step,
                history=run.history,
            )
        entry = {"step": step, "loss": mean_loss, "seconds": round(run.seconds(), 4)}
        if self.learning_rate is not None:
            entry["learning_rate"] = float(self.learning_rate(step - 1))
        run.history["train"].append(entry)
        last_val = run.history["val"][-1]["loss"] if run.history["val"] else None
        self.bar.update(step, mean_loss, last_val)


@dataclass
class Checkpoints:
    """The whole run saved every ``every`` updates (None: never between) and when it ends, with
    ``config`` and ``meta`` (JSON) beside it; ``flush`` first records the pending losses, so a
    resumed history matches an uninterrupted one."""

    checkpointer: Checkpointer
    every: int | None
    config: Mapping[str, Any]
    meta: Mapping[str, Any]
    mesh: Any
    flush: Callable[[Run], None]

    def __call__(self, run: Run) -> None:
        ended = run.last or run.stopped
        if not (ended or (self.every and run.state.step % self.every == 0)):
            return
        self.flush(run)
        step = run.state.step
        self.checkpointer.save(
            step,
            run.state.params,
            run.state.checkpointed(),
            {
                "config": dict(self.config),
                "data_position": step,  # the step whose batch comes next (batches follow steps)
                "history": run.history,
                "early_stopping": run.stopping.to_json(),
                "finished": ended,
                "mesh": sharding.describe(self.mesh),
                "seconds": run.seconds(),
                **self.meta,
            },
        )
