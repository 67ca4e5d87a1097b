"""Training: a jit-compiled fit loop on optax, masked losses, TBPTT, checkpoints, progress.

- `fit` trains params against an `Objective` (`supervised` builds one from a
  model's ``apply``), with `EarlyStopping`, a `Checkpointer` and a progress bar;
  a resume passes over damaged checkpoints to the newest intact one
  (`CheckpointWarning`).
- `make_optimizer`: adam / adamw / rmsprop / sgd, learning-rate schedules,
  clipping by global norm (on by default).
- `sharding`: the mesh (``data`` and ``model`` axes) that `fit` trains on,
  data-parallel over one device or many; `distributed` joins the processes
  of a multi-host run.
- `predict` / `stream`: inference over very many sequences, split over the
  devices and streamed in slices.

Whole runs from settings (`RunConfig`, `run`, `compare`) are `rj.app`, above this.
"""

from rnn_jax.train import distributed, losses, sharding, tbptt
from rnn_jax.train.checkpoint import Checkpointer, CheckpointError, CheckpointWarning
from rnn_jax.train.early_stopping import EarlyStopping
from rnn_jax.train.evaluation import evaluate
from rnn_jax.train.hooks import TrainingError
from rnn_jax.train.loop import FitResult, fit
from rnn_jax.train.objective import Objective, supervised
from rnn_jax.train.optim import make_optimizer, schedule
from rnn_jax.train.streaming import predict, stream

__all__ = [
    "CheckpointError",
    "CheckpointWarning",
    "Checkpointer",
    "EarlyStopping",
    "FitResult",
    "Objective",
    "TrainingError",
    "distributed",
    "evaluate",
    "fit",
    "losses",
    "make_optimizer",
    "predict",
    "schedule",
    "sharding",
    "stream",
    "supervised",
    "tbptt",
]
