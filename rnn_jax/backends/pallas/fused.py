"""The fused recurrent kernel: the time loop inside the kernel, the recurrent block on chip.

One program per (head, batch tile) runs ``hu = fed_back(carry) @ W; carry,
y = combine(params, carry, xp_t, hu)`` over its sequence with the cell's
own `Gates` functions traced into the body (`fused_kernels`), so any cell
with `Gates` (LSTM with peepholes, projection or layer norm, GRU, Elman,
the multi-head cells) runs without cell-specific kernel code. Valid-step
masks (lengths, or holes) and restarts (resets) are applied per step inside
the kernel, exactly as `rnn_jax.backends.masking` defines them.

The backward pass is a second, reverse-time kernel joined by ``custom_vjp``;
the recurrent weights' gradient is then one large matmul outside the kernel,
``dW = sum_t fed_back(carry_t)^T @ d hu_t``.

Each platform gets its own launch (`plan_launch`: block sizes checked
against the chip's budget before lowering), chosen when the program is
lowered (`targets.on_each_platform`); every variant pads inside and slices
back, so all return the same shapes.

Precision: the carry is float32 (the cell's carry dtype). With
low-precision (bf16/fp16) weights the recurrent matmuls take their inputs in
that precision and accumulate in float32, as the ``sequential`` backend does
(and FlashRNN and cuDNN); float32 weights multiply in float32.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache, partial
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from rnn_jax import _validate
from rnn_jax.backends.contract import Problem
from rnn_jax.backends.numerics import is_low_precision
from rnn_jax.backends.pallas.fused_kernels import Launch, backward_kernel, forward_kernel
from rnn_jax.backends.pallas.heads import head_view
from rnn_jax.backends.pallas.lanes import from_lanes, to_lanes
from rnn_jax.backends.pallas.plans import Sizes, check_tiles, plan_launch
from rnn_jax.backends.pallas.refusal import Refusal, refused
from rnn_jax.backends.pallas.step_jaxprs import Leaf, StepJaxprs, trace_step
from rnn_jax.backends.pallas.targets import TARGETS, Target, on_each_platform, varying_like
from rnn_jax.cells.capabilities import Gates
from rnn_jax.cells.cell import Cell

f32 = jnp.float32
WEIGHTS = ("auto", "resident", "streamed")


@dataclass(frozen=True)
class FusedOptions:
    """What a user may set (see `rnn_jax.backends.pallas.Pallas`)."""

    block_batch: int | None = None
    block_time: int | None = None
    weights: str = "auto"
    interpret: str = "gpu"


# ----------------------------------------------------------------------------- layouts


def _pad_axis(x, axis: int, size: int, fill=0):
    if x.shape[axis] == size:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, size - x.shape[axis])
    return jnp.pad(x, widths, constant_values=fill)


def _sequence_in(x, launch: Launch):
    """``[NH, T, B, *tail]`` padded in time and batch and tiled."""
    x = _pad_axis(_pad_axis(x, 1, launch.padded_time), 2, launch.padded_batch)
    return to_lanes(x, launch.lanes, 3)


def _state_in(x, launch: Launch):
    return to_lanes(_pad_axis(x, 1, launch.padded_batch), launch.lanes, 2)


def _param_in(x, leaf: Leaf, launch: Launch):
    return to_lanes(x, launch.lanes, 1).reshape(x.shape[0], *launch.param_stored(leaf))


def _mask_in(mask, launch: Launch, steps: int, batch: int):
    """``[T, B]`` bools (None: every step counts) as ``[T_pad, B_pad, 1]`` int32; padded steps
    and rows count for nothing."""
    mask = jnp.ones((steps, batch), jnp.int32) if mask is None else mask.astype(jnp.int32)
    mask = _pad_axis(_pad_axis(mask, 0, launch.padded_time), 1, launch.padded_batch)
    return mask[..., None]


def _sequence_out(x, leaf: Leaf, launch: Launch, steps: int, batch: int):
    return from_lanes(x, launch.lanes, 3, leaf.tail)[:, :steps, :batch]


def _state_out(x, leaf: Leaf, launch: Launch, batch: int):
    return from_lanes(x, launch.lanes, 2, leaf.tail)[:, :batch]


# ----------------------------------------------------------------------------- launches


def _time_index(launch: Launch, descending: bool):
    blocks = launch.time_blocks
    return (lambda j: blocks - 1 - j) if descending else (lambda j: j)


def _specs(launch: Launch, descending: bool):
    """Block specs: ``weights``, ``param(leaf)``, ``sequence(leaf)``, ``state(leaf)``,
    ``mask``, ``param_sum(leaf)`` (one block per head and batch tile)."""
    rows, bt, time = launch.blocks.rows, launch.blocks.block_time, _time_index(launch, descending)
    zeros_of = lambda n: (0,) * n  # noqa: E731

    def sequence(leaf, tail=None):
        stored = tail or launch.stored(leaf)
        return pl.BlockSpec(
            (None, bt, rows, *stored), lambda n, b, j: (n, time(j), b, *zeros_of(len(stored)))
        )

    def state(leaf):
        stored = launch.stored(leaf)
        return pl.BlockSpec((None, rows, *stored), lambda n, b, j: (n, b, *zeros_of(len(stored))))

    def param(leaf):
        stored = launch.param_stored(leaf)
        return pl.BlockSpec((None, *stored), lambda n, b, j: (n, *zeros_of(len(stored))))

    def param_sum(leaf):
        stored = launch.param_stored(leaf)
        return pl.BlockSpec((None, None, *stored), lambda n, b, j: (n, b, *zeros_of(len(stored))))

    weights_stored = launch.stored(launch.step.weights)
    weights = pl.BlockSpec((None, *weights_stored), lambda n, b, j: (n, 0, 0))
    mask = pl.BlockSpec((bt, rows, 1), lambda n, b, j: (time(j), b, 0))
    return weights, param, sequence, state, mask, param_sum


def _call(kernel, launch: Launch, name: str, in_specs, out_specs, out_shape):
    """The ``pallas_call`` of ``kernel`` over the grid (heads, batch tiles, time blocks)."""
    target = launch.target

    def call(*args):
        return pl.pallas_call(
            partial(kernel, launch=launch),
            grid=(launch.num_heads, launch.batch_blocks, launch.time_blocks),
            in_specs=in_specs,
            out_specs=out_specs,
            out_shape=varying_like(out_shape, args),
            interpret=target.interpret,
            compiler_params=target.compiler_params(
                (False, False, True), num_warps=launch.blocks.num_warps
            ),
            name=name,
        )(*args)

    return call


def _shape(launch: Launch, lead: tuple[int, ...], leaf: Leaf, dtype=None):
    return jax.ShapeDtypeStruct((*lead, *launch.stored(leaf)), dtype or leaf.dtype)


def _forward_call(launch: Launch, save: bool):
    """The forward ``pallas_call``, in the tiled layout (``save``: the carries too)."""
    step, NH = launch.step, launch.num_heads
    weights, param, sequence, state, mask, _ = _specs(launch, launch.reverse)
    Tp, Bp = launch.padded_time, launch.padded_batch
    carries = [_shape(launch, (NH, Bp), x) for x in step.carry]
    sequences = lambda leaves: [_shape(launch, (NH, Tp, Bp), x) for x in leaves]  # noqa: E731
    out_shape = (carries, sequences(step.y), sequences(step.carry) if save else [])
    out_specs = (
        [state(x) for x in step.carry],
        [sequence(x) for x in step.y],
        [sequence(x) for x in step.carry] if save else [],
    )
    in_specs = (
        weights,
        [param(x) for x in step.params],
        [sequence(x) for x in step.xp],
        [state(x) for x in step.carry],
        [state(x) for x in step.carry] if launch.has_starts else [],
        mask if launch.has_valid else None,
        mask if launch.has_starts else None,
    )
    return _call(forward_kernel, launch, "rnn_jax_fused_forward", in_specs, out_specs, out_shape)


def _forward_variant(step: StepJaxprs, sizes: Sizes, options, save: bool, target: Target):
    """``(W, params, xp, c0, restart, valid, starts) -> (cT, ys, states)`` on ``target``."""
    T, B, NH = sizes.steps, sizes.batch, sizes.num_heads
    outputs = (
        [jax.ShapeDtypeStruct((NH, B, *x.tail), x.dtype) for x in step.carry],
        [jax.ShapeDtypeStruct((NH, T, B, *x.tail), x.dtype) for x in step.y],
        [jax.ShapeDtypeStruct((NH, T, B, *x.tail), x.dtype) for x in step.carry] if save else [],
    )
    try:
        launch = plan_launch(step, sizes, target, options, backward=False)
    except Refusal as refusal:  # this platform's branch stops its lowering in these words
        return refused(str(refusal), outputs)
    call = _forward_call(launch, save)

    def run(W, params, xp, c0, restart, valid, starts):
        cT, ys, states = call(
            to_lanes(W, launch.lanes, 1),
            [_param_in(p, x, launch) for p, x in zip(params, step.params, strict=True)],
            [_sequence_in(x, launch) for x in xp],
            [_state_in(c, launch) for c in c0],
            [_state_in(r, launch) for r in restart] if launch.has_starts else [],
            _mask_in(valid, launch, T, B) if launch.has_valid else None,
            _mask_in(starts, launch, T, B) if launch.has_starts else None,
        )
        return (
            [_state_out(c, x, launch, B) for c, x in zip(cT, step.carry, strict=True)],
            [_sequence_out(y, x, launch, T, B) for y, x in zip(ys, step.y, strict=True)],
            [
                _sequence_out(s, x, launch, T, B)
                for s, x in zip(states, step.carry[: len(states)], strict=True)
            ],
        )

    return run


def _backward_call(launch: Launch):
    """The backward ``pallas_call``, in the tiled layout."""
    step, NH = launch.step, launch.num_heads
    hu = Leaf((step.weights.tail[1],), f32)
    weights, param, sequence, state, mask, param_sum = _specs(launch, not launch.reverse)
    Tp, Bp = launch.padded_time, launch.padded_batch
    carries = [_shape(launch, (NH, Bp), x, f32) for x in step.carry]
    param_sums = [
        jax.ShapeDtypeStruct((NH, launch.batch_blocks, *launch.param_stored(x)), f32)
        for x in step.params
    ]
    out_shape = (
        [_shape(launch, (NH, Tp, Bp), x) for x in step.xp],
        _shape(launch, (NH, Tp, Bp), hu),
        carries,
        carries if launch.has_starts else [],
        param_sums,
    )
    out_specs = (
        [sequence(x) for x in step.xp],
        sequence(hu),
        [state(x) for x in step.carry],
        [state(x) for x in step.carry] if launch.has_starts else [],
        [param_sum(x) for x in step.params],
    )
    in_specs = (
        weights,
        [param(x) for x in step.params],
        [sequence(x) for x in step.xp],
        [sequence(x) for x in step.carry],
        mask if launch.has_valid else None,
        mask if launch.has_starts else None,
        [sequence(x) for x in step.y],
        [state(x) for x in step.carry],
    )
    return _call(backward_kernel, launch, "rnn_jax_fused_backward", in_specs, out_specs, out_shape)


def _backward_variant(step: StepJaxprs, sizes: Sizes, options, target: Target):
    """``(W, params, xp, states, valid, starts, dys, dcT) -> (dxp, dhu, dc0, drestart,
    dparams)`` on ``target``."""
    T, B, NH = sizes.steps, sizes.batch, sizes.num_heads
    hu = Leaf((step.weights.tail[1],), f32)
    restarts = step.carry if sizes.has_starts else ()
    outputs = (
        [jax.ShapeDtypeStruct((NH, T, B, *x.tail), x.dtype) for x in step.xp],
        jax.ShapeDtypeStruct((NH, T, B, *hu.tail), f32),
        [jax.ShapeDtypeStruct((NH, B, *x.tail), f32) for x in step.carry],
        [jax.ShapeDtypeStruct((NH, B, *x.tail), f32) for x in restarts],
        [jax.ShapeDtypeStruct((NH, *x.tail), f32) for x in step.params],
    )
    try:
        launch = plan_launch(step, sizes, target, options, backward=True)
    except Refusal as refusal:  # this platform's branch stops its lowering in these words
        return refused(str(refusal), outputs)
    call = _backward_call(launch)

    def run(W, params, xp, states, valid, starts, dys, dcT):
        dxp, dhu, dc0, drestart, dparams = call(
            to_lanes(W, launch.lanes, 1),
            [_param_in(p, x, launch) for p, x in zip(params, step.params, strict=True)],
            [_sequence_in(x, launch) for x in xp],
            [_sequence_in(s, launch) for s in states],
            _mask_in(valid, launch, T, B) if launch.has_valid else None,
            _mask_in(starts, launch, T, B) if launch.has_starts else None,
            [_sequence_in(d, launch) for d in dys],
            [_state_in(d, launch) for d in dcT],
        )
        return (
            [_sequence_out(d, x, launch, T, B) for d, x in zip(dxp, step.xp, strict=True)],
            _sequence_out(dhu, hu, launch, T, B),
            [_state_out(d, x, launch, B) for d, x in zip(dc0, step.carry, strict=True)],
            [_state_out(d, x, launch, B) for d, x in zip(drestart, restarts, strict=True)],
            [
                from_lanes(d.sum(axis=1).reshape(NH, *launch.stored(x)), launch.lanes, 1, x.tail)
                for d, x in zip(dparams, step.params, strict=True)
            ],
        )

    return run


# ----------------------------------------------------------------------------- custom_vjp


def _core(gates: Gates, step: StepJaxprs, sizes: Sizes, options: FusedOptions):
    """``(W, params, xp, c0, restart, valid, starts) -> (cT, ys)`` over leaf lists, with its
    VJP; each pass chooses its kernel by the platform it is lowered for."""

    def on_platform(variant, *args):
        return on_each_platform(variant, options.interpret, *args)

    forward = partial(_forward_variant, step, sizes, options)

    @jax.custom_vjp
    def core(W, params, xp, c0, restart, valid, starts):
        cT, ys, _ = on_platform(partial(forward, False), W, params, xp, c0, restart, valid, starts)
        return cT, ys

    def fwd(W, params, xp, c0, restart, valid, starts):
        args = (W, params, xp, c0, restart, valid, starts)
        cT, ys, states = on_platform(partial(forward, True), *args)
        return (cT, ys), (W, params, xp, c0, restart, valid, starts, states)

    def bwd(residuals, cotangents):
        W, params, xp, c0, restart, valid, starts, states = residuals
        dcT, dys = cotangents
        backward = partial(_backward_variant, step, sizes, options)
        dxp, dhu, dc0, drestart, dparams = on_platform(
            backward, W, params, xp, states, valid, starts, dys, dcT
        )
        fed = jax.vmap(gates.fed_back)(jax.tree.unflatten(step.carry_tree, states))
        mm_dtype = W.dtype if is_low_precision(W.dtype) else f32
        dW = jnp.einsum(
            "ntbr,ntbg->nrg", fed.astype(mm_dtype), dhu.astype(mm_dtype), preferred_element_type=f32
        ).astype(W.dtype)
        return (
            dW,
            [d.astype(p.dtype) for d, p in zip(dparams, params, strict=True)],
            [d.astype(x.dtype) for d, x in zip(dxp, xp, strict=True)],
            [d.astype(c.dtype) for d, c in zip(dc0, c0, strict=True)],
            [d.astype(r.dtype) for d, r in zip(drestart, restart, strict=True)],
            None,
            None,
        )

    core.defvjp(fwd, bwd)
    return core


def fused_recurrence(
    gates: Gates,
    W: jax.Array,
    head_params: Any,
    xp: Any,
    c0: Any,
    *,
    valid: jax.Array | None = None,
    starts: jax.Array | None = None,
    restart: Any = None,
    reverse: bool = False,
    unroll: int | bool | None = None,
    options: FusedOptions = FusedOptions(),
) -> tuple[Any, Any]:
    """Runs per-head `Gates` over a sequence in the fused kernel; returns ``(final_carry, ys)``.

    Args:
        gates: one head's `Gates` (``fed_back`` and ``combine`` are traced
            into the kernel; ``kernel`` is not used: ``W`` is given).
        W: ``[NH, R, G*H]``: each head's block of the recurrent matrix.
        head_params: the parameters ``combine`` reads, every leaf ``[NH, ...]``.
        xp: projected inputs, every leaf ``[NH, T, B, ...]``.
        c0: the initial carry, every leaf ``[NH, B, ...]``.
        valid: ``[T, B]`` bools, the steps that count (None: all).
        starts: ``[T, B]`` bools, where the carry entering a step is
            ``restart`` (in scan order); ``restart`` leaves ``[NH, B, ...]``.
        reverse: run from step ``T - 1`` down to 0.
        unroll: steps per iteration of the in-kernel time loop (None or
            False: 1; ``True``: the whole time block; a positive int).
        options: block sizes and the CPU's interpret target.

    Returns:
        ``(final_carry, ys)``: leaves ``[NH, B, ...]`` and ``[NH, T, B, ...]``.

    Example:
        >>> cell = rj.gru(8)
        >>> params = cell.init(jax.random.key(0), 4)
        >>> W = params.recurrent_kernel[None]
        >>> xp = cell.project(params, jnp.ones((5, 3, 4)))[None]
        >>> carry, ys = fused_recurrence(cell.gates, W, jax.tree.map(lambda p: p[None], params),
        ...                              xp, jnp.zeros((1, 3, 8)))
        >>> ys.shape
        (1, 5, 3, 8)
    """
    if W.ndim != 3:
        raise ValueError(f"W must have shape [NH, R, G*H]; got {W.shape}")
    xp_leaves, c0_leaves = jax.tree.leaves(xp), jax.tree.leaves(c0)
    NH, T, B = xp_leaves[0].shape[:3]
    if W.shape[0] != NH:
        raise ValueError(f"W must have shape [NH={NH}, R, G*H]; got {W.shape}")
    if (starts is None) != (restart is None):
        raise ValueError("starts and restart come together")
    step = trace_step(gates, W, head_params, xp, c0)
    used = [p for p, u in zip(jax.tree.leaves(head_params), step.used, strict=True) if u]
    sizes = Sizes(
        num_heads=NH,
        steps=T,
        batch=B,
        reverse=bool(reverse),
        has_valid=valid is not None,
        has_starts=starts is not None,
        unroll=_validate.steps_per_iteration(_validate.unroll(unroll), T),
    )
    restart_leaves = [] if restart is None else jax.tree.leaves(restart)
    cT, ys = _core(gates, step, sizes, options)(
        W, used, xp_leaves, c0_leaves, restart_leaves, valid, starts
    )
    return jax.tree.unflatten(step.carry_tree, cT), jax.tree.unflatten(step.y_tree, ys)


def fused_scan(cell: Cell, params: Any, problem: Problem, options: FusedOptions) -> tuple[Any, Any]:
    """`rj.scan` of a cell with `Gates` and a projection through the fused kernel."""
    heads = head_view(cell)
    xp = cell.project(params, problem.xs)
    hp = heads.head_params(params)
    W = jax.vmap(heads.gates.kernel)(hp)
    cT, ys = fused_recurrence(
        heads.gates,
        W,
        hp,
        heads.to_heads(xp),
        heads.to_heads(problem.initial_state),
        valid=problem.valid,
        starts=problem.starts,
        restart=None if problem.starts is None else heads.to_heads(problem.restart_state),
        reverse=problem.reverse,
        unroll=problem.unroll,
        options=options,
    )
    return heads.from_heads(cT), heads.from_heads(ys)


def fused_refusal(cell: Cell, problem: Problem, options: FusedOptions) -> str | None:
    """Why the fused kernel cannot run ``cell`` on ``problem`` (shapes only), or None: an
    operation the lane tiles cannot express, or, on a GPU or TPU default device, a forward
    launch over the chip's budget (a backward one is refused when it is lowered)."""
    spec = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype)  # noqa: E731
    carry = jax.tree.map(spec, problem.initial_state)
    sizes = Sizes(
        num_heads=0,
        steps=problem.steps,
        batch=problem.batch,
        reverse=problem.reverse,
        has_valid=problem.valid is not None,
        has_starts=problem.starts is not None,
        unroll=1,
    )
    return _refusal(cell, spec(problem.xs), carry, sizes, options, jax.default_backend())


def cell_step(cell: Cell, xs, carry) -> StepJaxprs:
    """The fused kernel's step of ``cell`` for inputs and a carry shaped like ``xs [T, B, F]``
    and ``carry`` (shapes only; one head's step of a multi-head cell)."""
    heads = head_view(cell)
    params = jax.eval_shape(lambda: cell.init(jax.random.key(0), xs.shape[-1]))
    hp = jax.eval_shape(heads.head_params, params)
    W = jax.eval_shape(jax.vmap(heads.gates.kernel), hp)
    xp = jax.eval_shape(heads.to_heads, jax.eval_shape(cell.project, params, xs))
    return trace_step(heads.gates, W, hp, xp, jax.eval_shape(heads.to_heads, carry))


@lru_cache(maxsize=256)
def _refusal(cell: Cell, xs, carry, sizes: Sizes, options: FusedOptions, platform: str):
    step = cell_step(cell, xs, carry)
    try:
        for target in TARGETS.values():
            check_tiles(step, target)
        if platform in TARGETS:
            sizes = replace(sizes, num_heads=head_view(cell).num_heads)
            plan_launch(step, sizes, TARGETS[platform], options, backward=False)
    except Refusal as refusal:
        return str(refusal)
    return None
