"""The task of Flax's ``examples/seq2seq``: read ``"a+b"``, write ``"=c"`` with ``c = a + b``.

``a`` is drawn from 0–99 and ``b`` from 0–999 (the pair sorted), as in Flax's
input pipeline; this module re-states the task in numpy (Flax's examples are
not a package), with its encoding: characters ``" +0123456789="`` are ids 2 to
14, 0 pads and 1 ends a string, so the vocabulary has 15 ids. A query holds
at most 8 ids with its end token, an answer (``"="`` first) at most 6.

Batches are batch-major token ids; `one_hot` gives the vectors both models read.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

CHARACTERS = " +0123456789="
PAD, END = 0, 1
VOCAB = len(CHARACTERS) + 2
ID = {character: i + 2 for i, character in enumerate(CHARACTERS)}
QUERY_LENGTH = 8  # "99+999" and the end token fit, as Flax's 2 * digits + 2
ANSWER_LENGTH = 6  # "=1098" and the end token, as Flax's digits + 3
BEGIN = ID["="]  # the answer's first id: the decoder's first input


class Batch(NamedTuple):
    query: np.ndarray  # [B, QUERY_LENGTH] ids
    answer: np.ndarray  # [B, ANSWER_LENGTH] ids, "=" first


def encode(text: str, width: int) -> np.ndarray:
    """``text`` as ids, the end token after it, padded to ``width``."""
    ids = [ID[character] for character in text] + [END]
    if len(ids) > width:
        raise ValueError(f"{text!r} needs {len(ids)} ids with its end; the width is {width}")
    return np.array(ids + [PAD] * (width - len(ids)), np.int32)


def decode(ids: np.ndarray) -> str:
    """The characters of ``ids`` up to the first end token."""
    characters = {i: character for character, i in ID.items()}
    out = []
    for i in np.asarray(ids).tolist():
        if i == END:
            break
        out.append(characters.get(i, "_"))
    return "".join(out)


def batch(rng: np.random.Generator, size: int) -> Batch:
    """``size`` new sums."""
    pairs = np.sort(np.stack([rng.integers(0, 100, size), rng.integers(0, 1000, size)]), axis=0)
    queries = [f"{a}+{b}" for a, b in pairs.T]
    answers = [f"={a + b}" for a, b in pairs.T]
    return Batch(
        np.stack([encode(q, QUERY_LENGTH) for q in queries]),
        np.stack([encode(a, ANSWER_LENGTH) for a in answers]),
    )


def one_hot(ids: np.ndarray) -> np.ndarray:
    """``[..., VOCAB]`` float32 vectors of ``ids``."""
    return np.eye(VOCAB, dtype=np.float32)[ids]


def query_length(query: np.ndarray) -> np.ndarray:
    """``[B]`` steps the encoder reads: up to the end token, not including it (Flax's example
    runs its encoder over ``argmax(ids == end)`` steps)."""
    return np.argmax(query == END, axis=-1).astype(np.int32)


def answer_length(answer: np.ndarray) -> np.ndarray:
    """``[B]`` ids that count in an answer: up to its end token, including it."""
    ends = answer == END
    return np.where(ends.any(-1), np.argmax(ends, axis=-1) + 1, answer.shape[-1]).astype(np.int32)
