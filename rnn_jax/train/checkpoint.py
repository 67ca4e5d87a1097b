"""Checkpoints through orbax-checkpoint: atomic, self-describing, never silently ignored.

A checkpoint is one step directory holding three items: ``params``, ``state``
(optimizer state, step, RNG, the carried TBPTT state, the best params so far)
and ``meta`` (JSON: the run's config, the task's sizes and alphabet, the
history, the early-stopping record). ``params`` stand alone so that
``rnn-jax generate`` restores a model without its optimizer. Orbax writes each step into a temporary
directory and renames it when complete, so a run killed mid-write leaves the
previous checkpoint intact.

Arrays are written as they lie: a global array split over a mesh is written
shard by shard by the processes holding them (orbax's distributed write), and
restored onto the shardings of the template it is restored like, so a run
resumes on its mesh, or on another one (orbax reshards). Host values (numpy)
come back as numpy; a template of bare shapes (``jax.eval_shape``) comes back
on the first device.

Restoring checks what it reads: an unreadable checkpoint raises a
`DamagedCheckpoint`, one whose arrays differ in shape or structure from the
model being resumed a `CheckpointError` that says so — never a silent
restart. `Checkpointer.newest_intact` passes over damaged steps (a file
truncated, emptied or lost to a crash or a full disk) to the newest one that
reads whole, reporting each in a one-line `CheckpointWarning`.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax._extras import require

ITEMS = ("params", "state", "meta")


T = TypeVar("T")


class CheckpointError(Exception):
    """A checkpoint is missing, unreadable, or written for another run."""


class DamagedCheckpoint(CheckpointError):
    """A checkpoint's files cannot be read back (truncated, empty or missing)."""


class CheckpointWarning(UserWarning):
    """A damaged checkpoint was passed over for an older one."""


def _orbax():
    ocp = require("orbax.checkpoint", "saving and restoring checkpoints")
    logging.getLogger("absl").setLevel(logging.ERROR)
    return ocp


@contextlib.contextmanager
def _quiet_failed_reads():
    """Hides what orbax leaves behind when it fails to read: reads still pending, whose
    errors would be printed at garbage collection (the `DamagedCheckpoint` says it all)."""
    hook, asyncio_log = sys.unraisablehook, logging.getLogger("asyncio")
    level = asyncio_log.level
    sys.unraisablehook = lambda _: None
    asyncio_log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        gc.collect()
        sys.unraisablehook = hook
        asyncio_log.setLevel(level)


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200] if text else ''}"


