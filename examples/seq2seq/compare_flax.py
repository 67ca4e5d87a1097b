"""Flax's seq2seq example and its rnn_jax port (``train.py``) trained on the same batches.

Flax's examples are not a package, so its model is re-stated here from
``examples/seq2seq/models.py`` of google/flax: an ``nn.RNN(nn.LSTMCell)``
encoder whose final carry starts a decoder cell that reads, at every step,
the one-hot token it sampled (``make_rng("lstm")``, split per step by
``nn.RNN``) from the logits of its ``nn.Dense`` head. Both models train with
the same loss (``train.loss_and_metrics``), Adam at the same rate, each
library's default initialisers, on the same batches, one step of each in
turn (so a drift of a shared machine hits both alike).

Reported per library: the compile time of the training step (lower and
compile), the median step time after it, and on new examples the accuracy
of Flax's metric and the share of sampled answers exactly right. One JSON
file goes to ``benchmarks/results/`` (``seq2seq_port-<platform>-<time>.json``).

    python examples/seq2seq/compare_flax.py --steps 2000
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import addition
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import train

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import common  # noqa: E402


class SamplingDecoderCell(nn.RNNCellBase):
    """Flax's decoder step: an LSTM over the previous sample, a dense head, a new sample."""

    vocab_size: int

    @nn.compact
    def __call__(self, carry, x):
        del x  # the example's training and decoding both run free: only the first input counts
        lstm_carry, previous = carry
        # Linen's LSTMCell takes its size from the carry, the encoder's.
        lstm_carry, y = nn.LSTMCell(self.vocab_size)(lstm_carry, previous)
        logits = nn.Dense(self.vocab_size)(y)
        token = jax.random.categorical(self.make_rng("lstm"), logits)
        sample = jax.nn.one_hot(token, self.vocab_size, dtype=jnp.float32)
        return (lstm_carry, sample), (logits, sample)

    @property
    def num_feature_axes(self) -> int:
        return 1


class FlaxSeq2seq(nn.Module):
    """Flax's ``Seq2seq`` with ``teacher_force=False``, as its train.py trains it."""

    hidden_size: int
    vocab_size: int

    @nn.compact
    def __call__(self, queries, answers):
        encoder = nn.RNN(nn.LSTMCell(self.hidden_size), return_carry=True)
        decoder = nn.RNN(
            SamplingDecoderCell(self.vocab_size), split_rngs={"params": False, "lstm": True}
        )
        length = jnp.argmax(jnp.argmax(queries, -1) == addition.END, axis=-1)
        carry, _ = encoder(queries, seq_lengths=length)
        logits, samples = decoder(answers[:, :-1], initial_carry=(carry, answers[:, 0]))
        return logits, samples


def flax_trainer(hidden_size: int, learning_rate: float):
    """``(trainer, run)`` of Flax's model, as `train.make_trainer` and `train.runner` give."""
    model = FlaxSeq2seq(hidden_size, addition.VOCAB)
    optimizer = optax.adam(learning_rate)

    def run(params, batch, key):
        answers = jax.nn.one_hot(batch.answer, addition.VOCAB)
        queries = jax.nn.one_hot(batch.query, addition.VOCAB)
        logits, samples = model.apply({"params": params}, queries, answers, rngs={"lstm": key})
        return jnp.argmax(samples, -1), logits

    def init(key):
        shape = (1, addition.QUERY_LENGTH, addition.VOCAB)
        answers = jnp.ones((1, addition.ANSWER_LENGTH, addition.VOCAB))
        variables = model.init({"params": key, "lstm": key}, jnp.ones(shape), answers)
        return variables["params"], optimizer.init(variables["params"])

    @jax.jit
    def step(params, opt_state, batch, key):
        def loss_fn(params):
            return train.loss_and_metrics(run(params, batch, key)[1], batch.answer[:, 1:])

        grads, metrics = jax.grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, metrics

    return train.Trainer(init, step), run


def compiled(trainer: train.Trainer, key: jax.Array, batch: addition.Batch):
    """``(state, compiled step, seconds to lower and compile it)``."""
    params, opt_state = trainer.init(key)
    start = time.perf_counter()
    step = trainer.step.lower(params, opt_state, batch, key).compile()
    return (params, opt_state), step, time.perf_counter() - start


def main(argv: list[str] | None = None) -> Path:
    parser = train.options(__doc__)
    parser.add_argument("--results", type=Path, default=common.RESULTS_DIR)
    args = parser.parse_args(argv)

    ours = train.make_model(args.hidden_size)
    flax_train, flax_run = flax_trainer(args.hidden_size, args.learning_rate)
    runs = {
        "rnn_jax": (train.make_trainer(ours, args.learning_rate), train.runner(ours)),
        "flax": (flax_train, flax_run),
    }
    key = jax.random.key(args.seed)
    rng = np.random.default_rng(args.seed)
    first = addition.batch(rng, args.batch_size)
    state, steps, compile_s, times = {}, {}, {}, {name: [] for name in runs}
    for name, (trainer, _) in runs.items():
        state[name], steps[name], compile_s[name] = compiled(trainer, key, first)
    for step in range(args.steps):
        batch = first if step == 0 else addition.batch(rng, args.batch_size)
        step_key = jax.random.fold_in(key, step)
        order = list(runs) if step % 2 == 0 else list(runs)[::-1]
        for name in order:
            start = time.perf_counter()
            out = jax.block_until_ready(steps[name](*state[name], batch, step_key))
            times[name].append(time.perf_counter() - start)
            state[name] = out[:2]
    test = addition.batch(np.random.default_rng(args.seed + 1), args.eval_size)
    records = []
    for name, (_, run) in runs.items():
        scores, _ = train.evaluate(run, state[name][0], test, jax.random.key(args.seed + 1))
        stats = common.Stats.of(times[name][1:] or times[name])
        print(
            f"{name:8s} compile {compile_s[name]:.2f} s, step {stats.median_s * 1e3:.1f} ms, "
            f"accuracy {scores['accuracy']:.3f}, decoded {scores['decoded']:.3f}"
        )
        records.append(
            common.record(
                cell="seq2seq_lstm",
                library=name,
                shape=common.Shape(
                    args.batch_size, addition.QUERY_LENGTH, addition.VOCAB, args.hidden_size
                ),
                dtype="float32",
                mode="forward_backward",
                stats=stats,
                compile_s=compile_s[name],
                steps=args.steps,
                new_examples=args.eval_size,
                **scores,
            )
        )
    path = common.write_results(
        "seq2seq_port",
        records,
        machine=common.machine_info(),
        quick=args.steps < 2000,
        directory=args.results,
    )
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
