"""A character language model's data: any UTF-8 text file, or the Python standard library.

The text becomes one token stream per split (90/5/5, in order), read in
chunks for truncated BPTT (`StreamSplit`).
"""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path

import numpy as np

from rnn_jax.data.base import DataError, StreamSplit, Task, check_int

FRACTIONS = (0.9, 0.05, 0.05)


def stdlib_text(max_chars: int) -> str:
    """The Python standard library's own ``.py`` sources on this machine, in name order.

    Files are read whole until ``max_chars`` characters are gathered.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    parts, total = [], 0
    for path in sorted(root.glob("*.py")):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        parts.append(text)
        total += len(text)
        if total >= max_chars:
            break
    if not parts:
        raise DataError(f"found no readable Python sources under {root}; pass --text FILE")
    return "".join(parts)[:max_chars]


def read_text(path: str | os.PathLike, max_chars: int | None = None) -> str:
    """A UTF-8 text file's contents; a DataError in words when it is missing, empty or not UTF-8."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"text file {path} does not exist")
    if not path.is_file():
        raise DataError(f"text file {path} is not a regular file")
    data = path.read_bytes()
    if not data:
        raise DataError(f"text file {path} is empty")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(
            f"text file {path} is not UTF-8 text (byte 0x{data[error.start]:02x} at offset "
            f"{error.start})"
        ) from None
    return text if max_chars is None else text[:max_chars]


def char_text(path: str | None = None, length: int = 100, max_chars: int = 1_000_000) -> Task:
    """Character-level language modelling on ``path`` (default: the standard library's sources).

    The alphabet is every character of the text. Training reads ``length``
    characters per step from each of ``batch`` rows of the training stream,
    carrying the state from chunk to chunk. Baseline: the unigram model
    (training character frequencies), in nats and bits per character.

    Example:
        >>> task = rj.data.char_text(length=64, max_chars=50_000)
        >>> task.kind, task.vocab_size > 50
        ('language_model', True)
    """
    length = check_int("length", length, 1)
    max_chars = check_int("max_chars", max_chars, 1)
    text = stdlib_text(max_chars) if path is None else read_text(path, max_chars)
    if not text:
        raise DataError(f"text file {path} is empty")
    need = int(np.ceil((length + 1) / min(FRACTIONS)))
    if len(text) < need:
        raise DataError(
            f"text {path or '(standard library)'} has {len(text)} characters; sequences of "
            f"length {length} need at least {need} (each split must hold length + 1)"
        )
    vocab = tuple(sorted(set(text)))
    lookup = {ch: i for i, ch in enumerate(vocab)}
    tokens = np.fromiter((lookup[ch] for ch in text), np.int32, len(text))
    n_train = int(len(tokens) * FRACTIONS[0])
    n_val = int(len(tokens) * FRACTIONS[1])
    train, val, test = np.split(tokens, [n_train, n_train + n_val])
    counts = np.bincount(train, minlength=len(vocab)) + 1.0
    log_p = np.log(counts / counts.sum())
    unigram = float(-np.mean(log_p[test]))
    return Task(
        name="text",
        kind="language_model",
        loss="cross_entropy",
        metrics=("cross_entropy", "accuracy", "bits_per_char"),
        train=StreamSplit(train, length),
        val=StreamSplit(val, length),
        test=StreamSplit(test, length),
        vocab_size=len(vocab),
        output_size=len(vocab),
        baselines={
            "unigram": {"cross_entropy": unigram, "bits_per_char": float(unigram / np.log(2))}
        },
        options={
            "path": None if path is None else str(path),
            "length": length,
            "max_chars": max_chars,
        },
        vocab=vocab,
        description=(
            f"characters of {path or 'the Python standard library'} ({len(text):,}), T={length}"
        ),
    )


def encode(text: str, vocab: tuple[str, ...] | str) -> np.ndarray:
    """Token ids of ``text`` in ``vocab``; a DataError names a character outside it."""
    lookup = {ch: i for i, ch in enumerate(vocab)}
    missing = sorted({ch for ch in text if ch not in lookup})
    if missing:
        raise DataError(f"the prompt holds characters the model never saw: {missing[:5]!r}")
    return np.asarray([lookup[ch] for ch in text], np.int32)


def decode(tokens, vocab: tuple[str, ...] | str) -> str:
    """The text of token ids ``tokens`` in ``vocab``."""
    return "".join(vocab[int(t)] for t in np.asarray(tokens).reshape(-1))
