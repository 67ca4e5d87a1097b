"""Metrics of params over a whole split: masked sums over every batch, divided at the end."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import jax
from jax.sharding import Mesh

from rnn_jax.train import sharding
from rnn_jax.train.losses import finish
from rnn_jax.train.objective import Objective


def evaluate(
    objective: Objective,
    params: Any,
    batches: Iterable[Any],
    *,
    evaluate_fn: Callable | None = None,
    mesh: Mesh | None = None,
) -> dict[str, float]:
    """Metrics over all ``batches`` (summed, then divided): ``{"loss": ..., metric: ...}``.

    A stateful objective carries its state from batch to batch, as in training.
    With a ``mesh``, each batch is split over its ``data`` axis (replicated
    where its sequences do not divide by it).

    Example:
        >>> task = rj.data.adding(length=10)
        >>> model = rj.models.classifier(rj.gru(8), 1, input_size=2)
        >>> objective = rj.train.supervised(model.apply, "mse", ["mse"])
        >>> metrics = rj.train.evaluate(objective, model.init(jax.random.key(0)),
        ...                             task.val.batches(100))
        >>> sorted(metrics)
        ['loss', 'mse']
    """
    evaluate_fn = evaluate_fn or jax.jit(objective.evaluate)
    totals: dict[str, list] = {}
    carry = None
    for batch in batches:
        if mesh is not None:
            batch = sharding.place_batch(mesh, batch, whole_if_uneven=True)
        if objective.stateful and carry is None:
            carry = objective.init_carry(params, batch)
            if mesh is not None:
                carry = sharding.put(carry, sharding.carry_shardings(mesh, carry))
        sums, carry = evaluate_fn(params, batch, carry)
        for name, (total, weight) in sums.items():
            if name in totals:
                totals[name][0] = totals[name][0] + total
                totals[name][1] = totals[name][1] + weight
            else:
                totals[name] = [total, weight]
    if not totals:
        raise ValueError("evaluate got no batches")
    return finish({name: tuple(jax.device_get(pair)) for name, pair in totals.items()})
