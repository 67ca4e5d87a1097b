"""Inference over very many independent sequences: split over devices, streamed in slices.

A million series of 64 steps do not need to sit on a device at once. `stream`
reads ``slice_size`` sequences at a time from host arrays (numpy, or a
``np.memmap`` that never enters memory whole), splits each slice over the
mesh's ``data`` axis (`rnn_jax.train.sharding`), runs one jitted program on
it and hands the outputs back to the host, while the next slice is already
computing. Device memory is bounded by two slices and the parameters; every
slice has the same shape (the last is padded), so the program compiles once.

Inputs and outputs are batch-major, as series are stored: every leaf's
leading axis counts sequences. `predict` runs a model's ``apply`` (time-major,
like ``rj.scan``) on each sequence through ``jax.vmap``, which folds the
sequences into the scan's batch, so it is the batched kernel.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from rnn_jax._validate import positive_int
from rnn_jax.train import sharding
from rnn_jax.train.progress import Progress


def count_sequences(inputs: Any) -> int:
    """The leading size all leaves of ``inputs`` share; a ValueError names a mismatch."""
    sizes = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in jax.tree.leaves(inputs)}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(
            "inputs must be arrays whose leading axis counts the sequences, the same for all; "
            f"got leading sizes {sorted(sizes, key=str)}"
        )
    return int(sizes.pop())


def read_slice(inputs: Any, start: int, size: int) -> Any:
    """Rows ``start : start + size`` of every leaf, on the host; a short last slice is padded
    with copies of its last row (their outputs are dropped)."""

    def read(leaf):
        rows = np.asarray(leaf[start : start + size])
        missing = size - rows.shape[0]
        return np.concatenate([rows, np.repeat(rows[-1:], missing, axis=0)]) if missing else rows

    return jax.tree.map(read, inputs)


def stream(
    fn: Callable[[Any, Any], Any],
    params: Any,
    inputs: Any,
    *,
    slice_size: int,
    mesh: Mesh | None = None,
    progress: bool | None = None,
    description: str = "",
) -> Iterator[tuple[int, Any]]:
    """``(start, outputs)`` for consecutive slices of ``inputs``: ``fn(params, inputs[start:
    start + slice_size])`` as numpy arrays on the host.

    Args:
        fn: ``fn(params, inputs) -> outputs``, every leaf of both with the
            sequences on axis 0 (each sequence's outputs depending on it alone).
        params: placed once, replicated (or split over ``model`` as training does).
        inputs: a pytree of host arrays ``[N, ...]`` (numpy, memmaps: anything
            sliced along axis 0 into numpy).
        slice_size: sequences per slice; a multiple of the mesh's ``data`` size.
        mesh: the devices (default: every device on ``data``).
        progress: a progress bar over the sequences (None: when stderr is a terminal).

    Example:
        >>> double = lambda params, x: params * x
        >>> pieces = rj.train.stream(double, 2.0, np.arange(5.0), slice_size=jax.device_count(),
        ...                          progress=False)
        >>> np.concatenate([out for _, out in pieces]).tolist()
        [0.0, 2.0, 4.0, 6.0, 8.0]
    """
    mesh = sharding.make_mesh() if mesh is None else mesh
    total = count_sequences(inputs)
    positive_int("slice_size", slice_size)
    if slice_size % sharding.sequences(mesh):
        raise ValueError(
            f"slice_size must be a multiple of the {sharding.sequences(mesh)} devices on the "
            f"mesh's data axis ({sharding.describe(mesh)}); got {slice_size}"
        )
    params = sharding.put(params, sharding.state_shardings(mesh, params))
    run = jax.jit(fn)
    bar = Progress(
        -(-total // slice_size), batch_size=slice_size, enabled=progress, description=description
    )

    def finish(start, outputs):
        keep = min(slice_size, total - start)
        return start, jax.tree.map(lambda leaf: leaf[:keep], sharding.host(outputs))

    pending = None  # the slice computing while the one before it is fetched
    try:
        for done, start in enumerate(range(0, total, slice_size)):
            piece = read_slice(inputs, start, slice_size)
            placed = sharding.put(
                piece, jax.tree.map(lambda x: sharding.split_sequences(mesh, x, 0), piece)
            )
            previous, pending = pending, (start, run(params, placed))
            if previous is not None:
                fetched = finish(*previous)
                del previous  # its device arrays go before the caller sees the outputs
                yield fetched
            bar.update(done + 1)
        if pending is not None:
            fetched = finish(*pending)
            del pending
            yield fetched
    finally:
        bar.close()


def sequence_outputs(apply: Callable[..., tuple[Any, Any]]) -> Callable[[Any, Any], Any]:
    """A model's ``apply`` as ``fn(params, (series, length)) -> outputs`` over batch-major
    sequences (``series [N, T, ...]``, ``length [N]`` or None): each sequence's outputs
    (``[N, O]`` for a classifier, ``[N, T, O]`` for a tagger or forecaster)."""

    def outputs(params, inputs):
        series, length = inputs
        one = lambda x, n: apply(params, x, length=n)[1]
        return jax.vmap(one, in_axes=(0, None if length is None else 0))(series, length)

    return outputs


def predict(
    apply: Callable[..., tuple[Any, Any]],
    params: Any,
    series: Any,
    *,
    length: Any = None,
    slice_size: int = 8192,
    mesh: Mesh | None = None,
    progress: bool | None = None,
    out: Any = None,
) -> Any:
    """A model's outputs for every sequence of ``series [N, T, ...]`` (batch-major), streamed.

    ``apply`` is a model's ``apply(params, inputs [T, *batch, ...], *, length)``
    (`rnn_jax.models`); ``length [N]`` the valid steps of right-padded series.
    Returns numpy ``[N, ...]`` (the outputs of one sequence per row), written
    into ``out`` when given (e.g. ``np.lib.format.open_memmap``), so neither
    the inputs nor the outputs need fit in memory.

    Example:
        >>> model = rj.models.forecaster(rj.min_gru(8), input_size=1)
        >>> params = model.init(jax.random.key(0))
        >>> series = np.random.default_rng(0).standard_normal((1000, 64, 1), np.float32)
        >>> rj.train.predict(model.apply, params, series, slice_size=256, progress=False).shape
        (1000, 64, 1)
    """
    written = out
    for start, outputs in stream(
        sequence_outputs(apply),
        params,
        (series, length),
        slice_size=slice_size,
        mesh=mesh,
        progress=progress,
        description="predict",
    ):
        if written is None:
            total = count_sequences(series)
            written = np.empty((total, *outputs.shape[1:]), outputs.dtype)
        written[start : start + outputs.shape[0]] = outputs
    return written
