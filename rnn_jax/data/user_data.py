"""A `Task` from a user's data file (`rnn_jax.data.files`): objective, splits, scaling, baselines.

Three objectives, each a kind of task the built-in ones are:

- ``classify`` (``"classification"``): one class label per sequence
  (integers or text), cross-entropy and accuracy; baselines: the majority
  class, and the training class frequencies.
- ``regress`` (``"regression"``): one number per sequence, MSE; baseline: the
  training mean.
- ``forecast`` (``"forecasting"``): at every step, the target ``horizon``
  steps later, MSE; baselines: persistence (the target's latest value) and
  the training mean.

Left unsaid, the objective is inferred: ``forecast`` when the target takes
one value per step (a table without an id column is one series; a target
that changes within a sequence; an ``.npz`` ``y`` of ``[N, T]``), else
``classify`` when the targets are text or whole numbers with at most
`MAX_INFERRED_CLASSES` distinct values, else ``regress``.

`file_task` is a pipeline whose stages each run once and hand their result
on: the file read (`rnn_jax.data.files.read_sequences`), the objective
chosen, the targets read for it (`read_targets`: class indices, or numbers),
the splits drawn, then the task built for the objective.

Sequences are split 70/15/15 by a shuffle (``data_seed``); one series is
split 70/15/15 in time and cut into windows of ``length`` steps. Inputs are
standardised per feature, and regression and forecast targets too, with the
training split's mean and deviation, so MSEs are in units of the target's
training deviation (the training mean scores about 1). A table's forecast
inputs are its feature columns and, unless ``features`` are given, the
target's own past; an ``.npz``'s are ``x``. What the scaling and the
labels were is the task's ``encoding`` (JSON, stored in every checkpoint),
which `prediction_inputs` and `decode_outputs` apply to new data.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from rnn_jax._validate import one_of
from rnn_jax.data.base import ArraySplit, Batch, DataError, Task, check_int, split_counts
from rnn_jax.data.files import Sequences, numbers, read_sequences

OBJECTIVES = ("classify", "regress", "forecast")
KINDS = {"classify": "classification", "regress": "regression", "forecast": "forecasting"}
MAX_INFERRED_CLASSES = 20
DEFAULT_WINDOW = 32
MISSING = ("", "nan", "inf", "-inf", "+inf", "infinity", "-infinity")  # no class label
VAL, TEST = 0.15, 0.15
TASK_OPTIONS = ("length", "horizon", "data_seed")  # what `file_task` takes beside the columns


@dataclass(frozen=True)
class FileTask(Task):
    """A `Task` on a user's file, with the ``encoding`` that maps new data as training did.

    ``encoding`` (JSON): ``objective``; the input columns ``features`` and
    ``target_as_input``; the ``target``, ``id`` and ``table`` (whether the file
    is a table); per-input ``mean`` and ``std``; ``target_mean`` and
    ``target_std`` (regress, forecast); ``classes`` (classify, in class-index
    order); ``horizon`` and ``window`` (forecast; ``window`` None when each
    sequence is read whole).
    """

    encoding: dict[str, Any] = field(default_factory=dict)

    def info(self) -> dict[str, Any]:
        return {**super().info(), "encoding": self.encoding}


def valid_steps(data: Sequences) -> np.ndarray:
    """``[N, T]`` True at each sequence's valid steps."""
    return np.arange(data.features.shape[1])[None, :] < data.length[:, None]


def changing_step(data: Sequences) -> tuple[int, int] | None:
    """The first ``(sequence, step)`` where a per-step target differs from its sequence's first."""
    changed = np.argwhere((data.target != data.target[:, :1]) & valid_steps(data))
    return None if changed.size == 0 else (int(changed[0, 0]), int(changed[0, 1]))


def parses_as_numbers(values: np.ndarray) -> bool:
    """Whether every entry of ``values`` reads as a float (NaN and inf included)."""
    if values.dtype.kind in "biuf":
        return True
    try:
        values.astype(np.float64)
    except ValueError:
        return False
    return True


