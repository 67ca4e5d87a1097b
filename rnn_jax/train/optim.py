"""Optimizers and learning-rate schedules on optax, with gradient clipping by global norm."""

from __future__ import annotations

import optax

OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")
SCHEDULES = ("constant", "cosine", "linear", "exponential")


def schedule(name: str, learning_rate: float, steps: int, *, warmup: int = 0) -> optax.Schedule:
    """A learning-rate schedule over ``steps`` updates, after ``warmup`` linear ones.

    ``"constant"``; ``"cosine"`` (to 1% of the peak); ``"linear"`` (to 0);
    ``"exponential"`` (to 1% of the peak).
    """
    if name not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}; got {name!r}")
    if learning_rate <= 0:
        raise ValueError(f"learning rate must be positive; got {learning_rate}")
    if warmup < 0 or (warmup and warmup >= steps):
        raise ValueError(f"warmup must lie in [0, steps={steps}); got {warmup}")
    decay_steps = max(steps - warmup, 1)
    if name == "constant":
        main = optax.constant_schedule(learning_rate)
    elif name == "cosine":
        main = optax.cosine_decay_schedule(learning_rate, decay_steps, alpha=0.01)
    elif name == "linear":
        main = optax.linear_schedule(learning_rate, 0.0, decay_steps)
    else:
        main = optax.exponential_decay(learning_rate, decay_steps, decay_rate=0.01)
    if not warmup:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, learning_rate, warmup), main], [warmup])


def make_optimizer(
    name: str = "adam",
    learning_rate: float = 1e-3,
    *,
    steps: int = 1,
    schedule_name: str = "constant",
    warmup: int = 0,
    clip_norm: float | None = 1.0,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """``(optimizer, learning_rate_schedule)``: clipping by global norm (on by default), then
    the update rule.

    ``name``: ``"adam"``, ``"adamw"`` (decoupled ``weight_decay``),
    ``"rmsprop"`` or ``"sgd"`` (with ``momentum``; other rules add ``weight_decay``
    to the gradient). ``clip_norm`` None or 0
    turns clipping off.

    Example:
        >>> optimizer, lr = rj.train.make_optimizer("adam", 1e-3, steps=1000,
        ...                                         schedule_name="cosine")
        >>> float(lr(1000)) < 1e-4
        True
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}; got {name!r}")
    if clip_norm is not None and clip_norm < 0:
        raise ValueError(f"clip norm must be positive (or 0 for none); got {clip_norm}")
    lr = schedule(schedule_name, learning_rate, steps, warmup=warmup)
    if name == "adam":
        rule = optax.adam(lr)
    elif name == "adamw":
        rule = optax.adamw(lr, weight_decay=weight_decay)
    elif name == "rmsprop":
        rule = optax.rmsprop(lr)
    else:
        rule = optax.sgd(lr, momentum=momentum or None)
    parts = [optax.clip_by_global_norm(clip_norm)] if clip_norm else []
    if weight_decay and name != "adamw":
        parts.append(optax.add_decayed_weights(weight_decay))
    return optax.chain(*parts, rule), lr
