"""Flax's ``examples/seq2seq`` ported to rnn_jax: an LSTM encoder–decoder learns to add.

The model is ``rj.models.seq2seq`` as it comes: an LSTM encoder whose final
state starts an LSTM decoder (the bridge, ``attention=None, bridge=True``),
one-hot vectors in (``source_size``, ``target_inputs="one_hot"``), batch-major
data (``time_major=False``). As in Flax's example, training runs the decoder
free: from the ``"="`` token it feeds back a token sampled from its own
logits, with a key per step (``decode(..., key=..., return_logits=True)``),
and the loss reads those logits; Adam at 0.003, batches of 128, 512 units.

    python examples/seq2seq/train.py --steps 2000

What a Flax user changes is in the docs page "Coming from Flax";
``compare_flax.py`` trains Flax's model and this one on the same batches.
"""

from __future__ import annotations

import argparse
import time
from typing import Any, NamedTuple

import addition
import jax
import jax.numpy as jnp
import numpy as np
import optax

import rnn_jax as rj

ANSWER_STEPS = addition.ANSWER_LENGTH - 1  # the decoder writes what follows "="


def make_model(hidden_size: int) -> rj.models.Model:
    return rj.models.seq2seq(
        rj.lstm(hidden_size),
        rj.lstm(hidden_size),
        source_size=addition.VOCAB,
        target_vocab=addition.VOCAB,
        target_inputs="one_hot",
        attention=None,
        bridge=True,
    )


def run_free(model: rj.models.Model, params: Any, query: jax.Array, key: jax.Array):
    """``(tokens [B, 5], logits [B, 5, V])`` of the decoder feeding back its own samples."""
    return model.decode(
        params,
        jax.nn.one_hot(query, addition.VOCAB),
        jnp.argmax(query == addition.END, axis=-1),  # addition.query_length, traced
        ANSWER_STEPS,
        begin=addition.BEGIN,
        key=key,
        return_logits=True,
        time_major=False,
    )


def valid(labels: jax.Array) -> jax.Array:
    """``[B, T]``: the positions up to and including each answer's end token."""
    ends = labels == addition.END
    length = jnp.where(ends.any(-1), jnp.argmax(ends, axis=-1) + 1, labels.shape[-1])
    return jnp.arange(labels.shape[-1]) < length[:, None]


def loss_and_metrics(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, dict]:
    """Flax's example's loss (cross-entropy on the valid positions, averaged over all of them)
    and accuracy (answers whose every valid position has the right argmax)."""
    mask = valid(labels)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    loss = jnp.mean(jnp.where(mask, nll, 0.0))
    right = jnp.all((jnp.argmax(logits, -1) == labels) | ~mask, axis=-1)
    return loss, {"loss": loss, "accuracy": jnp.mean(right)}


class Trainer(NamedTuple):
    """The jitted step ``(params, opt_state, batch, key) -> (params, opt_state, metrics)``."""

    init: Any
    step: Any


def make_trainer(model: rj.models.Model, learning_rate: float) -> Trainer:
    optimizer = optax.adam(learning_rate)

    def init(key):
        params = model.init(key)
        return params, optimizer.init(params)

    @jax.jit
    def step(params, opt_state, batch: addition.Batch, key):
        def loss_fn(params):
            _, logits = run_free(model, params, batch.query, key)
            return loss_and_metrics(logits, batch.answer[:, 1:])

        grads, metrics = jax.grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, metrics

    return Trainer(init, step)


def runner(model: rj.models.Model):
    """``run(params, batch, key) -> (tokens, logits)``: `run_free` on a batch's queries."""
    return lambda params, batch, key: run_free(model, params, batch.query, key)


def evaluate(run, params: Any, batch: addition.Batch, key: jax.Array) -> tuple[dict, np.ndarray]:
    """On new examples, with ``run`` a `runner`: Flax's accuracy (argmax of the logits of a
    free run) and the share of sampled answers that are exactly right; and those answers."""
    tokens, logits = jax.jit(run)(params, batch, key)
    labels = jnp.asarray(batch.answer[:, 1:])
    _, metrics = loss_and_metrics(logits, labels)
    exact = jnp.all((tokens == labels) | ~valid(labels), axis=-1)
    scores = {"accuracy": float(metrics["accuracy"]), "decoded": float(jnp.mean(exact))}
    return scores, np.asarray(tokens)


def show(batch: addition.Batch, tokens: np.ndarray, count: int = 5) -> None:
    for query, answer, written in list(zip(batch.query, batch.answer, tokens, strict=True))[:count]:
        got, want = addition.decode(written), addition.decode(answer[1:])
        verdict = "right" if got == want else f"wrong, {want}"
        print(f"  {addition.decode(query)} = {got} ({verdict})")


def options(doc: str) -> argparse.ArgumentParser:
    """The settings of the example (Flax's defaults), shared with ``compare_flax.py``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--hidden-size", type=int, default=512)
    parser.add_argument("--learning-rate", type=float, default=0.003)
    parser.add_argument("--eval-size", type=int, default=1000, help="new examples scored")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> dict:
    parser = options(__doc__)
    parser.add_argument("--log-every", type=int, default=200)
    args = parser.parse_args(argv)

    model = make_model(args.hidden_size)
    trainer = make_trainer(model, args.learning_rate)
    key = jax.random.key(args.seed)
    params, opt_state = trainer.init(key)
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        batch = addition.batch(rng, args.batch_size)
        params, opt_state, metrics = trainer.step(
            params, opt_state, batch, jax.random.fold_in(key, step)
        )
        if step % args.log_every == 0 or step == args.steps:
            print(f"step {step}: loss {float(metrics['loss']):.4f}", end=", ")
            print(
                f"accuracy {float(metrics['accuracy']):.3f} ({time.perf_counter() - start:.0f} s)"
            )
    test = addition.batch(np.random.default_rng(args.seed + 1), args.eval_size)
    result, tokens = evaluate(runner(model), params, test, jax.random.key(args.seed + 1))
    print(f"new examples: accuracy {result['accuracy']:.3f}, decoded {result['decoded']:.3f}")
    show(test, tokens)
    return result


if __name__ == "__main__":
    main()
