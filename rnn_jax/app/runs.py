"""One training run from a `RunConfig`: train, test, and the record of what happened.

`run` trains the model the config describes on its task, reports test
metrics beside the task's baselines and, when asked, writes
``results.json`` and ``history.png``; `diverged` is the record of a run whose
loss stopped being finite.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import jax
from jax.sharding import Mesh

from rnn_jax.app.build import make_model, make_objective, make_task
from rnn_jax.app.config import DEFAULT_STEPS, ConfigError, RunConfig
from rnn_jax.app.plots import check_plotting, plot_history
from rnn_jax.app.records import results_document, write_json
from rnn_jax.data import Task, is_solved
from rnn_jax.models import Model
from rnn_jax.summary import count_params
from rnn_jax.train import EarlyStopping, FitResult, TrainingError, distributed, evaluate, fit
from rnn_jax.train.checkpoint import Checkpointer
from rnn_jax.train.objective import Objective
from rnn_jax.train.optim import make_optimizer
from rnn_jax.train.sharding import DATA, describe, make_mesh


def total_steps(config: RunConfig, task: Task) -> int:
    """The updates ``config`` asks for: ``steps``, else ``epochs`` of the task's training data."""
    if config.steps is not None:
        return config.steps
    if config.epochs is not None:
        return max(1, math.ceil(config.epochs * task.train.steps_per_epoch(config.batch)))
    return DEFAULT_STEPS


def run_mesh(config: RunConfig) -> Mesh:
    """The devices ``config.mesh`` asks for, after joining the other processes of a
    distributed run; a `ConfigError` when they do not fit the devices or the batch."""
    try:
        distributed.start()
        mesh = make_mesh(config.mesh)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if config.batch % mesh.shape[DATA]:
        raise ConfigError(
            f"batch must be a multiple of the {mesh.shape[DATA]} devices on the mesh's data axis "
            f"({describe(mesh)}); got {config.batch}"
        )
    return mesh


def evaluation_batch_size(config: RunConfig, task: Task) -> int:
    """Sequences per evaluation batch: at least 256, but a stateful task's training batch."""
    return config.batch if task.stateful else max(config.batch, 256)


def solved_when(task: Task) -> str | None:
    """The task's bar in words (``"mse < 0.01"``), or None."""
    return None if task.solved is None else " ".join(map(str, task.solved))


def loss_baselines(task: Task) -> dict[str, float]:
    """The task's baselines on its loss, by name."""
    loss = task.info()["loss"]
    return {name: values[loss] for name, values in task.baselines.items() if loss in values}


