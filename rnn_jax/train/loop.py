"""The fit loop: jit-compiled updates, evaluation, early stopping, checkpoints, resumption.

Everything random derives from ``seed`` and the step number (the batch of
step ``s``, the dropout key ``fold_in(key, s)``), and checkpoints hold the
rest of the state (params, optimizer state, the TBPTT carry, the
early-stopping record), so a run resumed from step ``s`` computes exactly
what the uninterrupted run computes.

Training is data-parallel on a `jax.sharding.Mesh` (`rnn_jax.train.sharding`):
every batch is split over the mesh's ``data`` axis, parameters and optimizer
state are replicated (or split over ``model``), and one jitted step runs on
all devices. A mesh of one device is the same code path; a run of several
processes (``jax.distributed``) too, each process computing the whole batch
of a step and keeping its own devices' shards.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import numpy as np
import optax
from jax.sharding import Mesh

from rnn_jax.train import sharding
from rnn_jax.train.checkpoint import Checkpointer, CheckpointError
from rnn_jax.train.losses import finish
from rnn_jax.train.objective import Objective
from rnn_jax.train.progress import Progress


class TrainingError(RuntimeError):
    """Training cannot go on (the loss is no longer finite); ``history`` holds the run so far."""

    def __init__(self, message: str, *, step: int = 0, history: dict[str, Any] | None = None):
        super().__init__(message)
        self.step = step
        self.history = history or {"train": [], "val": []}


@dataclass(frozen=True)
class EarlyStopping:
    """Stop when validation ``metric`` has not improved for ``patience`` evaluations.

    ``mode`` ``"min"`` or ``"max"``; an improvement must beat the best by
    ``min_delta``. ``restore_best`` returns the best params seen.
    """

    patience: int
    metric: str = "loss"
    mode: str = "min"
    min_delta: float = 0.0
    restore_best: bool = True

    def __post_init__(self):
        if self.patience < 1:
            raise ValueError(f"patience must be >= 1; got {self.patience}")
        if self.mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max'; got {self.mode!r}")

    def improved(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        if self.mode == "min":
            return value < best - self.min_delta
        return value > best + self.min_delta


class FitResult(NamedTuple):
    params: Any  # the best params when early stopping restores them, else the last
    opt_state: Any
    step: int  # updates done
    history: dict[str, Any]  # {"train": [...], "val": [...]}
    stopped_early: bool
    best_step: int | None
    seconds: float  # training wall time, this process and the resumed ones
    carry: Any = None


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


def _compare_configs(saved: Mapping[str, Any], current: Mapping[str, Any], where: str) -> None:
    keys = sorted(set(saved) | set(current))
    differ = [k for k in keys if saved.get(k) != current.get(k)]
    if differ:
        shown = ", ".join(
            f"{k}: {saved.get(k)!r} there, {current.get(k)!r} here" for k in differ[:4]
        )
        raise CheckpointError(
            f"the checkpoint in {where} was written by a different run ({shown}); resume with the "
            "same settings or choose another checkpoint directory"
        )


def fit(
    objective: Objective,
    params: Any,
    optimizer: optax.GradientTransformation,
    train: Callable[[int], Any],
    *,
    steps: int,
    seed: int = 0,
    batch_size: int = 1,
    val: Callable[[], Iterable[Any]] | None = None,
    eval_every: int | None = None,
    early_stopping: EarlyStopping | None = None,
    checkpointer: Checkpointer | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    config: Mapping[str, Any] | None = None,
    meta: Mapping[str, Any] | None = None,
    learning_rate: Callable[[int], Any] | None = None,
    log_every: int = 25,
    progress: bool | None = None,
    description: str = "",
    mesh: Mesh | None = None,
) -> FitResult:
    """Trains ``params`` for ``steps`` updates of ``optimizer`` on ``objective``.

    Args:
        objective: from `supervised` (loss, metrics, TBPTT carry).
        params: initial parameters.
        optimizer: an optax transformation (see `make_optimizer`).
        train: ``train(step) -> Batch``, deterministic in ``step``.
        steps: total updates (a resumed run counts those already done).
        seed: the run's RNG seed (dropout keys are ``fold_in(key(seed), step)``).
        batch_size: sequences per batch, for the throughput shown.
        val: ``val() -> batches``, evaluated every ``eval_every`` steps and at the end.
        early_stopping: an `EarlyStopping` on the validation metrics.
        checkpointer: a `Checkpointer`; state is saved every
            ``checkpoint_every`` steps and at the end.
        resume: continue from the checkpointer's latest step; its ``config``
            must equal ``config``. Without ``resume`` an existing checkpoint is
            an error, never silently overwritten.
        config: the run's settings (JSON), stored and checked on resume.
        meta: more JSON to store with each checkpoint (sizes, alphabet).
        learning_rate: the schedule, to record the rate in the history.
        log_every: steps between history records (and loss checks).
        progress: show a progress bar (None: when stderr is a terminal).
        description: the progress bar's label.
        mesh: the devices, a mesh with axes ``data`` and ``model``
            (`rnn_jax.train.sharding.make_mesh`); None: every device on
            ``data``. Each batch's sequences must divide by the ``data`` size.

    Returns:
        a `FitResult`.

    Example:
        >>> task = rj.data.adding(length=20)
        >>> model = rj.models.classifier(rj.gru(16), 1, input_size=2)
        >>> optimizer, _ = rj.train.make_optimizer("adam", 1e-2)
        >>> result = rj.train.fit(rj.train.supervised(model.apply, "mse"),
        ...                       model.init(jax.random.key(0)), optimizer,
        ...                       lambda s: task.train.batch(s, 32, seed=0), steps=50)
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0; got {steps}")
    if early_stopping is not None and val is None:
        raise ValueError("early_stopping needs validation data (val)")
    config = dict(config or {})
    eval_every = eval_every or max(1, steps // 10)
    mesh = sharding.make_mesh() if mesh is None else mesh
    rng = np.asarray(jax.random.key_data(jax.random.key(seed)))
    param_shardings = sharding.state_shardings(mesh, params)
    params = sharding.put(params, param_shardings)
    opt_state = optimizer.init(params)
    opt_shardings = sharding.state_shardings(mesh, opt_state)
    opt_state = sharding.put(opt_state, opt_shardings)
    carry = objective.init_carry(params, train(0)) if objective.stateful else None
    carry_shardings = sharding.carry_shardings(mesh, carry)
    carry = sharding.put(carry, carry_shardings)
    keep_best = early_stopping is not None and early_stopping.restore_best
    best_params = params if keep_best else None
    history: dict[str, Any] = {"train": [], "val": []}
    record = {"best": None, "best_step": None, "bad_evals": 0, "stopped_early": False}
    start = 0
    done_seconds = 0.0

    def state_tree():
        return {
            "opt_state": opt_state,
            "step": np.asarray(step, np.int64),
            "rng": rng,
            "carry": carry,
            "best_params": best_params,
        }

    step = 0
    if checkpointer is not None:
        latest = checkpointer.latest_step()
        if resume:
            if latest is None:
                raise CheckpointError(f"no checkpoint to resume in {checkpointer.directory}")
            saved = checkpointer.read_meta(latest)
            _compare_configs(saved["config"], config, str(checkpointer.directory))
            params = checkpointer.restore("params", params, latest)
            state = checkpointer.restore("state", state_tree(), latest)
            opt_state, carry = state["opt_state"], state["carry"]
            best_params = state["best_params"]
            rng = np.asarray(state["rng"])
            start = int(state["step"])
            history = saved.get("history", history)
            record = saved.get("early_stopping", record)
            done_seconds = float(saved.get("seconds", 0.0))
        elif latest is not None:
            raise CheckpointError(
                f"{checkpointer.directory} already holds a checkpoint (step {latest}); resume it "
                "or choose another checkpoint directory"
            )

    def train_step(params, opt_state, batch, step, carry, rng):
        key = jax.random.fold_in(jax.random.wrap_key_data(rng), step)
        loss_and_grad = jax.value_and_grad(objective.loss, has_aux=True)
        (loss, carry), grads = loss_and_grad(params, batch, key, carry)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, carry, loss

    step_fn = jax.jit(
        train_step,
        out_shardings=(
            param_shardings,
            opt_shardings,
            carry_shardings,
            sharding.replicated(mesh),
        ),
    )
    evaluate_fn = jax.jit(objective.evaluate)
    bar = Progress(
        steps, initial=start, batch_size=batch_size, enabled=progress, description=description
    )
    started = time.perf_counter()
    pending: list[jax.Array] = []
    stop = record["stopped_early"]
    last_val = history["val"][-1]["loss"] if history["val"] else None

    def save(finished: bool):
        checkpointer.save(
            step,
            params,
            state_tree(),
            {
                "config": config,
                "data_position": step,  # the step whose batch comes next (batches follow steps)
                "history": history,
                "early_stopping": record,
                "finished": finished,
                "mesh": sharding.describe(mesh),
                "seconds": done_seconds + time.perf_counter() - started,
                **(meta or {}),
            },
        )

    step = start
    try:
        while step < steps and not stop:
            batch = sharding.place_batch(mesh, train(step))
            params, opt_state, carry, loss = step_fn(
                params, opt_state, batch, np.int32(step), carry, rng
            )
            pending.append(loss)
            step += 1
            last = step == steps
            if val is not None and (step % eval_every == 0 or last):
                metrics = evaluate(objective, params, val(), evaluate_fn=evaluate_fn, mesh=mesh)
                history["val"].append({"step": step, **metrics})
                last_val = metrics["loss"]
                if early_stopping is not None:
                    value = metrics[early_stopping.metric]
                    if early_stopping.improved(value, record["best"]):
                        record.update(best=value, best_step=step, bad_evals=0)
                        if keep_best:
                            best_params = params
                    else:
                        record["bad_evals"] += 1
                        stop = record["bad_evals"] >= early_stopping.patience
                        record["stopped_early"] = stop
            checkpoint_now = checkpointer is not None and (
                last or stop or bool(checkpoint_every and step % checkpoint_every == 0)
            )
            # Checkpoints flush the losses too, so a resumed history matches an uninterrupted one.
            if step % log_every == 0 or last or stop or checkpoint_now:
                mean_loss = float(np.mean(jax.device_get(pending)))
                pending = []
                if not math.isfinite(mean_loss):
                    raise TrainingError(
                        f"the training loss became {mean_loss} by step {step}; lower the learning "
                        "rate or clip gradients",
                        step=step,
                        history=history,
                    )
                entry = {
                    "step": step,
                    "loss": mean_loss,
                    "seconds": round(done_seconds + time.perf_counter() - started, 4),
                }
                if learning_rate is not None:
                    entry["learning_rate"] = float(learning_rate(step - 1))
                history["train"].append(entry)
                bar.update(step, mean_loss, last_val)
            if checkpoint_now:
                save(finished=last or stop)
    finally:
        bar.close()
    seconds = done_seconds + time.perf_counter() - started
    return FitResult(
        params=best_params if keep_best and record["best_step"] is not None else params,
        opt_state=opt_state,
        step=step,
        history=history,
        stopped_early=bool(record["stopped_early"]),
        best_step=record["best_step"],
        seconds=seconds,
        carry=carry,
    )
