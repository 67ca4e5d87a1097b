"""Tasks on data that installed packages ship: scikit-learn's digits, statsmodels' sunspots."""

from __future__ import annotations

import numpy as np

from rnn_jax._extras import require
from rnn_jax.data.base import ArraySplit, Batch, DataError, Task, split_counts
from rnn_jax.data.synthetic import forecast_task


def digits(pixels_per_step: int = 1, data_seed: int = 0) -> Task:
    """Sequential digits: scikit-learn's bundled 8×8 digits, fed pixel by pixel.

    1,797 images scaled to [0, 1], read in row order ``pixels_per_step`` at a
    time (1: T = 64 steps of one pixel; 8: T = 8 rows), classified into 10
    digits from the final state. Splits 70/10/20, stratified by nothing but a
    fixed shuffle (``data_seed``). Baselines: the most frequent training class,
    and chance.
    """
    load_digits = require("sklearn.datasets", "the digits task").load_digits
    if pixels_per_step not in (1, 2, 4, 8, 16, 32, 64):
        raise DataError(f"pixels_per_step must divide 64; got {pixels_per_step!r}")
    bunch = load_digits()
    images = (bunch.data / 16.0).astype(np.float32)
    inputs = images.reshape(len(images), 64 // pixels_per_step, pixels_per_step)
    labels = bunch.target.astype(np.int32)
    order = np.random.default_rng(data_seed).permutation(len(labels))
    n_train, n_val, _ = split_counts(len(labels), 0.1, 0.2)
    parts = np.split(order, [n_train, n_train + n_val])
    split = lambda idx: ArraySplit(
        Batch(inputs[idx], labels[idx], np.ones(len(idx), np.float32)), per_step=False
    )
    train, val, test = (split(idx) for idx in parts)
    majority = np.bincount(labels[parts[0]]).argmax()
    return Task(
        name="digits",
        kind="classification",
        loss="cross_entropy",
        metrics=("cross_entropy", "accuracy"),
        train=train,
        val=val,
        test=test,
        input_size=pixels_per_step,
        output_size=10,
        baselines={
            "majority class": {"accuracy": float(np.mean(labels[parts[2]] == majority))},
            "chance": {"accuracy": 0.1, "cross_entropy": float(np.log(10))},
        },
        solved=("accuracy", ">", 0.9),
        options={"pixels_per_step": pixels_per_step, "data_seed": data_seed},
        description=f"sequential 8x8 digits, {pixels_per_step} pixel(s) per step",
    )


def sunspot_series() -> np.ndarray:
    """Yearly sunspot numbers 1700–2008 (309 values), as statsmodels ships them."""
    dataset = require("statsmodels.datasets", "the sunspots task").sunspots
    return dataset.load_pandas().data["SUNACTIVITY"].to_numpy(np.float64)


def sunspots(length: int = 20, horizon: int = 1) -> Task:
    """Forecast yearly sunspot activity ``horizon`` years ahead from ``length`` years.

    The series comes with statsmodels (nothing is downloaded); splits are
    70/15/15 in time.
    """
    return forecast_task(
        sunspot_series(),
        name="sunspots",
        length=length,
        horizon=horizon,
        stride=1,
        options={"length": length, "horizon": horizon},
        description=f"yearly sunspots, {horizon}-year forecast, T={length}",
    )
