"""Text written by a trained character language model (``rnn-jax generate``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rnn_jax.app.load import LoadedRun
from rnn_jax.data import decode, encode
from rnn_jax.models import sample
from rnn_jax.train.checkpoint import CheckpointError


def generate_text(
    loaded: LoadedRun,
    prompt: str,
    chars: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
) -> str:
    """The ``chars`` characters ``loaded``'s model writes after ``prompt`` (`rj.models.sample`).

    ``temperature`` 0 is greedy; ``top_k`` samples among the k likeliest.
    Raises `CheckpointError` unless the run trained a character language
    model (the ``text`` task), and `rj.data.DataError` for a prompt holding a
    character it never saw.
    """
    info = loaded.info
    if info["kind"] != "language_model" or not info.get("vocab"):
        raise CheckpointError(
            f"the checkpoint in {loaded.directory} holds a {info['kind']} model; generating "
            "text needs a language model trained on characters (the text task)"
        )
    tokens = jnp.asarray(encode(prompt, info["vocab"]))
    write = jax.jit(
        lambda params, key, prompt: sample(
            loaded.model, params, key, prompt, chars, temperature=temperature, top_k=top_k
        )
    )
    return decode(write(loaded.params, jax.random.key(seed), tokens), info["vocab"])