def run(
    config: RunConfig,
    *,
    task: Task | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    out_dir: str | Path | None = None,
    progress: bool | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Trains one run and returns its results (JSON): test metrics, baselines, history, timing.

    ``task`` is ``make_task(config)`` unless given (built once, shared by the
    runs of a comparison). With ``checkpoint_dir``, checkpoints as `rj.train.fit`
    does (never over another run's; ``resume`` continues one exactly); with
    ``out_dir``, writes ``results.json`` and ``history.png`` there once
    training is done. ``command`` is recorded in ``results.json``.

    Training is data-parallel over ``config.mesh``; a run of several
    processes (`rnn_jax.train.distributed`: ``JAX_NUM_PROCESSES`` and friends)
    joins them first, and only process 0 writes ``out_dir``.

    Example:
        >>> config = rj.app.RunConfig(task="adding", task_options={"length": 10}, cell="gru",
        ...                           hidden=8, batch=16, steps=20)
        >>> results = rj.app.run(config, progress=False)
        >>> sorted(results["test"]), results["steps"]
        (['loss', 'mse'], 20)
    """
    config.check()
    if out_dir is not None:
        check_plotting()
    mesh = run_mesh(config)
    task = task or make_task(config)
    info = task.info()
    model = make_model(config, info)
    objective = make_objective(model, info)
    checkpointer = Checkpointer(checkpoint_dir) if checkpoint_dir is not None else None
    result = fit_run(
        config,
        task,
        model,
        objective,
        mesh,
        checkpointer=checkpointer,
        checkpoint_every=checkpoint_every,
        resume=resume,
        progress=progress,
    )
    started = time.perf_counter()
    test_batches = task.test.batches(evaluation_batch_size(config, task))
    test = evaluate(objective, result.params, test_batches, mesh=mesh)
    results = run_results(config, task, result, test, time.perf_counter() - started)
    if out_dir is not None and jax.process_index() == 0:
        write_run(Path(out_dir), results, task, command)
    return results


def fit_run(
    config: RunConfig,
    task: Task,
    model: Model,
    objective: Objective,
    mesh: Mesh,
    *,
    checkpointer: Checkpointer | None,
    checkpoint_every: int | None,
    resume: bool,
    progress: bool | None,
) -> FitResult:
    """`rj.train.fit` as ``config`` sets it up: the optimizer and its schedule, the batches,
    validation, early stopping, and the config and task sizes in every checkpoint."""
    steps = total_steps(config, task)
    optimizer, learning_rate = make_optimizer(
        config.optimizer,
        config.lr,
        steps=steps,
        schedule_name=config.schedule,
        warmup=config.warmup,
        clip_norm=config.clip or None,
        weight_decay=config.weight_decay,
    )
    eval_batch = evaluation_batch_size(config, task)
    return fit(
        objective,
        model.init(jax.random.key(config.seed)),
        optimizer,
        lambda step: task.train.batch(step, config.batch, config.seed),
        steps=steps,
        seed=config.seed,
        batch_size=config.batch,
        val=lambda: task.val.batches(eval_batch),
        eval_every=config.eval_every or max(1, steps // 20),
        early_stopping=EarlyStopping(config.patience) if config.patience else None,
        checkpointer=checkpointer,
        checkpoint_every=checkpoint_every,
        resume=resume,
        config=config.to_dict(),
        meta={"task_info": task.info()},
        learning_rate=learning_rate,
        progress=progress,
        description=f"{config.cell} on {task.name}",
        mesh=mesh,
    )


def run_results(
    config: RunConfig, task: Task, result: FitResult, test: dict[str, float], test_seconds: float
) -> dict[str, Any]:
    """The results of a trained run (JSON): test metrics beside the baselines, the history."""
    return {
        "task": task.name,
        "description": task.description,
        "config": config.to_dict(),
        "cell": config.cell,
        "params": count_params(result.params),
        "steps": result.step,
        "train_seconds": round(result.seconds, 2),
        "test_seconds": round(test_seconds, 2),
        "stopped_early": result.stopped_early,
        "best_step": result.best_step,
        "test": test,
        "val": result.history["val"][-1] if result.history["val"] else None,
        "baselines": task.baselines,
        "solved": is_solved(task.solved, test),
        "solved_when": solved_when(task),
        "history": result.history,
    }


def write_run(out: Path, results: dict[str, Any], task: Task, command: str | None) -> None:
    """``results.json`` and ``history.png`` (the learning curves beside the baselines) in
    ``out``; ``command`` is recorded in the JSON."""
    document = results_document(f"training-run-{task.name}", command, **results)
    write_json(out / "results.json", document)
    plot_history(
        results["history"],
        out / "history.png",
        title=f"{results['cell']} on {task.description}",
        baselines=loss_baselines(task),
    )


def diverged(config: RunConfig, info: dict[str, Any], error: TrainingError) -> dict[str, Any]:
    """The record of a run whose loss stopped being finite: its history, no test metrics."""
    shapes = jax.eval_shape(make_model(config, info).init, jax.random.key(config.seed))
    seconds = error.history["train"][-1]["seconds"] if error.history["train"] else 0.0
    return {
        "task": info["name"],
        "config": config.to_dict(),
        "cell": config.cell,
        "params": count_params(shapes),
        "steps": error.step,
        "train_seconds": seconds,
        "diverged": str(error),
        "test": {},
        "solved": False,
        "history": error.history,
    }
