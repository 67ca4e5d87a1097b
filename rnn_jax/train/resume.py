"""Where a checkpointed run begins: afresh in an empty directory, or resumed from its newest
intact checkpoint (damaged newer ones reported in one line each and set aside)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rnn_jax.train.checkpoint import Checkpointer, CheckpointError
from rnn_jax.train.early_stopping import StoppingRecord
from rnn_jax.train.hooks import Run, empty_history


def compare_configs(saved: Mapping[str, Any], current: Mapping[str, Any], where: str) -> None:
    """A `CheckpointError` naming the settings that differ between ``saved`` and ``current``."""
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


def begin(checkpointer: Checkpointer, run: Run, *, resume: bool, config: Mapping[str, Any]) -> Run:
    """``run`` itself in a directory without checkpoints; with ``resume``, the run as its
    newest intact checkpoint holds it, which must have been written with ``config``.

    Without ``resume`` an existing checkpoint is an error, never silently overwritten.
    """
    latest = checkpointer.latest_step()
    if not resume:
        if latest is not None:
            raise CheckpointError(
                f"{checkpointer.directory} already holds a checkpoint (step {latest}); resume it "
                "or choose another checkpoint directory"
            )
        return run
    if latest is None:
        raise CheckpointError(f"no checkpoint to resume in {checkpointer.directory}")

    def read(step: int) -> tuple[dict[str, Any], Any, Any]:
        meta = checkpointer.read_meta(step)
        compare_configs(meta["config"], config, str(checkpointer.directory))
        params = checkpointer.restore("params", run.state.params, step)
        return meta, params, checkpointer.restore("state", run.state.checkpointed(), step)

    _, (meta, params, saved), damaged = checkpointer.newest_intact(read)
    for step in damaged:
        checkpointer.set_aside(step)
    record = meta.get("early_stopping")
    return Run(
        state=run.state.restored(params, saved),
        steps=run.steps,
        history=meta.get("history", empty_history()),
        stopping=StoppingRecord() if record is None else StoppingRecord.from_json(record),
        seconds_before=float(meta.get("seconds", 0.0)),
    )