def infer_objective(data: Sequences) -> str:
    """The objective the targets suggest (the module docstring's rule)."""
    if data.target.ndim == 2:
        if data.count == 1 or not data.is_table or changing_step(data) is not None:
            return "forecast"
        values = data.target[:, 0]
    else:
        values = data.target
    if not parses_as_numbers(values):
        return "classify"
    parsed = values.astype(np.float64)
    whole = np.all(np.isfinite(parsed)) and np.all(parsed == np.round(parsed))
    few = np.unique(parsed).size <= MAX_INFERRED_CLASSES
    return "classify" if whole and few else "regress"


def choose_objective(data: Sequences, objective: str | None) -> str:
    """``objective``, or the one the targets suggest when None; a DataError when the file
    holds no targets, or targets of the wrong shape for it."""
    if data.target is None:
        where = "give --target COLUMN" if data.is_table else "an .npz holds them as 'y'"
        raise DataError(f"{data.source} holds no targets to train on: {where}")
    objective = objective or infer_objective(data)
    if objective == "forecast" and data.target.ndim == 1:
        raise DataError(
            f"{data.source}: y is [N], one target per sequence; forecast needs y [N, T], one per "
            f"step"
        )
    return objective


def sequence_targets(data: Sequences, objective: str) -> np.ndarray:
    """``[N]`` one target per sequence; a DataError where the file holds one per step."""
    if data.target.ndim == 1:
        return data.target
    if not data.is_table:
        raise DataError(
            f"{data.source}: y is [N, T], a target per step; {objective} needs y [N], one per "
            f"sequence (forecast reads one per step)"
        )
    if data.count == 1:
        raise DataError(
            f"{data.source}: {objective} needs several sequences; give --id COLUMN (without it "
            f"the whole table is one series, to forecast)"
        )
    change = changing_step(data)
    if change is not None:
        i, t = change
        raise DataError(
            f"{data.at(i, t)}: column {data.target_name!r} changes within sequence "
            f"{str(data.ids[i])!r} (from {str(data.target[i, 0])!r} to "
            f"{str(data.target[i, t])!r}); {objective} "
            f"needs one target per sequence (forecast reads one per step)"
        )
    return data.target[:, 0]


def target_place(data: Sequences, objective: str):
    """Where entry ``index`` of the targets is, in words, for `numbers`'s messages."""

    def place(index: tuple[int, ...]) -> str:
        step = index[1] if len(index) == 2 else 0
        where = data.at(index[0], step) if data.is_table else f"{data.source}: y{list(index)}"
        column = f", column {data.target_name!r}" if data.is_table else ""
        return f"{where}{column} (the target, to {objective})"

    return place


def class_labels(data: Sequences, values: np.ndarray) -> tuple[list[Any], np.ndarray]:
    """The sorted classes of ``values [N]`` (integers or text) and each value's class index."""
    if parses_as_numbers(values):
        parsed = numbers(values, target_place(data, "classify"))
        fractional = np.flatnonzero(parsed != np.round(parsed))
        if fractional.size:
            i = int(fractional[0])
            raise DataError(
                f"{data.at(i, 0)}: classify needs class labels (text or whole numbers); the "
                f"target is {str(values[i])!r} (regress predicts numbers)"
            )
        classes, index = np.unique(parsed.astype(np.int64), return_inverse=True)
        classes = [int(c) for c in classes]
    else:
        text = np.char.lower(np.char.strip(values.astype(str)))
        missing = np.flatnonzero(np.isin(text, MISSING))
        if missing.size:
            i = int(missing[0])
            raise DataError(f"{data.at(i, 0)}: expected a class label; got {str(values[i])!r}")
        classes, index = np.unique(values.astype(str), return_inverse=True)
        classes = [str(c) for c in classes]
    if len(classes) < 2:
        raise DataError(
            f"{data.source}: the target holds one class ({classes[0]!r}); classify needs at least 2"
        )
    return classes, index.astype(np.int32)


def target_series(data: Sequences) -> np.ndarray:
    """``[N, T]`` the per-step target as numbers (zero past each length)."""
    valid = valid_steps(data)
    fill = "0" if data.target.dtype.kind == "U" else 0
    return np.where(
        valid, numbers(np.where(valid, data.target, fill), target_place(data, "forecast")), 0.0
    )


