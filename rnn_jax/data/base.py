"""What every task hands to training: time-major `Batch`es from splits, and a `Task`.

Data knows nothing of models. A task is arrays (or a generator of them), the
loss that fits them, the sizes a model needs, and honest baselines computed
on its own test split.

Batches are time-major like ``rj.scan``: ``inputs: [T, B, F]`` floats or
``[T, B]`` token ids; ``targets`` and ``mask`` are ``[B, ...]`` for one target
per sequence or ``[T, B, ...]`` for one per step. Every split is
deterministic: the training batch of step ``s`` depends only on the seed and
``s``, which is what lets a resumed run continue exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import numpy as np

from rnn_jax._validate import int_at_least


class DataError(ValueError):
    """Bad data or task options (a missing, empty or undecodable file, a too-short text)."""


class Batch(NamedTuple):
    """One batch, time-major.

    - ``inputs``: ``[T, B, F]`` floats, ``[T, B]`` token ids, or a tuple of
      those (seq2seq: ``(source [S, B], decoder_inputs [T, B])``).
    - ``targets``: ``[B]``/``[B, O]`` (one per sequence) or ``[T, B]``/``[T, B, O]``.
    - ``mask``: weights of the targets, ``[B]`` or ``[T, B]``.
    - ``length``: ``[B]`` valid input steps (right padding), or None.
    - ``reset``: scalar bool, True where a stream starts again (truncated
      BPTT zeroes the carried state there), or None.
    """

    inputs: Any
    targets: Any
    mask: Any
    length: Any = None
    reset: Any = None


def time_major(batch: Batch, per_step: bool) -> Batch:
    """A batch-major batch (``[B, T, ...]`` inputs) made time-major."""
    swap = lambda a: np.swapaxes(a, 0, 1)
    return batch._replace(
        inputs=jax.tree.map(swap, batch.inputs),
        targets=swap(batch.targets) if per_step else batch.targets,
        mask=swap(batch.mask) if per_step else batch.mask,
    )


def take(batch: Batch, index: np.ndarray) -> Batch:
    """Rows ``index`` of a batch-major batch (``reset`` is kept as is)."""
    pick = lambda a: None if a is None else np.asarray(a)[index]
    return Batch(
        inputs=jax.tree.map(pick, batch.inputs),
        targets=pick(batch.targets),
        mask=pick(batch.mask),
        length=pick(batch.length),
        reset=batch.reset,
    )


class ArraySplit:
    """A split held in memory, batch-major; batches come out time-major.

    Training batches walk through a fresh permutation every epoch, drawn from
    ``(seed, epoch)``; the last partial batch of an epoch is dropped so every
    step has the same shape (one compilation).
    """

    def __init__(self, data: Batch, per_step: bool):
        self.data = data
        self.per_step = per_step
        self.size = int(np.asarray(data.targets).shape[0])

    def __len__(self) -> int:
        return self.size

    def steps_per_epoch(self, batch_size: int) -> int:
        return max(1, self.size // batch_size)

    def batch(self, step: int, batch_size: int, seed: int) -> Batch:
        size = min(batch_size, self.size)
        per_epoch = self.steps_per_epoch(size)
        epoch, position = divmod(step, per_epoch)
        order = np.random.default_rng([seed, epoch]).permutation(self.size)
        return time_major(
            take(self.data, order[position * size : (position + 1) * size]), self.per_step
        )

    def batches(self, batch_size: int) -> Iterator[Batch]:
        """The whole split in order, in batches of one shape (one compilation).

        The last batch is filled up with repeats of the first rows whose mask
        is zero, so masked sums over all batches count every row once.
        """
        size = min(batch_size, self.size)
        for start in range(0, self.size, size):
            index = np.arange(start, start + size) % self.size
            batch = take(self.data, index)
            if start + size > self.size:
                keep = np.arange(start, start + size) < self.size
                mask = np.asarray(batch.mask)
                batch = batch._replace(mask=mask * keep.reshape((-1,) + (1,) * (mask.ndim - 1)))
            yield time_major(batch, self.per_step)


class GeneratedSplit:
    """An endless supply of fresh samples: ``sample(rng, n) -> Batch`` (batch-major).

    The batch of step ``s`` is drawn from ``numpy.random.default_rng([seed, s])``.
    ``epoch_size`` only names how many samples count as one epoch.
    """

    def __init__(
        self, sample: Callable[[np.random.Generator, int], Batch], epoch_size: int, per_step: bool
    ):
        self.sample = sample
        self.epoch_size = epoch_size
        self.per_step = per_step

    def __len__(self) -> int:
        return self.epoch_size

    def steps_per_epoch(self, batch_size: int) -> int:
        return max(1, self.epoch_size // batch_size)

    def batch(self, step: int, batch_size: int, seed: int) -> Batch:
        rng = np.random.default_rng([seed, 1_000_003, step])
        return time_major(self.sample(rng, batch_size), self.per_step)


class StreamSplit:
    """A long token stream for truncated BPTT.

    The stream is cut into ``B`` contiguous rows; step ``s`` reads chunk
    ``s mod chunks`` of ``T`` tokens from every row (``inputs [T, B]``, next
    tokens as ``targets [T, B]``) and ``reset`` is True at chunk 0, so the
    state carried across chunks restarts with the rows.
    """

    per_step = True

    def __init__(self, tokens: np.ndarray, length: int):
        self.tokens = np.asarray(tokens, np.int32)
        self.length = length

    def __len__(self) -> int:
        return max(0, (self.tokens.size - 1) // self.length)

    def _rows(self, batch_size: int) -> tuple[np.ndarray, int]:
        rows = max(1, min(batch_size, (self.tokens.size - 1) // self.length))
        width = (self.tokens.size - 1) // rows
        return self.tokens[: rows * width + 1], rows

    def chunks(self, batch_size: int) -> int:
        tokens, rows = self._rows(batch_size)
        return ((tokens.size - 1) // rows) // self.length

    def steps_per_epoch(self, batch_size: int) -> int:
        return max(1, self.chunks(batch_size))

    def _chunk(self, index: int, batch_size: int) -> Batch:
        tokens, rows = self._rows(batch_size)
        width = (tokens.size - 1) // rows
        inputs = tokens[:-1].reshape(rows, width)
        targets = tokens[1:].reshape(rows, width)
        window = slice(index * self.length, (index + 1) * self.length)
        return Batch(
            inputs=np.ascontiguousarray(inputs[:, window].T),
            targets=np.ascontiguousarray(targets[:, window].T),
            mask=np.ones((self.length, rows), np.float32),
            reset=np.asarray(index == 0),
        )

    def batch(self, step: int, batch_size: int, seed: int) -> Batch:
        del seed
        return self._chunk(step % self.steps_per_epoch(batch_size), batch_size)

    def batches(self, batch_size: int) -> Iterator[Batch]:
        for index in range(self.chunks(batch_size)):
            yield self._chunk(index, batch_size)


KINDS = ("regression", "classification", "tagging", "forecasting", "language_model", "seq2seq")


@dataclass(frozen=True)
class Task:
    """A learning problem, ready for any model.

    - ``kind``: ``"regression"``/``"classification"`` (one target per sequence),
      ``"tagging"``/``"forecasting"`` (one per step), ``"language_model"``
      (next token, trained with truncated BPTT over streams), ``"seq2seq"``.
    - ``loss``: ``"mse"`` or ``"cross_entropy"``; ``metrics``: what evaluation reports.
    - ``input_size`` (float features) or ``vocab_size`` (token inputs), and
      ``output_size`` (regression outputs or classes).
    - ``baselines``: ``{name: {metric: value}}`` measured on the test split.
    - ``solved``: ``(metric, "<" or ">", threshold)``, the bar a model must clear.
    - ``options``: the arguments that rebuild the task (JSON), ``vocab`` the
      token alphabet of text tasks.
    """

    name: str
    kind: str
    loss: str
    metrics: tuple[str, ...]
    train: Any
    val: Any
    test: Any
    output_size: int
    input_size: int | None = None
    vocab_size: int | None = None
    target_vocab_size: int | None = None
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)
    solved: tuple[str, str, float] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    vocab: tuple[str, ...] | None = None
    description: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}; got {self.kind!r}")

    @property
    def stateful(self) -> bool:
        """True when training carries the state across batches (truncated BPTT)."""
        return self.kind == "language_model"

    @property
    def per_step(self) -> bool:
        return self.kind not in ("regression", "classification")

    def info(self) -> dict[str, Any]:
        """The sizes and alphabet a model is rebuilt from, without the data (JSON)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "loss": self.loss,
            "metrics": list(self.metrics),
            "input_size": self.input_size,
            "vocab_size": self.vocab_size,
            "target_vocab_size": self.target_vocab_size,
            "output_size": self.output_size,
            "vocab": None if self.vocab is None else "".join(self.vocab),
            "options": dict(self.options),
        }


def is_solved(solved: tuple[str, str, float] | None, metrics: dict[str, float]) -> bool | None:
    """Whether ``metrics`` clear the bar ``solved`` (None when the task sets none)."""
    if solved is None or solved[0] not in metrics:
        return None
    name, op, threshold = solved
    value = metrics[name]
    return bool(value < threshold) if op == "<" else bool(value > threshold)


def split_counts(total: int, val: float, test: float) -> tuple[int, int, int]:
    """``(train, val, test)`` sizes for fractions ``val`` and ``test`` of ``total``."""
    n_test = max(1, int(round(total * test)))
    n_val = max(1, int(round(total * val)))
    return total - n_val - n_test, n_val, n_test


def check_int(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` if it is an int of at least ``minimum``, else a DataError naming it (task
    options come from the command line, whose errors are DataErrors)."""
    try:
        return int_at_least(name, value, minimum, f"an int >= {minimum}")
    except (TypeError, ValueError) as error:
        raise DataError(str(error)) from None
