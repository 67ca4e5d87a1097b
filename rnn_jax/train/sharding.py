"""Data-parallel placement on a `jax.sharding.Mesh`: one code path for one device or many.

Training and inference run on a mesh of two axes, ``data`` and ``model``
(`make_mesh`; by default every device on ``data``, ``model`` of size 1):

- batches are split along ``data`` over their sequence axis (`batch_shardings`:
  axis 1 of time-major inputs and per-step targets, axis 0 of per-sequence
  targets, lengths and carried states);
- parameters and optimizer state are replicated, except that on a mesh with
  ``model > 1`` every matrix whose last axis divides by ``model`` is split
  along it (`state_shardings`: one rule on shapes, so Adam's moments follow
  their parameters);
- `put` makes global arrays from values every process holds whole, so the
  same call places a batch on one device, on many, or across the processes
  of a ``jax.distributed`` run (each process keeps the shards of its own
  devices).

XLA's partitioner (GSPMD) then runs the jitted step on every device and
inserts the reductions of the loss and the gradients; the values are the
single-device step's up to the order of those sums.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from rnn_jax._validate import positive_int

DATA, MODEL = "data", "model"
AXES = (DATA, MODEL)
AUTO = "auto"


def mesh_error(shown: Any) -> ValueError:
    return ValueError(
        f"mesh must be 'auto' or AXIS=SIZE[,AXIS=SIZE] with axes among {AXES} and positive "
        f"sizes, each axis once; got {shown!r}"
    )


def parse_mesh(text: str) -> dict[str, int]:
    """The axis sizes ``text`` asks for: ``"auto"`` is ``{}``, ``"data=2,model=2"`` both.

    Example:
        >>> rj.train.sharding.parse_mesh("data=4")
        {'data': 4}
    """
    if not isinstance(text, str):
        raise TypeError(f"mesh must be a str such as 'auto' or 'data=4'; got {text!r}")
    if text.strip() == AUTO:
        return {}
    sizes: dict[str, int] = {}
    for part in text.split(","):
        name, _, size = (piece.strip() for piece in part.partition("="))
        if name not in AXES or name in sizes or not size.isdigit() or int(size) < 1:
            raise mesh_error(text)
        sizes[name] = int(size)
    return sizes


def make_mesh(
    shape: str | Mapping[str, int] | None = None, devices: Sequence[Any] | None = None
) -> Mesh:
    """A mesh of axes ``("data", "model")`` over ``devices`` (default: all, ``jax.devices()``).

    ``shape``: None or ``"auto"`` (every device on ``data``), ``"data=4"``,
    ``{"data": 2, "model": 2}``; an axis not given takes the devices left.
    The sizes must multiply to the device count.

    Example:
        >>> mesh = rj.train.sharding.make_mesh()
        >>> mesh.axis_names, mesh.shape["data"] == jax.device_count()
        (('data', 'model'), True)
    """
    devices = list(jax.devices() if devices is None else devices)
    if shape is None or isinstance(shape, str):
        sizes = parse_mesh(AUTO if shape is None else shape)
    else:
        sizes = dict(shape)
        if any(name not in AXES or not is_positive_int(size) for name, size in sizes.items()):
            raise mesh_error(shape)
    if DATA not in sizes:
        sizes[DATA] = max(1, len(devices) // sizes.get(MODEL, 1))
    sizes.setdefault(MODEL, max(1, len(devices) // sizes[DATA]))
    if sizes[DATA] * sizes[MODEL] != len(devices):
        raise ValueError(
            f"mesh {describe_sizes(sizes)} needs {sizes[DATA] * sizes[MODEL]} devices; "
            f"{len(devices)} are visible"
        )
    grid = np.array(devices, dtype=object).reshape(sizes[DATA], sizes[MODEL])
    return Mesh(grid, AXES, axis_types=(AxisType.Auto, AxisType.Auto))


def is_positive_int(size: Any) -> bool:
    try:
        positive_int("size", size)
    except (TypeError, ValueError):
        return False
    return True


def describe_sizes(sizes: Mapping[str, int]) -> str:
    return ",".join(f"{name}={sizes[name]}" for name in AXES if name in sizes)


def describe(mesh: Mesh) -> str:
    """``"data=4,model=1"``: the mesh's axis sizes, as ``--mesh`` takes them."""
    return describe_sizes(dict(mesh.shape))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def along(mesh: Mesh, ndim: int, axis: int, name: str) -> NamedSharding:
    """Axis ``axis`` of an ``ndim``-dimensional array split over mesh axis ``name``."""
    spec = [None] * ndim
    spec[axis] = name
    return NamedSharding(mesh, PartitionSpec(*spec))


