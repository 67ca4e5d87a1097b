"""The fused kernel's two bodies, forward and reverse-time backward, and their launches.

The grid is ``(heads, batch tiles, time blocks)``. A program holds its
head's recurrent block and one batch tile's carry and streams its time block
from HBM step by step: a projected input in, an output out. On GPU one time
block covers the sequence (the grid's programs run concurrently, so time
cannot be a grid axis); on TPU time blocks stream through one program in
turn ("arbitrary" semantics) and the carry waits for the next block in its
resident output block.

Every array in a body is a `lanes.Tiled` value: the cell's ``fed_back`` and
``combine`` (and their VJPs) run tile by tile from `StepJaxprs`, so no cell
needs a line of kernel code. A step, forward::

    carry = restart_state where the step starts a segment, else carry
    hu = fed_back(carry) @ W                       # per tile pair, on the matrix unit
    new, y = combine(params, carry, xp_t, hu)
    new, y = (new, y) where the step is valid, else (carry, 0)

and backward the same step's VJP, from the carries the forward stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from rnn_jax.backends.numerics import is_low_precision
from rnn_jax.backends.pallas.lanes import (
    ROWS,
    Lanes,
    RefTiles,
    Tiled,
    dot,
    evaluate,
    flatten,
    load,
    map_tiles,
    store,
    unflatten,
    zeros,
)
from rnn_jax.backends.pallas.step_jaxprs import Leaf, StepJaxprs
from rnn_jax.backends.pallas.targets import Target

f32 = jnp.float32


@dataclass(frozen=True)
class FusedBlocks:
    """Block sizes of one launch of the fused kernel.

    ``rows``: batch rows per program; ``block_time``: steps per time block;
    ``lanes``: how feature axes are cut into tiles; ``resident_weights``: the
    recurrent block (and combine's parameters) are loaded once per program
    and held on chip, else read again every step (from L2 on a GPU);
    ``num_warps``: threads per program on GPU, in warps of 32.
    """

    rows: int
    block_time: int
    lanes: Lanes
    resident_weights: bool
    num_warps: int = 4


@dataclass(frozen=True)
class Launch:
    """Everything static about one launch: the step, the target, the blocks and the shapes."""

    step: StepJaxprs
    target: Target
    blocks: FusedBlocks
    num_heads: int
    padded_time: int
    padded_batch: int
    reverse: bool
    has_valid: bool
    has_starts: bool
    unroll: int

    @property
    def time_blocks(self) -> int:
        return self.padded_time // self.blocks.block_time

    @property
    def batch_blocks(self) -> int:
        return self.padded_batch // self.blocks.rows

    @property
    def lanes(self) -> Lanes:
        return self.blocks.lanes

    def stored(self, leaf: Leaf) -> tuple[int, ...]:
        return self.lanes.stored(leaf.tail)

    def param_stored(self, leaf: Leaf) -> tuple[int, ...]:
        """A parameter leaf's per-head block: at least two axes (TPU blocks want two)."""
        stored = self.stored(leaf)
        return (1,) * (2 - len(stored)) + stored


# ----------------------------------------------------------------------------- tile helpers


def _rows(leaf: Leaf) -> tuple[int, ...]:
    return (ROWS, *leaf.tail)


def _load_rows(refs, prefix, leaves, lanes) -> list[Tiled]:
    return [load(r, prefix, _rows(x), lanes) for r, x in zip(refs, leaves, strict=True)]


def _store_all(refs, prefix, values, lanes) -> None:
    for ref, value in zip(refs, values, strict=True):
        store(ref, prefix, value, lanes)


def _param_prefix(launch: Launch, leaf: Leaf) -> tuple[int, ...]:
    return (0,) * (len(launch.param_stored(leaf)) - len(leaf.tail))


def _load_params(refs, launch: Launch) -> list[Tiled]:
    return [
        load(ref, _param_prefix(launch, leaf), leaf.tail, launch.lanes)
        for ref, leaf in zip(refs, launch.step.params, strict=True)
    ]


def _store_params(refs, values, launch: Launch) -> None:
    for ref, value, leaf in zip(refs, values, launch.step.params, strict=True):
        store(ref, _param_prefix(launch, leaf), value, launch.lanes)


def _astype(values: list[Tiled], leaves) -> list[Tiled]:
    return [
        map_tiles(lambda t, x=x: t.astype(x.dtype), v) for v, x in zip(values, leaves, strict=True)
    ]


def _where_rows(mask, new: list[Tiled], old: list[Tiled] | None = None) -> list[Tiled]:
    """Per row: ``new`` where ``mask [rows, 1]`` holds, else ``old`` (zeros when None)."""

    def pick(a, b):
        m = mask if a.ndim == 2 else mask.reshape(mask.shape[:1] + (1,) * (a.ndim - 1))
        return jnp.where(m, a, jnp.zeros_like(a) if b is None else b)

    if old is None:
        return [map_tiles(lambda a: pick(a, None), n) for n in new]
    return [map_tiles(pick, n, o) for n, o in zip(new, old, strict=True)]


def _add(a: list[Tiled], b: list[Tiled]) -> list[Tiled]:
    return [
        map_tiles(lambda x, y: x.astype(f32) + y.astype(f32), u, v)
        for u, v in zip(a, b, strict=True)
    ]


def _matmul(x: Tiled, weights: Tiled | RefTiles, contracting, launch: Launch) -> Tiled:
    """``x @ W`` (or ``x @ W^T``): low-precision weights multiply in their precision,
    accumulating in float32 (as cuDNN and FlashRNN do); float32 weights in float32."""
    w_dtype = launch.step.weights.dtype
    if is_low_precision(w_dtype):
        x = map_tiles(lambda t: t.astype(w_dtype), x)
    return dot(x, weights, contracting, launch.lanes, f32)


class _Held:
    """The recurrent block and combine's parameters. Resident: loaded once before the time
    loop (Triton keeps the block in shared memory). Streamed: the block's tiles read where
    each product needs them, one at a time, and the parameters in every step."""

    def __init__(self, w_ref, param_refs, launch: Launch):
        self.w_ref, self.param_refs, self.launch = w_ref, param_refs, launch
        self.once = self._load() if launch.blocks.resident_weights else None

    def _load(self):
        launch = self.launch
        weights = load(self.w_ref, (), launch.step.weights.tail, launch.lanes)
        return weights, _load_params(self.param_refs, launch)

    def get(self) -> tuple[Tiled | RefTiles, list[Tiled]]:
        if self.once is not None:
            return self.once
        launch = self.launch
        streamed = RefTiles(self.w_ref, (), launch.step.weights.tail, launch.lanes)
        return streamed, _load_params(self.param_refs, launch)


def _local(launch: Launch, descending: bool):
    steps = launch.blocks.block_time
    return lambda i: (steps - 1 - i) if descending else i


def _flag(ref, local):
    """A ``[rows, 1]`` bool mask of one step, or None without one."""
    return None if ref is None else ref[local] != 0


def _split(tiles: list, groups: list[list[Tiled]]) -> list[list[Tiled]]:
    out, taken = [], 0
    for group in groups:
        size = len(flatten(group))
        out.append(unflatten(tiles[taken : taken + size], group))
        taken += size
    return out


def _block_start(launch: Launch, initial, keep, reload):
    """The loop state a program's time block starts from: ``initial()`` in the only time
    block; with several, the state the previous block left in resident output blocks
    (``keep`` puts ``initial()`` there in the first block, ``reload`` reads it back)."""
    if launch.time_blocks == 1:
        return initial()

    @pl.when(pl.program_id(2) == 0)
    def _first_block():
        keep(initial())

    return reload()


# ----------------------------------------------------------------------------- forward


def forward_kernel(
    w_ref,
    param_refs,
    xp_refs,
    c0_refs,
    restart_refs,
    valid_ref,
    start_ref,
    carry_refs,
    y_refs,
    state_refs,
    *,
    launch: Launch,
):
    """One program's time block, forward. ``state_refs`` (possibly empty) receive the carry
    entering every step, after its restart: what the backward kernel recomputes from."""
    step, lanes = launch.step, launch.lanes
    local_of = _local(launch, launch.reverse)
    held = _Held(w_ref, param_refs, launch)
    restart = _load_rows(restart_refs, (), step.carry, lanes) if launch.has_starts else None
    carry0 = _block_start(
        launch,
        lambda: _load_rows(c0_refs, (), step.carry, lanes),
        lambda carry: _store_all(carry_refs, (), carry, lanes),
        lambda: _load_rows(carry_refs, (), step.carry, lanes),
    )

    def body(i, tiles):
        local = local_of(i)
        carry = unflatten(tiles, carry0)
        start = _flag(start_ref, local)
        if start is not None:
            carry = _where_rows(start, restart, carry)
        if state_refs:
            _store_all(state_refs, (local,), carry, lanes)
        xp = _load_rows(xp_refs, (local,), step.xp, lanes)
        weights, params = held.get()
        (fed,) = evaluate(step.fed_back, lanes, *carry)
        hu = _matmul(fed, weights, ((1,), (0,)), launch)
        outs = evaluate(step.combine, lanes, *params, *carry, *xp, hu)
        new, y = _astype(outs[: len(carry)], step.carry), outs[len(carry) :]
        valid = _flag(valid_ref, local)
        if valid is not None:
            new, y = _where_rows(valid, new, carry), _where_rows(valid, y)
        _store_all(y_refs, (local,), y, lanes)
        return flatten(new)

    steps = launch.blocks.block_time
    final = jax.lax.fori_loop(0, steps, body, flatten(carry0), unroll=launch.unroll)
    _store_all(carry_refs, (), unflatten(final, carry0), lanes)


# ----------------------------------------------------------------------------- backward


class _Accumulated(NamedTuple):
    """What the backward carries from step to step: the carry's cotangent, the restart
    state's and the parameters' (sums over steps and rows)."""

    d_carry: list[Tiled]
    d_restart: list[Tiled]
    d_params: list[Tiled]


class _StepRefs(NamedTuple):
    """The backward's per-step inputs and outputs."""

    state: list
    xp: list
    dy: list
    valid: Any
    start: Any
    dxp: list
    dhu: Any


def _backward_step(launch: Launch, held: _Held, refs: _StepRefs, local, acc: _Accumulated):
    """One step of the VJP at ``local``: stores the cotangents of its projected input and
    ``hu``; returns the accumulated cotangents entering the step before it."""
    step, lanes = launch.step, launch.lanes
    carry = _load_rows(refs.state, (local,), step.carry, lanes)
    xp = _load_rows(refs.xp, (local,), step.xp, lanes)
    d_y = _load_rows(refs.dy, (local,), step.y, lanes)
    valid = _flag(refs.valid, local)
    d_out = acc.d_carry
    if valid is not None:  # a masked step passes its cotangent through untouched
        d_out, d_y = _where_rows(valid, acc.d_carry), _where_rows(valid, d_y)
    weights, params = held.get()
    (fed,) = evaluate(step.fed_back, lanes, *carry)
    hu = _matmul(fed, weights, ((1,), (0,)), launch)
    cotangents = (*_astype(d_out, step.carry), *_astype(d_y, step.y))
    grads = evaluate(step.combine_vjp, lanes, *params, *carry, *xp, hu, *cotangents)
    n_p, n_c, n_x = len(params), len(carry), len(xp)
    g_params, g_carry = grads[:n_p], grads[n_p : n_p + n_c]
    g_xp, (g_hu,) = grads[n_p + n_c : n_p + n_c + n_x], grads[n_p + n_c + n_x :]
    d_fed = _matmul(g_hu, weights, ((1,), (1,)), launch)
    d_in = _add(g_carry, evaluate(step.fed_back_vjp, lanes, *carry, d_fed))
    if valid is not None:
        d_in = _where_rows(valid, d_in, acc.d_carry)
    d_restart = acc.d_restart
    start = _flag(refs.start, local)
    if start is not None:  # no gradient crosses a boundary: it goes to the restart state
        d_restart = _add(d_restart, _where_rows(start, d_in))
        d_in = _where_rows(start, [zeros(v.shape, f32, lanes) for v in d_in], d_in)
    _store_all(refs.dxp, (local,), g_xp, lanes)
    store(refs.dhu, (local,), g_hu, lanes)
    return _Accumulated(d_in, d_restart, _add(acc.d_params, g_params))


def backward_kernel(
    w_ref,
    param_refs,
    xp_refs,
    state_refs,
    valid_ref,
    start_ref,
    dy_refs,
    dcarry_refs,
    dxp_refs,
    dhu_ref,
    dc0_refs,
    drestart_refs,
    dparam_refs,
    *,
    launch: Launch,
):
    """One program's time block of the VJP, against the forward's direction: cotangents of
    the projected inputs and of ``hu`` per step, of the initial carry, of the restart state,
    and of ``combine``'s parameters (summed over the block's steps and rows)."""
    step, lanes = launch.step, launch.lanes
    local_of = _local(launch, not launch.reverse)
    held = _Held(w_ref, param_refs, launch)
    refs = _StepRefs(state_refs, xp_refs, dy_refs, valid_ref, start_ref, dxp_refs, dhu_ref)

    def initial():
        d_carry = [
            map_tiles(lambda t: t.astype(f32), v)
            for v in _load_rows(dcarry_refs, (), step.carry, lanes)
        ]
        d_restart = [zeros(_rows(x), f32, lanes) for x in step.carry] if launch.has_starts else []
        return _Accumulated(d_carry, d_restart, [zeros(x.tail, f32, lanes) for x in step.params])

    def keep(acc: _Accumulated):
        _store_all(dc0_refs, (), acc.d_carry, lanes)
        _store_all(drestart_refs, (), acc.d_restart, lanes)
        _store_params(dparam_refs, acc.d_params, launch)

    def reload():
        d_restart = _load_rows(drestart_refs, (), step.carry, lanes) if launch.has_starts else []
        d_carry = _load_rows(dc0_refs, (), step.carry, lanes)
        return _Accumulated(d_carry, d_restart, _load_params(dparam_refs, launch))

    acc0 = _block_start(launch, initial, keep, reload)

    def body(i, tiles):
        acc = _Accumulated(*_split(tiles, list(acc0)))
        acc = _backward_step(launch, held, refs, local_of(i), acc)
        return [t for group in acc for t in flatten(group)]

    flat0 = [t for group in acc0 for t in flatten(group)]
    steps = launch.blocks.block_time
    final = jax.lax.fori_loop(0, steps, body, flat0, unroll=launch.unroll)
    keep(_Accumulated(*_split(final, list(acc0))))
