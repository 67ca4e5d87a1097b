"""Models on the pure core: each a `Model(init, apply)` around sequence layers.

- `classifier`: many-to-one (a class or a value per sequence).
- `tagger`, `forecaster`: many-to-many (a tag or a value per step).
- `generator` with `sample`: one-to-many, a language model that writes by
  feeding each drawn token back through a ``lax.scan``.
- `seq2seq`: encoder–decoder with additive (Bahdanau) or multiplicative
  (Luong) attention, and greedy decoding.
"""

from rnn_jax.models.base import Dense, Model, dense, dense_init, embedding_init
from rnn_jax.models.seq2seq import Seq2SeqParams, seq2seq
from rnn_jax.models.sequence import (
    SequenceParams,
    classifier,
    draw,
    forecaster,
    generator,
    pool,
    sample,
    tagger,
)

__all__ = [
    "Dense",
    "Model",
    "Seq2SeqParams",
    "SequenceParams",
    "classifier",
    "dense",
    "dense_init",
    "draw",
    "embedding_init",
    "forecaster",
    "generator",
    "pool",
    "sample",
    "seq2seq",
    "tagger",
]
