"""A finished run's predictions on a data file, as CSV (what ``rnn-jax predict`` writes).

The file is read and scaled as the run's training file was (the encoding its
checkpoint stores, `rnn_jax.data.user_data`), and the predictions are given
in the target's own terms: class labels, or values in the target's units.

The CSV's columns:

- classify, regress: the sequence id (the id column's name, or ``sequence``:
  the ``.npz`` ``id``, else the sequence's index) and ``prediction``;
- forecast, sequences read whole: the id, ``step`` (0-based, within the
  sequence) and ``prediction``, one row per step;
- forecast, one series: ``step`` (the 0-based row of the series) and
  ``prediction``, from each window of the run's length that ends there.

A forecast at step ``t`` is of the target at step ``t + horizon``.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from rnn_jax.app.config import ConfigError
from rnn_jax.app.load import LoadedRun
from rnn_jax.app.records import write_atomically
from rnn_jax.data import decode_outputs, prediction_inputs

BATCH = 256  # sequences per compiled call; the last batch is filled up, so one compilation


class Predictions(NamedTuple):
    """A header and rows of the predictions CSV."""

    header: list[str]
    rows: list[list[Any]]


def model_outputs(loaded: LoadedRun, inputs: np.ndarray, length: np.ndarray) -> np.ndarray:
    """The model's outputs on ``inputs [N, T, F]``, batch-major: ``[N, K]`` or ``[N, T, K]``."""
    apply = jax.jit(lambda params, xs, n: loaded.model.apply(params, xs, length=n)[1])
    count = inputs.shape[0]
    size = min(BATCH, count)
    parts = []
    for start in range(0, count, size):
        index = np.arange(start, start + size) % count
        outputs = apply(loaded.params, np.swapaxes(inputs[index], 0, 1), length[index])
        outputs = np.asarray(outputs)
        parts.append(outputs if outputs.ndim == 2 else np.swapaxes(outputs, 0, 1))
    return np.concatenate(parts)[:count]


def predict(loaded: LoadedRun, path: str | os.PathLike) -> Predictions:
    """Predictions of the finished run ``loaded`` (`load_run`) on the data file at ``path``.

    A `ConfigError` when the run did not finish or was not trained on a data file.
    """
    encoding = loaded.info.get("encoding")
    if encoding is None:
        raise ConfigError(
            f"the run in {loaded.directory} was trained on task {loaded.info['name']!r}, not a "
            f"data file; predict reads runs of train --data"
        )
    if not loaded.finished:
        raise ConfigError(
            f"the run in {loaded.directory} has not finished (its checkpoint is of step "
            f"{loaded.step}); finish it with train --resume first"
        )
    read = prediction_inputs(path, encoding)
    values = decode_outputs(model_outputs(loaded, read.inputs, read.length), encoding)
    name = encoding["id"] or "sequence"
    if read.steps is not None:  # windows of one series: the forecast from each one's last step
        rows = [[int(t), v] for t, v in zip(read.steps, values[:, -1], strict=True)]
        return Predictions(["step", "prediction"], rows)
    if not read.per_step:
        return Predictions(
            [name, "prediction"], [[i, v] for i, v in zip(read.ids, values, strict=True)]
        )
    rows = [
        [read.ids[i], t, values[i, t]] for i in range(len(read.ids)) for t in range(read.length[i])
    ]
    return Predictions([name, "step", "prediction"], rows)


def write_predictions(predictions: Predictions, out: str | Path) -> Path:
    """Writes ``predictions`` as CSV at ``out``, atomically (float32 values in their shortest
    exact form).

    Example:
        >>> import pathlib, tempfile
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "predictions.csv"
        >>> rows = [["a", "up"], ["b", np.float32(0.1)]]
        >>> path = rj.app.write_predictions(rj.app.Predictions(["walk", "prediction"], rows), out)
        >>> print(path.read_text(), end="")
        walk,prediction
        a,up
        b,0.1
    """
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(predictions.header)
    writer.writerows(predictions.rows)
    return write_atomically(out, lambda file: file.write(text.getvalue().encode()))
