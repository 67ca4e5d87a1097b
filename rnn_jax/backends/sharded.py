"""The ``sharded`` backend: the time axis of a linear recurrence split across devices.

For cells with a `LinearRecurrence` (``cell.linear``: min_gru, min_lstm, lru,
rg_lru) the coefficients ``(a, b)`` of ``h_t = a_t h_{t-1} + b_t`` come from
the inputs at once; their ``T`` steps are then sharded over one axis of a
`jax.sharding.Mesh` with `jax.shard_map`, in three moves:

1. each device solves its own stretch of ``T / n`` steps from a zero state,
   and so knows its stretch as one affine map ``h_out = A h_in + E`` (``A``
   the product of its ``a``, ``E`` its last state from zero);
2. the ``n`` summaries are gathered (``all_gather``: ``2 B H`` numbers per
   device, whatever ``T``) and one associative scan over them gives the
   state entering every stretch;
3. each device solves its stretch again from its entering state.

So the long axis never leaves its devices; only the per-device summaries
travel. Values are the single-device scan's to rounding; gradients are
JAX's derivatives of that program (each local solve differentiated by the
transposed recurrence, the gather by its transpose), so they are exact too.

Valid steps, restarts and initial states enter the coefficients before the
split (`rnn_jax.backends.masking.masked_coefficients`): a step that does not
count is ``a = 1, b = 0``, a restart is ``a = 0`` with the restart state in
``b``. ``T`` not divisible by the device count is padded at the end with
such pass-through steps, which change nothing in either direction.
``reverse=True`` runs every stretch backwards and the summaries from the
last device to the first. With a 1-device mesh it is the parallel backend's
solve (exact, and a check that the same program runs on one device or many).

``rj.backends.Sharded(mesh=..., axis=...)`` configures one; the default
(``backend="sharded"``) shards time over every device ``jax.devices()``
lists, on a mesh of one axis named ``"time"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from rnn_jax import _validate
from rnn_jax.backends.contract import Backend, Problem
from rnn_jax.backends.linear_solve import METHODS, associative, previous_states, solve
from rnn_jax.backends.masking import linear_outputs, masked_coefficients

AXIS = "time"


def mesh_of(mesh: Mesh | None, axis: str) -> Mesh:
    """``mesh``, or (None) every device on one axis named ``axis``."""
    if mesh is not None:
        return mesh
    return Mesh(np.array(jax.devices()), (axis,))


def refusal(cell, *, mesh: Mesh | None, axis: str, batch_axis: str | None) -> str | None:
    """Why this backend cannot run ``cell``, or None."""
    if cell.linear is None:
        return (
            "it shards the time axis of a linear recurrence (cell.linear, as min_gru, min_lstm, "
            "lru and rg_lru have), and this cell has none; use backend='sequential', or "
            "'newton' on one device"
        )
    names = (AXIS,) if mesh is None else mesh.axis_names
    for role, name in (("axis", axis), ("batch_axis", batch_axis)):
        if name is not None and name not in names:
            return f"its {role} {name!r} is not an axis of the mesh {tuple(names)}"
    return None


def stretch_states(a, b, h0, *, axis: str, reverse: bool, method: str, chunk: int):
    """The states of this device's stretch ``a, b: [L, B, H]``, given the scan's ``h0 [B, H]``.

    Runs inside `jax.shard_map`: the stretches of all devices along ``axis``
    make up the sequence, in device order.
    """
    solve_here = partial(solve, reverse=reverse, method=method, chunk=chunk)
    # h0 is the same on every device; the loops below carry states that differ per device.
    h0 = jax.lax.pcast(h0, (axis,), to="varying")
    from_zero = solve_here(a, b, jnp.zeros_like(h0))
    exit_state = from_zero[0] if reverse else from_zero[-1]
    maps = jax.lax.all_gather((jnp.prod(a, axis=0), exit_state), axis)  # each [n, B, H]
    after = associative(*maps, h0, reverse=reverse)  # the state leaving each stretch
    entering = previous_states(after, h0, reverse)[jax.lax.axis_index(axis)]
    return solve_here(a, b, entering)


def sharded_states(a, b, h0, *, mesh: Mesh, axis: str, batch_axis, reverse, method, chunk):
    """All states ``[T, B, H]`` of ``h_t = a_t h_{t-1} + b_t`` with ``T`` split over ``axis``."""
    devices = mesh.shape[axis]
    steps = b.shape[0]
    padding = -steps % devices
    if padding:  # pass-through steps at the end leave every state unchanged, either way
        a = jnp.concatenate([a, jnp.ones((padding, *a.shape[1:]), a.dtype)])
        b = jnp.concatenate([b, jnp.zeros((padding, *b.shape[1:]), b.dtype)])
    if batch_axis is not None and b.shape[1] % mesh.shape[batch_axis]:
        batch_axis = None  # a batch that does not divide stays whole (a model's init probes B=1)
    time_major = PartitionSpec(axis, batch_axis)
    local = partial(stretch_states, axis=axis, reverse=reverse, method=method, chunk=chunk)
    hs = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(time_major, time_major, PartitionSpec(batch_axis)),
        out_specs=time_major,
    )(a, b, h0)
    return hs[:steps]


def sharded_scan(cell, params, problem: Problem, *, mesh, axis, batch_axis, method, chunk):
    """``(final_carry, ys)`` of a linear-recurrence cell, as the reference scan gives them."""
    linear = cell.linear
    h0 = problem.initial_state
    a, b = linear.coefficients(params, problem.xs)
    dtype = jnp.result_type(a, b, h0)
    b = b.astype(dtype)
    a = jnp.broadcast_to(a, b.shape).astype(dtype)
    a, b = masked_coefficients(a, b, problem)
    hs = sharded_states(
        a,
        b,
        h0.astype(dtype),
        mesh=mesh_of(mesh, axis),
        axis=axis,
        batch_axis=batch_axis,
        reverse=problem.reverse,
        method=method,
        chunk=chunk,
    ).astype(h0.dtype)
    return linear_outputs(linear, params, hs, problem)


@dataclass(frozen=True)
class Sharded(Backend):
    """The ``sharded`` backend: ``T`` split over the mesh axis ``axis``.

    Args:
        mesh: a `jax.sharding.Mesh`; None: every device on one axis ``axis``
            (built when the scan is traced, so after ``jax.distributed.initialize``).
        axis: the mesh axis that splits the time axis.
        batch_axis: a second mesh axis that splits the batch, or None (the
            batch is then whole on every device of ``axis``); a batch that does
            not divide by its size is not split.
        method: how each device solves its stretch, as `rnn_jax.backends.parallel`:
            ``"associative"``, ``"chunked"`` or ``"auto"``.
        chunk: steps per chunk of the chunked method.

    Example:
        >>> cell = rj.min_gru(8)
        >>> params = cell.init(jax.random.key(0), 4)
        >>> xs = jax.random.normal(jax.random.key(1), (1000, 2, 4))
        >>> _, ys = rj.scan(cell, params, xs, backend="sharded")
        >>> _, want = rj.scan(cell, params, xs, backend="reference")
        >>> bool(jnp.allclose(ys, want, atol=1e-5))
        True
    """

    name = "sharded"
    mesh: Mesh | None = None
    axis: str = AXIS
    batch_axis: str | None = None
    method: Literal["auto", "associative", "chunked"] = "auto"
    chunk: int = 8

    def __post_init__(self):
        _validate.instance_of("mesh", self.mesh, Mesh | None, "a jax.sharding.Mesh or None")
        _validate.one_of("method", self.method, METHODS)
        _validate.positive_int("chunk", self.chunk)
        if self.batch_axis is not None and self.mesh is None:
            raise ValueError("batch_axis needs a mesh with that axis; got mesh=None")
        if self.batch_axis is not None and self.batch_axis == self.axis:
            raise ValueError(f"batch_axis must differ from axis; both are {self.axis!r}")

    def supports(self, cell, problem: Problem) -> str | None:
        return refusal(cell, mesh=self.mesh, axis=self.axis, batch_axis=self.batch_axis)

    def run(self, cell, params, problem: Problem):
        return sharded_scan(
            cell,
            params,
            problem,
            mesh=self.mesh,
            axis=self.axis,
            batch_axis=self.batch_axis,
            method=self.method,
            chunk=self.chunk,
        )