class Checkpointer:
    """Saves and restores training state under ``directory`` (one subdirectory per step).

    The directory is created at the first save, not before, so a run that
    fails its checks leaves nothing behind. ``max_to_keep`` latest steps are kept.

    Example:
        >>> import tempfile
        >>> ckpt = rj.train.Checkpointer(f"{tempfile.mkdtemp()}/checkpoints")
        >>> ckpt.save(10, {"w": jnp.ones(3)}, {"step": 10}, {"config": {}})
        >>> ckpt.latest_step()
        10
    """

    def __init__(self, directory: str | Path, *, max_to_keep: int = 2):
        _orbax()  # a missing orbax is said now, not at the first save after training
        self.directory = Path(directory).absolute()
        self.max_to_keep = max_to_keep
        self._manager = None

    def _get_manager(self, create: bool):
        if self._manager is None:
            if not create and not self.directory.is_dir():
                return None
            ocp = _orbax()
            options = ocp.CheckpointManagerOptions(
                max_to_keep=self.max_to_keep,
                enable_async_checkpointing=False,
                create=create,
                cleanup_tmp_directories=True,
            )
            self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=ITEMS)
        return self._manager

    def steps(self) -> list[int]:
        """Steps with a complete checkpoint, ascending."""
        manager = self._get_manager(create=False)
        return [] if manager is None else sorted(manager.all_steps())

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def save(self, step: int, params: Any, state: Any, meta: dict[str, Any]) -> None:
        """Writes ``params`` and ``state`` (pytrees of arrays) and ``meta`` (JSON) as ``step``."""
        ocp = _orbax()
        manager = self._get_manager(create=True)
        manager.save(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardSave(savable(params)),
                state=ocp.args.StandardSave(savable(state)),
                meta=ocp.args.JsonSave(meta),
            ),
            force=True,
        )
        manager.wait_until_finished()

    def _step(self, step: int | None) -> int:
        steps = self.steps()
        if not steps:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        if step is None:
            return steps[-1]
        if step not in steps:
            raise CheckpointError(
                f"no checkpoint of step {step} in {self.directory}; it has {steps}"
            )
        return step

    def read_meta(self, step: int | None = None) -> dict[str, Any]:
        """The JSON ``meta`` of step ``step`` (default: the latest)."""
        ocp = _orbax()
        step = self._step(step)
        try:
            with _quiet_failed_reads():
                restored = self._get_manager(create=False).restore(
                    step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
                )
            meta = restored.meta
        except Exception as error:  # noqa: BLE001 - any failure to read is reported as such
            raise DamagedCheckpoint(
                f"checkpoint {self.directory / str(step)} is unreadable (corrupt?): "
                f"{_describe(error)}"
            ) from None
        if not isinstance(meta, dict) or "config" not in meta:
            raise CheckpointError(
                f"checkpoint {self.directory / str(step)} has no run config; it was not written by "
                "rnn_jax training"
            )
        return meta

    def restore(self, item: str, template: Any, step: int | None = None) -> Any:
        """Item ``"params"`` or ``"state"`` of step ``step`` (default: latest), like ``template``.

        Raises `CheckpointError` when it cannot be read or when its arrays do
        not match ``template`` leaf for leaf in shape and dtype.
        """
        if item not in ("params", "state"):
            raise ValueError(f"item must be 'params' or 'state'; got {item!r}")
        ocp = _orbax()
        step = self._step(step)
        where = self.directory / str(step)
        abstract = jax.tree.map(restore_target, template)
        try:
            with _quiet_failed_reads():
                restored = self._get_manager(create=False).restore(
                    step, args=ocp.args.Composite(**{item: ocp.args.StandardRestore(abstract)})
                )[item]
        except Exception as error:  # noqa: BLE001
            raise DamagedCheckpoint(
                f"checkpoint {where} could not be restored (corrupt, or written for another "
                f"model): {_describe(error)}"
            ) from None
        check_matches(restored, template, where, item)
        return restored

    def newest_intact(self, read: Callable[[int], T]) -> tuple[int, T, list[int]]:
        """``(step, read(step), damaged)``: the newest step that ``read`` reads without a
        `DamagedCheckpoint`, and the newer ones it passed over, each reported in a one-line
        `CheckpointWarning`. When even the oldest is damaged, its error is raised.

        ``read(step)`` restores what the caller needs of that step (`read_meta`, `restore`).
        """
        steps = self.steps()
        if not steps:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        newest_first = steps[::-1]
        damaged: list[int] = []
        for step, older in zip(newest_first, newest_first[1:], strict=False):
            try:
                return step, read(step), damaged
            except DamagedCheckpoint as error:
                warnings.warn(f"{error}; going back to step {older}", CheckpointWarning, 2)
                damaged.append(step)
        return newest_first[-1], read(newest_first[-1]), damaged

    def set_aside(self, step: int) -> None:
        """Renames the damaged step ``step`` to ``STEP.damaged`` (which orbax ignores), so that a
        resumed run writes that step anew. Process 0 renames; every process waits for it."""
        if jax.process_index() == 0:
            source = self.directory / str(step)
            target, copy = source.with_name(f"{step}.damaged"), 1
            while target.exists():
                target, copy = source.with_name(f"{step}.damaged-{copy}"), copy + 1
            source.rename(target)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"rnn_jax: checkpoint {step} set aside")
        self._manager = None  # orbax lists the steps afresh


def savable(tree: Any) -> Any:
    """``tree`` with jax arrays as they are (sharded ones are written shard by shard) and
    everything else as numpy."""
    return jax.tree.map(
        lambda leaf: leaf if isinstance(leaf, jax.Array) else np.asarray(leaf), tree
    )


def restore_target(leaf: Any) -> Any:
    """What orbax restores a template leaf as: a jax array on the leaf's sharding (the first
    device for bare shapes), or numpy for a host value."""
    if isinstance(leaf, jax.Array):
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf.sharding)
    if isinstance(leaf, jax.ShapeDtypeStruct):
        where = leaf.sharding or jax.sharding.SingleDeviceSharding(jax.devices()[0])
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=where)
    return np.asarray(leaf)


def check_matches(restored: Any, template: Any, where: Path | str, item: str = "state") -> None:
    """A `CheckpointError` unless ``restored`` has ``template``'s structure, shapes and dtypes."""
    if jax.tree.structure(restored) != jax.tree.structure(template):
        raise CheckpointError(
            f"checkpoint {where} holds {item} structured unlike this model's; was it written "
            "for another model?"
        )
    for (path, want), got in zip(
        jax.tree_util.tree_flatten_with_path(template)[0], jax.tree.leaves(restored), strict=True
    ):
        got_type, want_type = jnp.result_type(got), jnp.result_type(want)
        if tuple(np.shape(got)) != tuple(np.shape(want)) or got_type != want_type:
            raise CheckpointError(
                f"checkpoint {where} holds {item}{jax.tree_util.keystr(path)} of shape "
                f"{np.shape(got)} {got_type}; this model has {np.shape(want)} {want_type}"
            )
