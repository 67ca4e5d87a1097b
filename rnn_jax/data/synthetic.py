"""Generated tasks: the adding problem, copy memory, Mackey–Glass, toy translation.

The adding and copy-memory problems follow Hochreiter & Schmidhuber (1997) in
the form later papers use (Le et al. 2015; Arjovsky et al. 2016), each with
the score of the best memoryless answer as its baseline.
"""

from __future__ import annotations

import functools

import numpy as np

from rnn_jax.data.base import ArraySplit, Batch, DataError, GeneratedSplit, Task, check_int

TEST_SIZE = 1000
VAL_SIZE = 500


def _fixed(sample, *, data_seed: int, part: int, size: int, per_step: bool) -> ArraySplit:
    return ArraySplit(sample(np.random.default_rng([data_seed, part]), size), per_step)


def adding_sample(rng: np.random.Generator, n: int, length: int) -> Batch:
    """``n`` adding-problem sequences: inputs ``[n, T, 2]`` (value, marker), targets ``[n, 1]``.

    Values are uniform in [0, 1); one marker falls in the first half, one in
    the second; the target is the sum of the two marked values.
    """
    values = rng.uniform(size=(n, length))
    first = rng.integers(0, length // 2, n)
    second = rng.integers(length // 2, length, n)
    marks = np.zeros((n, length))
    marks[np.arange(n), first] = 1.0
    marks[np.arange(n), second] = 1.0
    inputs = np.stack([values, marks], axis=-1).astype(np.float32)
    targets = np.sum(values * marks, axis=1, keepdims=True).astype(np.float32)
    return Batch(inputs, targets, np.ones((n,), np.float32))


def adding(length: int = 100, data_seed: int = 0) -> Task:
    """The adding problem at sequence length ``length`` (T).

    Predicting 1 (the mean target) scores MSE 1/6 ≈ 0.167; a model has solved
    the task below 0.01. Training draws fresh sequences every step.

    Example:
        >>> task = rj.data.adding(length=50)
        >>> round(task.baselines["predict 1"]["mse"], 2)
        0.17
    """
    length = check_int("length", length, 2)
    sample = functools.partial(adding_sample, length=length)
    test = _fixed(sample, data_seed=data_seed, part=2, size=TEST_SIZE, per_step=False)
    predict_one = float(np.mean((test.data.targets - 1.0) ** 2))
    return Task(
        name="adding",
        kind="regression",
        loss="mse",
        metrics=("mse",),
        train=GeneratedSplit(sample, epoch_size=10_000, per_step=False),
        val=_fixed(sample, data_seed=data_seed, part=1, size=VAL_SIZE, per_step=False),
        test=test,
        input_size=2,
        output_size=1,
        baselines={"predict 1": {"mse": predict_one}},
        solved=("mse", "<", 0.01),
        options={"length": length, "data_seed": data_seed},
        description=f"adding problem, T={length}",
    )


def copy_sample(
    rng: np.random.Generator, n: int, length: int, symbols: int, memorize: int
) -> Batch:
    """Copy-memory sequences of ``memorize + length + memorize`` steps, as Bai et al. (2018).

    Inputs, one-hot over blank 0, symbols ``1..S`` and the delimiter ``S+1``:
    the ``memorize`` symbols, ``length - 1`` blanks, then the delimiter in each
    of the last ``memorize + 1`` steps. Targets: the blank, then the symbols
    again in the last ``memorize`` steps (the recall steps, the only targets
    that are not the blank). The mask weighs every step alike, so the loss is
    the mean over all ``length + 2 * memorize`` steps, as Bai et al. report it.
    """
    total = length + 2 * memorize
    sequence = rng.integers(1, symbols + 1, (n, memorize))
    tokens = np.zeros((n, total), np.int64)
    tokens[:, :memorize] = sequence
    tokens[:, memorize + length - 1 :] = symbols + 1
    targets = np.zeros((n, total), np.int32)
    targets[:, -memorize:] = sequence
    inputs = np.eye(symbols + 2, dtype=np.float32)[tokens]
    return Batch(inputs, targets, np.ones((n, total), np.float32))


def copy_memory(
    length: int = 100, symbols: int = 8, memorize: int = 10, data_seed: int = 0
) -> Task:
    """Copy memory as Bai et al. (2018): recall ``memorize`` symbols after ``length`` steps.

    The loss (cross-entropy) is the mean over all ``length + 2 * memorize``
    steps; ``nonblank_cross_entropy`` and ``nonblank_accuracy`` score the
    recall steps alone. A memoryless model predicts the blank everywhere but
    the recall steps, where it can do no better than a uniform guess over the
    ``symbols``: a loss of ``memorize * log(symbols) / (length + 2 * memorize)``
    (0.0204 at T = 1,000), recall cross-entropy ``log(symbols)`` (2.08 for 8)
    and recall accuracy ``1 / symbols``. Solved: recall accuracy above 0.99.

    Example:
        >>> task = rj.data.copy_memory(length=1000)
        >>> round(task.baselines["memoryless"]["cross_entropy"], 4)
        0.0204
    """
    length = check_int("length", length, 1)
    symbols = check_int("symbols", symbols, 2)
    memorize = check_int("memorize", memorize, 1)
    sample = functools.partial(copy_sample, length=length, symbols=symbols, memorize=memorize)
    test = _fixed(sample, data_seed=data_seed, part=2, size=TEST_SIZE, per_step=True)
    recall = test.data.targets > 0
    guess_one = float(np.mean(test.data.targets[recall] == 1))
    steps = length + 2 * memorize
    return Task(
        name="copy_memory",
        kind="tagging",
        loss="cross_entropy",
        metrics=(
            "cross_entropy",
            "nonblank_cross_entropy",
            "nonblank_accuracy",
            "sequence_accuracy",
        ),
        train=GeneratedSplit(sample, epoch_size=10_000, per_step=True),
        val=_fixed(sample, data_seed=data_seed, part=1, size=VAL_SIZE, per_step=True),
        test=test,
        input_size=symbols + 2,
        output_size=symbols + 1,
        baselines={
            "memoryless": {
                "cross_entropy": memorize * float(np.log(symbols)) / steps,
                "nonblank_cross_entropy": float(np.log(symbols)),
                "nonblank_accuracy": guess_one,
            }
        },
        solved=("nonblank_accuracy", ">", 0.99),
        options={
            "length": length,
            "symbols": symbols,
            "memorize": memorize,
            "data_seed": data_seed,
        },
        description=f"copy memory, {memorize} symbols over T={length}",
    )


PAD, BOS, EOS = 0, 1, 2
SPECIALS = 3


def translation_sample(
    rng: np.random.Generator, n: int, length: int, min_length: int, symbols: int, op: str
) -> Batch:
    """Sequences of symbol tokens and their reversal or sorting.

    Tokens: 0 padding, 1 begin, 2 end, 3.. symbols. Inputs are
    ``(source [n, length], decoder_inputs [n, length + 1])`` (begin, then the
    target shifted right); targets ``[n, length + 1]`` end with the end token.
    """
    lengths = rng.integers(min_length, length + 1, n)
    source = np.zeros((n, length), np.int32)
    targets = np.zeros((n, length + 1), np.int32)
    mask = np.zeros((n, length + 1), np.float32)
    for i, size in enumerate(lengths):
        seq = rng.integers(SPECIALS, SPECIALS + symbols, size)
        source[i, :size] = seq
        out = seq[::-1] if op == "reverse" else np.sort(seq)
        targets[i, :size] = out
        targets[i, size] = EOS
        mask[i, : size + 1] = 1.0
    decoder_inputs = np.concatenate([np.full((n, 1), BOS, np.int32), targets[:, :-1]], axis=1)
    return Batch((source, decoder_inputs), targets, mask, length=lengths.astype(np.int32))


def translation(
    op: str = "reverse",
    length: int = 12,
    min_length: int = 4,
    symbols: int = 10,
    data_seed: int = 0,
) -> Task:
    """A toy translation for seq2seq: reverse or sort a sequence of symbols.

    Baselines: copying the source unchanged (then the end token), and a
    uniform guess over the symbols.
    """
    if op not in ("reverse", "sort"):
        raise DataError(f"op must be 'reverse' or 'sort'; got {op!r}")
    length = check_int("length", length, 1)
    min_length = check_int("min_length", min_length, 1)
    symbols = check_int("symbols", symbols, 2)
    if min_length > length:
        raise DataError(f"min_length must be at most length={length}; got {min_length}")
    sample = functools.partial(
        translation_sample, length=length, min_length=min_length, symbols=symbols, op=op
    )
    test = _fixed(sample, data_seed=data_seed, part=2, size=TEST_SIZE, per_step=True)
    source, _ = test.data.inputs
    copied = np.concatenate([source, np.zeros((source.shape[0], 1), np.int32)], axis=1)
    copied[np.arange(source.shape[0]), test.data.length] = EOS
    valid = test.data.mask > 0
    right = (copied == test.data.targets) | ~valid
    vocab = SPECIALS + symbols
    return Task(
        name="translate",
        kind="seq2seq",
        loss="cross_entropy",
        metrics=("cross_entropy", "accuracy", "sequence_accuracy"),
        train=GeneratedSplit(sample, epoch_size=10_000, per_step=True),
        val=_fixed(sample, data_seed=data_seed, part=1, size=VAL_SIZE, per_step=True),
        test=test,
        vocab_size=vocab,
        target_vocab_size=vocab,
        output_size=vocab,
        baselines={
            "copy source": {
                "accuracy": float(np.mean(copied[valid] == test.data.targets[valid])),
                "sequence_accuracy": float(np.mean(np.all(right, axis=1))),
            },
            "uniform guess": {"cross_entropy": float(np.log(symbols + 1))},
        },
        solved=("sequence_accuracy", ">", 0.95),
        options={
            "op": op,
            "length": length,
            "min_length": min_length,
            "symbols": symbols,
            "data_seed": data_seed,
        },
        description=f"{op} sequences of {min_length}..{length} symbols",
    )


@functools.lru_cache(maxsize=8)
def mackey_glass_series(
    size: int,
    tau: float = 17.0,
    beta: float = 0.2,
    gamma: float = 0.1,
    n: float = 10.0,
    dt: float = 0.1,
    sample_every: int = 10,
    discard: int = 500,
    x0: float = 1.2,
) -> np.ndarray:
    """The Mackey–Glass series ``dx/dt = beta x(t-tau) / (1 + x(t-tau)^n) - gamma x``.

    Integrated with fourth-order Runge–Kutta at step ``dt`` (the delayed term
    held at its grid value), sampled every ``sample_every`` steps, the first
    ``discard`` samples dropped. Returns ``[size]`` float64.
    """
    delay = int(round(tau / dt))
    steps = (size + discard) * sample_every
    x = np.empty(steps + delay + 1)
    x[: delay + 1] = x0
    rate = lambda xt, lagged: beta * lagged / (1.0 + lagged**n) - gamma * xt
    for i in range(delay, delay + steps):
        lagged = x[i - delay]
        lagged_next = x[i - delay + 1]
        lagged_mid = 0.5 * (lagged + lagged_next)
        k1 = rate(x[i], lagged)
        k2 = rate(x[i] + 0.5 * dt * k1, lagged_mid)
        k3 = rate(x[i] + 0.5 * dt * k2, lagged_mid)
        k4 = rate(x[i] + dt * k3, lagged_next)
        x[i + 1] = x[i] + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
    series = x[delay + 1 :: sample_every]
    return series[discard : discard + size]


def forecast_task(
    series: np.ndarray,
    *,
    name: str,
    length: int,
    horizon: int,
    stride: int,
    fractions: tuple[float, float] = (0.15, 0.15),
    options: dict,
    description: str,
) -> Task:
    """Forecasting windows from one series, split in time (train, val, test).

    Each window feeds ``length`` values and targets the value ``horizon``
    steps after each of them; the series is standardised with the training
    part's mean and deviation. Baselines: persistence (the last value seen)
    and the training mean.
    """
    length = check_int("length", length, 1)
    horizon = check_int("horizon", horizon, 1)
    total = series.size
    n_test = int(round(total * fractions[1]))
    n_val = int(round(total * fractions[0]))
    parts = [
        series[: total - n_val - n_test],
        series[total - n_val - n_test : total - n_test],
        series[total - n_test :],
    ]
    need = length + horizon
    if min(p.size for p in parts) < need:
        raise DataError(
            f"{name}: {total} values leave {min(p.size for p in parts)} in the smallest split; "
            f"length {length} + horizon {horizon} needs {need}"
        )
    mean, std = float(parts[0].mean()), float(parts[0].std() or 1.0)

    def windows(part: np.ndarray, step: int) -> Batch:
        z = ((part - mean) / std).astype(np.float32)
        starts = np.arange(0, z.size - need + 1, step)
        idx = starts[:, None] + np.arange(length)[None, :]
        return Batch(z[idx][..., None], z[idx + horizon][..., None], np.ones(idx.shape, np.float32))

    test = windows(parts[2], 1)
    persistence = float(np.mean((test.inputs - test.targets) ** 2))
    return Task(
        name=name,
        kind="forecasting",
        loss="mse",
        metrics=("mse",),
        train=ArraySplit(windows(parts[0], stride), per_step=True),
        val=ArraySplit(windows(parts[1], 1), per_step=True),
        test=ArraySplit(test, per_step=True),
        input_size=1,
        output_size=1,
        baselines={
            "persistence": {"mse": persistence},
            "training mean": {"mse": float(np.mean(test.targets**2))},
        },
        options=options,
        description=description,
    )


def mackey_glass(length: int = 100, horizon: int = 1, size: int = 4000, tau: float = 17.0) -> Task:
    """Forecast the chaotic Mackey–Glass series (tau = 17) ``horizon`` samples ahead.

    Samples are one time unit apart; splits are 70/15/15 in time.
    """
    size = check_int("size", size, 10)
    series = mackey_glass_series(size, tau=float(tau))
    return forecast_task(
        series,
        name="mackey_glass",
        length=length,
        horizon=horizon,
        stride=max(1, length // 4),
        options={"length": length, "horizon": horizon, "size": size, "tau": tau},
        description=f"Mackey-Glass (tau={tau}), {horizon}-step forecast, T={length}",
    )