def leaf_sharding(mesh: Mesh, leaf: Any) -> NamedSharding:
    """A parameter's (or optimizer moment's) sharding: its last axis over ``model`` when it is
    a matrix whose last axis divides by the ``model`` size, else replicated."""
    shape = np.shape(leaf)
    width = mesh.shape[MODEL]
    if width > 1 and len(shape) >= 2 and shape[-1] % width == 0:
        return along(mesh, len(shape), len(shape) - 1, MODEL)
    return replicated(mesh)


def state_shardings(mesh: Mesh, tree: Any) -> Any:
    """`leaf_sharding` of every leaf of ``tree`` (params, optimizer state)."""
    return jax.tree.map(lambda leaf: leaf_sharding(mesh, leaf), tree)


def sequences(mesh: Mesh) -> int:
    """How many ways the ``data`` axis splits the sequences of a batch."""
    return mesh.shape[DATA]


def split_sequences(mesh: Mesh, leaf: Any, axis: int) -> NamedSharding:
    """``leaf``'s sequence axis ``axis`` over ``data``."""
    return along(mesh, np.ndim(leaf), axis, DATA)


def batch_shardings(mesh: Mesh, batch: Any) -> Any:
    """Shardings of a time-major ``Batch`` (``rnn_jax.data.Batch``) split over sequences.

    ``inputs`` (each leaf ``[T, B, ...]``) along axis 1; ``targets`` and
    ``mask`` along axis 1 when per step (``mask [T, B]``), else axis 0;
    ``length [B]`` along axis 0; ``reset`` replicated. A batch whose
    sequences do not divide by the ``data`` size raises a ValueError.
    """
    size = batch_size(batch)
    if size % sequences(mesh):
        raise ValueError(
            f"a batch of {size} sequences does not split over the {sequences(mesh)} devices of "
            f"the mesh's data axis ({describe(mesh)}); use a batch that is a multiple of "
            f"{sequences(mesh)}, or another mesh"
        )
    target_axis = 1 if np.ndim(batch.mask) >= 2 else 0
    return batch._replace(
        inputs=jax.tree.map(lambda x: split_sequences(mesh, x, 1), batch.inputs),
        targets=split_sequences(mesh, batch.targets, target_axis),
        mask=split_sequences(mesh, batch.mask, target_axis),
        length=None if batch.length is None else split_sequences(mesh, batch.length, 0),
        reset=None if batch.reset is None else replicated(mesh),
    )


def batch_size(batch: Any) -> int:
    """The sequences in a time-major batch: axis 1 of its inputs."""
    return int(np.shape(jax.tree.leaves(batch.inputs)[0])[1])


def carry_shardings(mesh: Mesh, carry: Any) -> Any:
    """Shardings of a carried state (leaves ``[B, ...]``): split over sequences."""
    return jax.tree.map(lambda leaf: split_sequences(mesh, leaf, 0), carry)


def put(tree: Any, shardings: Any) -> Any:
    """``tree`` as global arrays with ``shardings`` (a tree of shardings, or one for all).

    Every process passes the whole value; each keeps the pieces of its own
    devices. Arrays already placed so are returned as they are.
    """
    if isinstance(shardings, jax.sharding.Sharding):
        shardings = jax.tree.map(lambda _: shardings, tree)
    return jax.tree.map(put_leaf, tree, shardings)


def put_leaf(leaf: Any, sharding: jax.sharding.Sharding) -> jax.Array:
    if isinstance(leaf, jax.Array) and leaf.sharding == sharding:
        return leaf
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        return jax.device_put(leaf, sharding)  # a global array: resharded where it lies
    value = np.asarray(leaf)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def place_batch(mesh: Mesh, batch: Any, *, whole_if_uneven: bool = False) -> Any:
    """``batch`` as global arrays split over the mesh's ``data`` axis (`batch_shardings`).

    ``whole_if_uneven``: a batch whose sequences do not divide by the ``data``
    size is replicated (evaluation, where any batch size must run) instead
    of raising.
    """
    if whole_if_uneven and batch_size(batch) % sequences(mesh):
        return put(batch, replicated(mesh))
    return put(batch, batch_shardings(mesh, batch))


def host(tree: Any) -> Any:
    """``tree`` as numpy arrays on this host: every global array gathered whole."""
    from jax.experimental import multihost_utils

    def fetch(leaf):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
        return np.asarray(leaf)

    return jax.tree.map(fetch, tree)