class Targets(NamedTuple):
    """A file's targets, read once for the objective: ``values`` ``[N]`` class indices
    (classify, with ``classes`` in index order), ``[N]`` numbers (regress), or ``[N, T]``
    numbers (forecast, zero past each length)."""

    values: np.ndarray
    classes: list[Any] | None = None


def read_targets(data: Sequences, objective: str) -> Targets:
    """The targets of ``data`` as ``objective`` reads them; a DataError names the first bad one."""
    if objective == "forecast":
        return Targets(target_series(data))
    values = sequence_targets(data, objective)
    if objective == "classify":
        classes, index = class_labels(data, values)
        return Targets(index, classes)
    return Targets(numbers(values, target_place(data, objective)))


def moments(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and deviation of ``values [M, F]`` over their M entries (a deviation of 0 as 1)."""
    std = values.std(axis=0)
    return values.mean(axis=0), np.where(std > 0, std, 1.0)


def scaling(inputs: np.ndarray, target: np.ndarray) -> dict[str, Any]:
    """The encoding's scaling from training ``inputs [M, F]`` and ``target [M]`` (JSON)."""
    mean, std = moments(inputs)
    target_mean, target_std = moments(target[:, None])
    return {
        "mean": mean.tolist(),
        "std": std.tolist(),
        "target_mean": float(target_mean[0]),
        "target_std": float(target_std[0]),
    }


def model_inputs(
    data: Sequences, encoding: dict[str, Any], series: np.ndarray | None
) -> np.ndarray:
    """``[N, T, F]`` the inputs the model reads, before scaling: the features, then the target
    ``series [N, T]`` where the encoding reads it as an input."""
    if not encoding["target_as_input"]:
        return data.features
    return np.concatenate([data.features, series[..., None]], axis=-1)


def scaled(values: np.ndarray, mean: Any, std: Any, valid: np.ndarray) -> np.ndarray:
    """``(values - mean) / std`` as float32, zero where not ``valid``."""
    mask = valid.reshape(valid.shape + (1,) * (values.ndim - valid.ndim))
    return np.where(mask, (values - np.asarray(mean)) / np.asarray(std), 0.0).astype(np.float32)


def check_options(objective: str, windowed: bool, length: int | None, horizon: int | None) -> None:
    """A DataError for an option the objective does not read, or a bad one."""
    if horizon is not None and objective != "forecast":
        raise DataError(f"horizon applies to forecast; the objective is {objective}")
    if length is not None and not windowed:
        raise DataError(
            "length (the window) applies to forecasting one series (a table without --id); "
            "these sequences are read whole"
        )
    for name, value in (("length", length), ("horizon", horizon)):
        if value is not None:
            check_int(name, value)


def base_encoding(data: Sequences, objective: str, all_features: bool) -> dict[str, Any]:
    """What the task's encoding holds before the scaling: the columns and the objective."""
    encoding = {
        "objective": objective,
        "features": list(data.feature_names),
        # a table's forecast reads the target's own past too, unless --features says otherwise
        "target_as_input": objective == "forecast" and all_features and data.is_table,
        "target": data.target_name,
        "id": data.id_name,
        "table": data.is_table,
    }
    if not encoding["features"] and not encoding["target_as_input"]:
        raise DataError(f"{data.source}: no input columns are left beside the target and the id")
    return encoding


def split_sequences(data: Sequences, data_seed: int) -> list[np.ndarray]:
    """The indices of the train, validation and test sequences, by a shuffle of ``data_seed``."""
    if data.count < 3:
        raise DataError(
            f"{data.source} holds {data.count} sequences; the train, validation and test "
            f"splits need at least 3"
        )
    order = np.random.default_rng(data_seed).permutation(data.count)
    n_train, n_val, _ = split_counts(data.count, VAL, TEST)
    return np.split(order, [n_train, n_train + n_val])


def file_task(
    path: str | os.PathLike,
    target: str | None = None,
    id: str | None = None,
    features: list[str] | None = None,
    objective: str | None = None,
    length: int | None = None,
    horizon: int | None = None,
    data_seed: int = 0,
) -> FileTask:
    """The task of learning ``target`` from the data file at ``path``.

    ``target``, ``id`` and ``features`` name a table's columns (None for an
    ``.npz``, whose arrays are named); ``objective`` is one of `OBJECTIVES` or
    None (inferred, as the module docstring says); ``length`` is the window
    when one series is forecast (default `DEFAULT_WINDOW`), ``horizon`` the
    steps ahead a forecast looks (default 1); ``data_seed`` shuffles the
    sequences into splits.

    Example:
        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "walks.csv"
        >>> rows = [f"{i},{t * (-1) ** i},{'up' if i % 2 == 0 else 'down'}"
        ...         for i in range(6) for t in range(3)]
        >>> _ = path.write_text("walk,x,label\\n" + "\\n".join(rows) + "\\n")
        >>> task = rj.data.file_task(path, target="label", id="walk")
        >>> task.kind, task.input_size, task.output_size, task.encoding["classes"]
        ('classification', 1, 2, ['down', 'up'])
    """
    if objective is not None:
        try:
            one_of("objective", objective, OBJECTIVES)
        except ValueError as error:
            raise DataError(str(error)) from None
    data = read_sequences(path, target=target, id=id, features=features)
    objective = choose_objective(data, objective)
    windowed = objective == "forecast" and data.count == 1
    check_options(objective, windowed, length, horizon)
    encoding = base_encoding(data, objective, features is None)
    targets = read_targets(data, objective)
    options = {"path": str(path), "target": target, "id": id, "features": features}
    options.update(objective=objective, length=length, horizon=horizon, data_seed=data_seed)
    common = {"name": Path(path).stem, "kind": KINDS[objective], "options": options}
    if windowed:
        return series_task(data, targets, encoding, common, length or DEFAULT_WINDOW, horizon or 1)
    parts = split_sequences(data, data_seed)
    if objective == "forecast":
        return sequence_forecast_task(data, targets, encoding, common, parts, horizon or 1)
    return sequence_task(data, targets, encoding, common, parts)


class Head(NamedTuple):
    """What one target per sequence makes of a task: the targets the model fits, its loss,
    metrics, outputs and baselines, and what the encoding keeps of them."""

    targets: np.ndarray
    loss: str
    metrics: tuple[str, ...]
    outputs: int
    baselines: dict[str, dict[str, float]]
    encoding: dict[str, Any]


def class_head(targets: Targets, parts: list[np.ndarray]) -> Head:
    """Classes: cross-entropy and accuracy; baselines from the training class counts."""
    train, _, test = parts
    index, classes = targets.values, targets.classes
    counts = np.bincount(index[train], minlength=len(classes))
    frequencies = (counts + 1.0) / (counts.sum() + len(classes))
    baselines = {
        "majority class": {"accuracy": float(np.mean(index[test] == counts.argmax()))},
        "training frequencies": {
            "cross_entropy": float(-np.mean(np.log(frequencies[index[test]])))
        },
    }
    metrics = ("cross_entropy", "accuracy")
    return Head(index, "cross_entropy", metrics, len(classes), baselines, {"classes": classes})


def regression_head(targets: Targets, parts: list[np.ndarray]) -> Head:
    """Numbers, standardised by the training split: MSE; baseline the training mean."""
    train, _, test = parts
    target_mean, target_std = moments(targets.values[train, None])
    valid = np.ones(targets.values.shape[0], bool)
    scaled_targets = scaled(targets.values[:, None], target_mean, target_std, valid)
    baselines = {"training mean": {"mse": float(np.mean(scaled_targets[test] ** 2))}}
    kept = {"target_mean": float(target_mean[0]), "target_std": float(target_std[0])}
    return Head(scaled_targets, "mse", ("mse",), 1, baselines, kept)


def sequence_task(
    data: Sequences,
    targets: Targets,
    encoding: dict[str, Any],
    common: dict[str, Any],
    parts: list[np.ndarray],
) -> FileTask:
    """Classification or regression: one target per sequence."""
    valid = valid_steps(data)
    train = parts[0]
    mean, std = moments(data.features[train][valid[train]])
    inputs = scaled(data.features, mean, std, valid)
    head = (class_head if encoding["objective"] == "classify" else regression_head)(targets, parts)

    def split(index: np.ndarray) -> ArraySplit:
        weights, length = np.ones(len(index), np.float32), data.length[index].astype(np.int32)
        return ArraySplit(Batch(inputs[index], head.targets[index], weights, length), False)

    return FileTask(
        **common,
        loss=head.loss,
        metrics=head.metrics,
        train=split(parts[0]),
        val=split(parts[1]),
        test=split(parts[2]),
        input_size=inputs.shape[-1],
        output_size=head.outputs,
        baselines=head.baselines,
        description=(
            f"{encoding['objective']} {data.target_name} of {data.count} sequences in "
            f"{Path(data.source).name}"
        ),
        encoding={**encoding, "mean": mean.tolist(), "std": std.tolist(), **head.encoding},
    )


def scaled_forecast(
    raw: np.ndarray, series: np.ndarray, encoding: dict[str, Any], valid: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Inputs ``[..., T, F]`` and the target series ``[..., T]`` scaled as ``encoding`` says."""
    inputs = scaled(raw, encoding["mean"], encoding["std"], valid)
    z = scaled(series[..., None], encoding["target_mean"], encoding["target_std"], valid)
    return inputs, z[..., 0]


def forecast_baselines(current: np.ndarray, ahead: np.ndarray, mask: np.ndarray) -> dict:
    """Persistence and the training mean (zero, in standardised units) on test targets."""
    weight = max(float(mask.sum()), 1.0)
    return {
        "persistence": {"mse": float(np.sum(mask * (current - ahead) ** 2) / weight)},
        "training mean": {"mse": float(np.sum(mask * ahead**2) / weight)},
    }


def forecast_split(inputs: np.ndarray, targets: np.ndarray, length: np.ndarray) -> ArraySplit:
    """Per-step targets ``[N, T]`` as a split: ``targets [N, T, 1]``, mask from ``length``."""
    mask = (np.arange(targets.shape[1])[None, :] < length[:, None]).astype(np.float32)
    batch = Batch(inputs, targets[..., None], mask, length=length.astype(np.int32))
    return ArraySplit(batch, per_step=True)


def sequence_forecast_task(
    data: Sequences,
    targets: Targets,
    encoding: dict[str, Any],
    common: dict[str, Any],
    parts: list[np.ndarray],
    horizon: int,
) -> FileTask:
    """Forecasting within each sequence, read whole: at step t the target at ``t + horizon``."""
    short = np.flatnonzero(data.length <= horizon)
    if short.size:
        i = int(short[0])
        raise DataError(
            f"{data.at(i)} has {data.length[i]} steps; forecasting {horizon} ahead needs at "
            f"least {horizon + 1}"
        )
    series = targets.values
    raw = model_inputs(data, encoding, series)
    valid = valid_steps(data)
    train, _, test = parts
    encoding = {
        **encoding,
        **scaling(raw[train][valid[train]], series[train][valid[train]]),
        "horizon": horizon,
        "window": None,
    }
    inputs, z = scaled_forecast(raw, series, encoding, valid)
    steps = raw.shape[1] - horizon
    inputs = inputs[:, :steps]
    current, ahead, length = z[:, :steps], z[:, horizon:], data.length - horizon
    mask = np.arange(steps)[None, :] < length[test][:, None]
    split = lambda index: forecast_split(inputs[index], ahead[index], length[index])
    return FileTask(
        **common,
        loss="mse",
        metrics=("mse",),
        train=split(train),
        val=split(parts[1]),
        test=split(test),
        input_size=inputs.shape[-1],
        output_size=1,
        baselines=forecast_baselines(current[test], ahead[test], mask),
        description=(
            f"forecast {data.target_name} {horizon} step(s) ahead in {data.count} sequences of "
            f"{Path(data.source).name}"
        ),
        encoding=encoding,
    )


def series_task(
    data: Sequences,
    targets: Targets,
    encoding: dict[str, Any],
    common: dict[str, Any],
    window: int,
    horizon: int,
) -> FileTask:
    """Forecasting one series: split 70/15/15 in time, each part cut into windows."""
    size = int(data.length[0])
    series = targets.values[0, :size]
    raw = model_inputs(data, encoding, targets.values)[0, :size]
    n_test, n_val = int(round(size * TEST)), int(round(size * VAL))
    bounds = [0, size - n_val - n_test, size - n_test, size]
    need = window + horizon
    smallest = min(b - a for a, b in zip(bounds, bounds[1:], strict=False))
    if smallest < need:
        raise DataError(
            f"{data.source}: {size} rows leave {smallest} in the smallest split; a window of "
            f"length {window} and horizon {horizon} needs {need}"
        )
    encoding = {
        **encoding,
        **scaling(raw[: bounds[1]], series[: bounds[1]]),
        "horizon": horizon,
        "window": window,
    }
    inputs, z = scaled_forecast(raw, series, encoding, np.ones(size, bool))

    def windows(start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        first = np.arange(start, stop - need + 1)
        return first[:, None] + np.arange(window)[None, :], first

    def split(start: int, stop: int) -> ArraySplit:
        index, first = windows(start, stop)
        return forecast_split(inputs[index], z[index + horizon], np.full(first.size, window))

    test_index, _ = windows(bounds[2], bounds[3])
    return FileTask(
        **common,
        loss="mse",
        metrics=("mse",),
        train=split(bounds[0], bounds[1]),
        val=split(bounds[1], bounds[2]),
        test=split(bounds[2], bounds[3]),
        input_size=inputs.shape[-1],
        output_size=1,
        baselines=forecast_baselines(
            z[test_index], z[test_index + horizon], np.ones(test_index.shape)
        ),
        description=(
            f"forecast {data.target_name} {horizon} step(s) ahead in {Path(data.source).name} "
            f"({size} rows), T={window}"
        ),
        encoding=encoding,
    )


class PredictionInputs(NamedTuple):
    """What a trained model reads to predict a file, and what each prediction is of.

    ``inputs [N, T, F]`` float32 (batch-major) with ``length [N]``; ``ids [N]``
    the sequence each row of inputs comes from; ``per_step``: one prediction
    per valid step (forecast of whole sequences), else one per row (from the
    output at its last step, for windows: ``steps [N]`` names the series row
    each window ends at).
    """

    inputs: np.ndarray
    length: np.ndarray
    ids: np.ndarray
    per_step: bool
    steps: np.ndarray | None = None


def prediction_inputs(path: str | os.PathLike, encoding: dict[str, Any]) -> PredictionInputs:
    """The file at ``path`` read and scaled as the task of ``encoding`` was.

    A table needs the training columns (the target only where it was an input).
    """
    table = encoding["table"]
    if table != (Path(path).suffix.lower() not in (".npz", ".npy")):
        trained = "a table (CSV, TSV, Parquet)" if table else "a NumPy file (.npz, .npy)"
        raise DataError(f"data file {path}: the run was trained on {trained}; give one of those")
    data = read_sequences(
        path,
        target=encoding["target"] if encoding["target_as_input"] else None,
        id=encoding["id"],
        features=encoding["features"] if table else None,
    )
    width = len(encoding["features"])
    if data.features.shape[-1] != width:
        raise DataError(
            f"{data.source}: x has {data.features.shape[-1]} features; the run was trained on "
            f"{width}"
        )
    valid = valid_steps(data)
    series = target_series(data) if encoding["target_as_input"] else None
    inputs = scaled(model_inputs(data, encoding, series), encoding["mean"], encoding["std"], valid)
    if encoding["objective"] != "forecast":
        return PredictionInputs(inputs, data.length, data.ids, per_step=False)
    window = encoding["window"]
    if window is None:
        return PredictionInputs(inputs, data.length, data.ids, per_step=True)
    size = int(data.length[0])
    if data.count != 1 or size < window:
        raise DataError(
            f"{data.source} holds {size} rows; the run forecasts from windows of {window}"
        )
    last = np.arange(window - 1, size)
    index = last[:, None] - np.arange(window)[::-1][None, :]
    return PredictionInputs(
        inputs[0][index], np.full(last.size, window), np.repeat(data.ids, last.size), False, last
    )


def decode_outputs(outputs: np.ndarray, encoding: dict[str, Any]) -> np.ndarray:
    """Model outputs ``[..., K]`` as the file's targets: class labels, or values in the
    target's units (``[...]``)."""
    if encoding["objective"] == "classify":
        return np.asarray(encoding["classes"], dtype=object)[np.argmax(outputs, axis=-1)]
    return outputs[..., 0] * encoding["target_std"] + encoding["target_mean"]
