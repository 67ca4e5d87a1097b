"""A trained run rebuilt from its checkpoint directory: config, model, params, and its task."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import jax

from rnn_jax.app.build import make_model, make_task
from rnn_jax.app.config import RunConfig
from rnn_jax.data import Task
from rnn_jax.models import Model
from rnn_jax.train.checkpoint import Checkpointer, CheckpointError


class LoadedRun(NamedTuple):
    """A run as its latest checkpoint holds it."""

    directory: Path  # the checkpoint directory
    config: RunConfig
    info: dict[str, Any]  # the task's `Task.info()` when it was trained: kind, sizes, alphabet
    model: Model  # built from config and info, as the run built it
    params: Any  # the params saved at ``step``
    step: int  # the updates behind params
    finished: bool  # whether the run had ended (all its steps, or stopped early)

    def task(self) -> Task:
        """The run's task, rebuilt from the config (a text task reads its file again)."""
        return make_task(self.config)


def load_run(directory: str | Path) -> LoadedRun:
    """The run whose checkpoints are in ``directory`` (``rj.app.run(checkpoint_dir=...)``).

    The model is rebuilt from the stored config and task sizes, the params
    are those of the newest intact checkpoint (the run's last step, unless a
    damaged newer one was passed over with a `rj.train.CheckpointWarning`;
    with early stopping, `run` reports the best params instead, which are
    not restored here). Raises `CheckpointError` for a directory without a
    readable checkpoint, or one written for another model.

    Example:
        >>> import tempfile
        >>> directory = tempfile.mkdtemp()
        >>> config = rj.app.RunConfig(task_options={"length": 10}, cell="gru", hidden=8,
        ...                           batch=16, steps=20)
        >>> _ = rj.app.run(config, checkpoint_dir=directory, progress=False)
        >>> loaded = rj.app.load_run(directory)
        >>> loaded.config == config, loaded.step, loaded.finished
        (True, 20, True)
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory} is not a directory; give a run's checkpoint directory")
    checkpointer = Checkpointer(directory)

    def read(step: int) -> LoadedRun:
        meta = checkpointer.read_meta(step)
        if "task_info" not in meta:
            raise CheckpointError(
                f"checkpoint {directory / str(step)} has no task sizes; rj.app.run did not write it"
            )
        config = RunConfig.from_dict(meta["config"])
        model = make_model(config, meta["task_info"])
        template = jax.eval_shape(model.init, jax.random.key(0))
        return LoadedRun(
            directory=directory,
            config=config,
            info=meta["task_info"],
            model=model,
            params=checkpointer.restore("params", template, step),
            step=step,
            finished=bool(meta.get("finished")),
        )

    return checkpointer.newest_intact(read)[1]
