"""Masked losses and metrics.

Each returns ``(total, weight)``: the masked sum and the sum of the mask, so a
batch's mean is ``total / weight`` and an evaluation over many batches sums
both before dividing (exact, whatever the batch sizes). Predictions are
``[B, ...]`` or ``[T, B, ...]`` with a ``mask`` of the same leading shape as
the targets.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

Sums = tuple[jax.Array, jax.Array]


def _masked(values: jax.Array, mask: jax.Array) -> Sums:
    mask = jnp.asarray(mask, values.dtype)
    return jnp.sum(values * mask), jnp.sum(mask)


def mse(predictions: jax.Array, targets: jax.Array, mask: jax.Array) -> Sums:
    """Squared error, averaged over features when predictions have one more axis than mask."""
    error = jnp.square(predictions - targets)
    if error.ndim > jnp.ndim(mask):
        error = jnp.mean(error, axis=-1)
    return _masked(error, mask)


def cross_entropy(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> Sums:
    """Softmax cross-entropy (nats) of integer ``labels`` under ``logits [..., classes]``."""
    losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
    return _masked(losses, mask)


def _tokens(predictions: jax.Array, labels: jax.Array) -> jax.Array:
    """Predicted classes: argmax of logits, or the predictions themselves when they are ids."""
    if predictions.ndim == labels.ndim + 1:
        return jnp.argmax(predictions, axis=-1)
    return predictions


def accuracy(predictions: jax.Array, labels: jax.Array, mask: jax.Array) -> Sums:
    """Fraction of masked positions whose class (argmax of logits, or given ids) is right."""
    right = (_tokens(predictions, labels) == labels).astype(jnp.float32)
    return _masked(right, mask)


def sequence_accuracy(predictions: jax.Array, labels: jax.Array, mask: jax.Array) -> Sums:
    """Fraction of sequences right at every masked step (time is axis 0 of ``[T, B]`` labels)."""
    right = (_tokens(predictions, labels) == labels) | (jnp.asarray(mask) == 0)
    if labels.ndim < 2:
        return _masked(right.astype(jnp.float32), mask)
    whole = jnp.all(right, axis=0).astype(jnp.float32)
    return _masked(whole, jnp.any(jnp.asarray(mask) > 0, axis=0))


def bits_per_char(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> Sums:
    """Cross-entropy in bits (per character, for a character model)."""
    total, weight = cross_entropy(logits, labels, mask)
    return total / math.log(2.0), weight


def nonblank(metric):
    """``metric`` over the positions whose label is not class 0, the blank (the recall steps
    of copy memory, where every other target is the blank)."""

    def restricted(predictions: jax.Array, labels: jax.Array, mask: jax.Array) -> Sums:
        return metric(predictions, labels, jnp.asarray(mask) * (labels != 0))

    return restricted


LOSSES = {"mse": mse, "cross_entropy": cross_entropy}
METRICS = {
    "mse": mse,
    "cross_entropy": cross_entropy,
    "bits_per_char": bits_per_char,
    "accuracy": accuracy,
    "sequence_accuracy": sequence_accuracy,
    "nonblank_cross_entropy": nonblank(cross_entropy),
    "nonblank_accuracy": nonblank(accuracy),
}
# The metrics that score the model's outputs (logits or values), never decoded ids.
ON_OUTPUTS = frozenset({"mse", "cross_entropy", "bits_per_char", "nonblank_cross_entropy"})


def finish(sums: dict[str, Sums]) -> dict[str, float]:
    """Means from summed ``(total, weight)`` pairs."""
    return {
        name: float(total) / max(float(weight), 1e-12) for name, (total, weight) in sums.items()
    }
