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

`fit` is a `TrainState` (`rnn_jax.train.state`), one jitted update
(`rnn_jax.train.step`) and the hooks that follow each update
(`rnn_jax.train.hooks`: evaluation and early stopping, the loss history and
progress bar, checkpoints); `rnn_jax.train.resume` decides where it begins.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import optax
from jax.sharding import Mesh

from rnn_jax._validate import non_negative_int
from rnn_jax.train import sharding
from rnn_jax.train.checkpoint import Checkpointer
from rnn_jax.train.early_stopping import EarlyStopping
from rnn_jax.train.evaluation import evaluate
from rnn_jax.train.hooks import Checkpoints, Evaluation, LossLog, Run, TrainingError
from rnn_jax.train.objective import Objective
from rnn_jax.train.progress import Progress
from rnn_jax.train.resume import begin
from rnn_jax.train.state import Placement, initial_state
from rnn_jax.train.step import Step, make_step

__all__ = ["EarlyStopping", "FitResult", "TrainingError", "evaluate", "fit"]


class FitResult(NamedTuple):
    params: Any  # the best params when early stopping restores them, else the last
    opt_state: Any
    step: int  # updates done
    history: dict[str, Any]  # {"train": [...], "val": [...]}
    stopped_early: bool
    best_step: int | None
    seconds: float  # training wall time, this process and the resumed ones
    carry: Any = None


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
        resume: continue from the checkpointer's newest intact step (a damaged
            newer one is reported in a one-line `CheckpointWarning` and set
            aside as ``STEP.damaged``); its ``config`` must equal ``config``.
            Without ``resume`` an existing checkpoint is an error, never
            silently overwritten.
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
    non_negative_int("steps", steps)
    if early_stopping is not None and val is None:
        raise ValueError("early_stopping needs validation data (val)")
    mesh = sharding.make_mesh() if mesh is None else mesh
    keep_best = early_stopping is not None and early_stopping.restore_best
    state = initial_state(
        objective, params, optimizer, lambda: train(0), seed=seed, keep_best=keep_best
    )
    placement = Placement.of(mesh, state)
    run = Run(placement.place(state), steps)
    config = dict(config or {})
    if checkpointer is not None:
        run = begin(checkpointer, run, resume=resume, config=config)
    bar = Progress(
        steps,
        initial=run.state.step,
        batch_size=batch_size,
        enabled=progress,
        description=description,
    )
    log = LossLog(log_every, learning_rate, bar)
    hooks = [
        Evaluation(objective, val, eval_every or max(1, steps // 10), mesh, early_stopping),
        log,
    ]
    if checkpointer is not None:
        hooks.append(
            Checkpoints(checkpointer, checkpoint_every, config, meta or {}, mesh, log.flush)
        )
    try:
        train_steps(run, make_step(objective, optimizer, placement), train, placement, hooks)
    finally:
        bar.close()
    return fit_result(run, keep_best)


def train_steps(
    run: Run,
    step: Step,
    train: Callable[[int], Any],
    placement: Placement,
    hooks: Sequence[Callable[[Run], None]],
) -> None:
    """Updates ``run`` until its last step or an early stop, calling ``hooks`` after each update."""
    while run.state.step < run.steps and not run.stopped:
        run.state, loss = step(run.state, placement.batch(train(run.state.step)))
        run.losses.append(loss)
        for hook in hooks:
            hook(run)


def fit_result(run: Run, keep_best: bool) -> FitResult:
    """What `fit` returns of a finished ``run`` (the best params when early stopping kept them)."""
    best = keep_best and run.stopping.best_step is not None
    return FitResult(
        params=run.state.best_params if best else run.state.params,
        opt_state=run.state.opt_state,
        step=run.state.step,
        history=run.history,
        stopped_early=run.stopping.stopped_early,
        best_step=run.stopping.best_step,
        seconds=run.seconds(),
        carry=run.state.carry,
    )
