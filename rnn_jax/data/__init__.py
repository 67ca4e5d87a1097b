"""Tasks, generated, shipped with installed packages (nothing is downloaded), or a user's file.

``rj.data.get_task("adding", length=100)`` builds a `Task` by name; each task
is also a function here (``rj.data.adding(length=100)``).
``rj.data.file_task("sales.csv", target="sales", id="store")`` makes one of
a CSV, TSV, Parquet or ``.npz`` file (`rnn_jax.data.files` reads them).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from rnn_jax.data.base import (
    ArraySplit,
    Batch,
    DataError,
    GeneratedSplit,
    StreamSplit,
    Task,
    is_solved,
)
from rnn_jax.data.bundled import digits, sunspots
from rnn_jax.data.files import Sequences, read_sequences
from rnn_jax.data.synthetic import adding, copy_memory, mackey_glass, translation
from rnn_jax.data.text import char_text, decode, encode, read_text
from rnn_jax.data.user_data import (
    OBJECTIVES,
    FileTask,
    PredictionInputs,
    decode_outputs,
    file_task,
    prediction_inputs,
)

TASKS: dict[str, Callable[..., Task]] = {
    "adding": adding,
    "copy_memory": copy_memory,
    "digits": digits,
    "mackey_glass": mackey_glass,
    "sunspots": sunspots,
    "text": char_text,
    "translate": translation,
}


def task_names() -> list[str]:
    """Names ``get_task`` accepts."""
    return sorted(TASKS)


def task_options(name: str) -> list[str]:
    """The options task ``name`` accepts."""
    return list(inspect.signature(TASKS[name]).parameters)


def get_task(name: str, **options: Any) -> Task:
    """The task called ``name`` built with ``options``; a DataError in words otherwise.

    Example:
        >>> rj.data.get_task("digits").output_size
        10
    """
    if name not in TASKS:
        raise DataError(f"task must be one of {task_names()}; got {name!r}")
    accepted = task_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise DataError(f"task {name} takes options {accepted}; got unknown {unknown}")
    return TASKS[name](**options)


__all__ = [
    "ArraySplit",
    "Batch",
    "DataError",
    "FileTask",
    "GeneratedSplit",
    "OBJECTIVES",
    "PredictionInputs",
    "Sequences",
    "StreamSplit",
    "TASKS",
    "Task",
    "adding",
    "char_text",
    "copy_memory",
    "decode",
    "decode_outputs",
    "digits",
    "encode",
    "file_task",
    "get_task",
    "is_solved",
    "mackey_glass",
    "prediction_inputs",
    "read_sequences",
    "read_text",
    "sunspots",
    "task_names",
    "task_options",
    "translation",
]
