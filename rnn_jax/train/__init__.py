"""Training: a jit-compiled fit loop on optax, masked losses, TBPTT, checkpoints, records.

- `fit` trains params against an `Objective` (`supervised` builds one from a
  model's ``apply``), with `EarlyStopping`, a `Checkpointer` and a progress bar.
- `make_optimizer`: adam / adamw / rmsprop / sgd, learning-rate schedules,
  clipping by global norm (on by default).
- `RunConfig`, `run`, `compare`: whole runs from names (task, cell, sizes),
  what the ``rnn-jax`` command line calls.
"""

from rnn_jax.train import losses, tbptt
from rnn_jax.train.checkpoint import Checkpointer, CheckpointError
from rnn_jax.train.experiment import (
    ConfigError,
    RunConfig,
    available_cells,
    compare,
    make_model,
    make_objective,
    make_task,
    run,
)
from rnn_jax.train.history import plot_curves, plot_history, table, write_json
from rnn_jax.train.loop import EarlyStopping, FitResult, TrainingError, evaluate, fit
from rnn_jax.train.objective import Objective, supervised
from rnn_jax.train.optim import make_optimizer, schedule

__all__ = [
    "CheckpointError",
    "Checkpointer",
    "ConfigError",
    "EarlyStopping",
    "FitResult",
    "Objective",
    "RunConfig",
    "TrainingError",
    "available_cells",
    "compare",
    "evaluate",
    "fit",
    "losses",
    "make_model",
    "make_objective",
    "make_optimizer",
    "make_task",
    "plot_curves",
    "plot_history",
    "run",
    "schedule",
    "supervised",
    "table",
    "tbptt",
    "write_json",
]
