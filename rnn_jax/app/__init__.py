"""The application: whole runs from settings, what the ``rnn-jax`` command line drives.

- `RunConfig`: every setting of a run (task, cell, sizes, optimizer, steps),
  with its help and rule; JSON; `RunConfig.check`.
- `make_task`, `make_model`, `make_objective`: what a config builds.
- `run` trains one config; `compare` several cells on the same data;
  `load_run` rebuilds a trained run (model, params, task) from its
  checkpoints; `generate_text` writes with a character model.
- `predict`, `write_predictions`: a finished run's predictions on a data file, as CSV.
- `gradflow`: the gradient-flow report over `rj.diagnostics`.
- Records: `write_json`, `results_document`, `table`, `plot_curves`,
  `plot_history`; every file written atomically.
- `use_compilation_cache`: JAX's persistent compilation cache, which the
  command line turns on, so a second identical run compiles nothing.

`rj.train` below knows nothing of this package.
"""

from rnn_jax.app.build import make_body, make_cell, make_model, make_objective, make_task
from rnn_jax.app.comparison import compare
from rnn_jax.app.compilation_cache import use_compilation_cache
from rnn_jax.app.config import DEFAULT_STEPS, ConfigError, RunConfig
from rnn_jax.app.generation import generate_text
from rnn_jax.app.gradient_flow import gradflow
from rnn_jax.app.load import LoadedRun, load_run
from rnn_jax.app.plots import plot_curves, plot_history
from rnn_jax.app.prediction import Predictions, predict, write_predictions
from rnn_jax.app.records import results_document, write_json
from rnn_jax.app.runs import run
from rnn_jax.app.tables import table

__all__ = [
    "DEFAULT_STEPS",
    "ConfigError",
    "LoadedRun",
    "Predictions",
    "RunConfig",
    "compare",
    "generate_text",
    "gradflow",
    "load_run",
    "make_body",
    "make_cell",
    "make_model",
    "make_objective",
    "make_task",
    "plot_curves",
    "plot_history",
    "predict",
    "results_document",
    "run",
    "table",
    "use_compilation_cache",
    "write_json",
    "write_predictions",
]
