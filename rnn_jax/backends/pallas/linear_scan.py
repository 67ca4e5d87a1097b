"""The linear-scan kernel: ``h_t = a_t * h_{t-1} + b_t`` over time, float32 carry.

For the diagonal (elementwise) recurrences of cells with a `LinearRecurrence`
(minGRU, minLSTM, LRU, RG-LRU, ...). The grid runs over (batch tiles, feature
tiles, time blocks); each program streams its time block from HBM step by
step, ``a_t`` and ``b_t`` in, ``h_t`` out, while the carry stays in float32
registers (GPU: one time block, the programs run concurrently) or in its
resident output block between time blocks (TPU: time is a sequential grid
axis). Complex coefficients (the LRU) run as their real and imaginary parts.
Block sizes: `LinearBlocks`, planned per target by `plan_linear` (GPU: powers
of two for Triton; TPU: (8, 128) tiles within the VMEM limit).

The backward pass is the same kernel run the other way over the adjoint,
``g_t = dh_t + a_{t+1}^T g_{t+1}``, then ``da_t = g_t h_{t-1}`` (elementwise)
and ``db_t = g_t``.

Valid steps and restarts enter through the coefficients
(`rnn_jax.backends.masking.masked_coefficients`): a masked step becomes
``a = 1, b = 0`` (the carry passes through), a restart ``a = 0``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial, singledispatch
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from rnn_jax.backends.contract import Problem
from rnn_jax.backends.masking import masked_coefficients, zero_where_not
from rnn_jax.backends.pallas.refusal import Refusal, refused
from rnn_jax.backends.pallas.targets import (
    MosaicTPU,
    Target,
    TritonGPU,
    next_power_of_2,
    on_each_platform,
    round_up,
    varying_like,
)
from rnn_jax.cells.cell import Cell

f32 = jnp.float32


@dataclass(frozen=True)
class LinearOptions:
    """What a user may set (see `rnn_jax.backends.pallas.Pallas`)."""

    block_batch: int | None = None
    block_time: int | None = None
    block_features: int | None = None
    interpret: str = "gpu"


@dataclass(frozen=True)
class LinearBlocks:
    """Block sizes of one launch of the linear-scan kernel: ``rows`` batch rows and
    ``features`` lanes per program, ``block_time`` steps per time block."""

    rows: int
    features: int
    block_time: int


@dataclass(frozen=True)
class LinearSizes:
    steps: int
    batch: int
    features: int
    parts: int  # 1 (real) or 2 (complex, as real and imaginary parts)
    itemsize: int  # of the widest coefficient


@singledispatch
def plan_linear(target: Target, sizes: LinearSizes, options: LinearOptions) -> LinearBlocks:
    """`LinearBlocks` on ``target``; raises `Refusal` when they cannot fit its budget."""
    raise NotImplementedError(f"no linear-scan plan for {type(target).__name__}")


@plan_linear.register(TritonGPU)
def _gpu_linear(target: TritonGPU, sizes: LinearSizes, options: LinearOptions) -> LinearBlocks:
    """Powers of two (Triton), up to 8 rows and 128 lanes per program, one time block."""
    B, H, T = max(sizes.batch, 1), max(sizes.features, 1), max(sizes.steps, 1)
    rows = options.block_batch or min(next_power_of_2(B), 8)
    features = options.block_features or min(next_power_of_2(H), 128)
    for name, value in (("block_batch", rows), ("block_features", features)):
        if value & (value - 1):
            raise Refusal(f"on {target.name} (Triton) {name} must be a power of two; got {value}")
    return LinearBlocks(rows, features, T)


@plan_linear.register(MosaicTPU)
def _tpu_linear(target: MosaicTPU, sizes: LinearSizes, options: LinearOptions) -> LinearBlocks:
    """Rows a multiple of 8, lanes of 128 (Mosaic), and the longest time block (up to 256
    steps) whose double-buffered ``a``, ``b`` and ``h`` blocks fit the VMEM limit."""
    B, H, T = max(sizes.batch, 1), max(sizes.features, 1), max(sizes.steps, 1)
    rows = options.block_batch or min(round_up(B, 8), 64)
    features = options.block_features or min(round_up(H, 128), 512)
    if rows % 8 and rows != B or features % 128 and features != H:
        raise Refusal(
            f"on {target.name} blocks are multiples of (8, 128); got ({rows}, {features})"
        )
    per_step = rows * features * sizes.parts * (2 * sizes.itemsize + 4)
    candidates = [options.block_time] if options.block_time else [256, 128, 64, 32, 16, 8, 4, 2, 1]
    fitting = [bt for bt in candidates if 2 * bt * per_step <= target.memory_bytes]
    target.check_memory(
        f"a time block of the linear scan ({min(candidates)} steps, double-buffered)",
        2 * min(candidates) * per_step,
    )
    block_time = max([bt for bt in fitting if bt <= T] or [min(fitting or candidates)])
    return LinearBlocks(rows, features, block_time)


def scan_kernel(
    a_refs,
    b_refs,
    h0_refs,
    hs_refs,
    hT_refs,
    *,
    blocks: LinearBlocks,
    time_blocks: int,
    descending: bool,
):
    """One program's time block of ``h = a h + b``, per part (real, or real and imaginary):
    from ``h0_refs`` (the first time block) or the carry the last block left in ``hT_refs``."""
    parts, steps = len(a_refs), blocks.block_time
    if time_blocks == 1:
        h0 = tuple(r[...] for r in h0_refs)
    else:  # the carry waits in its resident output block between time blocks

        @pl.when(pl.program_id(2) == 0)
        def _first_block():
            for src, dst in zip(h0_refs, hT_refs, strict=True):
                dst[...] = src[...]

        h0 = tuple(r[...] for r in hT_refs)

    def body(i, h):
        local = (steps - 1 - i) if descending else i
        a = [r[local].astype(f32) for r in a_refs]
        b = [r[local].astype(f32) for r in b_refs]
        if parts == 1:
            h = (a[0] * h[0] + b[0],)
        else:
            (ar, ai), (br, bi), (hr, hi) = a, b, h
            h = (ar * hr - ai * hi + br, ar * hi + ai * hr + bi)
        for ref, v in zip(hs_refs, h, strict=True):
            ref[local] = v
        return h

    final = jax.lax.fori_loop(0, steps, body, h0)
    for ref, v in zip(hT_refs, final, strict=True):
        ref[...] = v


def _pad_to(x, shape, fill):
    widths = [(0, n - m) for n, m in zip(shape, x.shape, strict=True)]
    return jnp.pad(x, widths, constant_values=fill) if any(w for _, w in widths) else x


def _scan_variant(sizes: LinearSizes, options: LinearOptions, descending: bool, target: Target):
    """``(a_parts, b_parts, h0_parts) -> (hs_parts, hT_parts)`` on ``target``: ``a, b``
    ``[T, B, H]``, ``h0 [B, H]`` float32; padded inside, sliced back."""
    T, B, H, P = sizes.steps, sizes.batch, sizes.features, sizes.parts
    outputs = ([jax.ShapeDtypeStruct((T, B, H), f32)] * P, [jax.ShapeDtypeStruct((B, H), f32)] * P)
    try:
        blocks = plan_linear(target, sizes, options)
    except Refusal as refusal:  # this platform's branch stops its lowering in these words
        return refused(str(refusal), outputs)
    Tp = round_up(max(T, 1), blocks.block_time)
    Bp, Hp = round_up(max(B, 1), blocks.rows), round_up(max(H, 1), blocks.features)
    time_blocks = Tp // blocks.block_time
    grid = (Bp // blocks.rows, Hp // blocks.features, time_blocks)
    time = (lambda k: time_blocks - 1 - k) if descending else (lambda k: k)
    sequence = pl.BlockSpec(
        (blocks.block_time, blocks.rows, blocks.features), lambda i, j, k: (time(k), i, j)
    )
    state = pl.BlockSpec((blocks.rows, blocks.features), lambda i, j, k: (i, j))
    out_shape = (
        [jax.ShapeDtypeStruct((Tp, Bp, Hp), f32)] * P,
        [jax.ShapeDtypeStruct((Bp, Hp), f32)] * P,
    )

    def run(a, b, h0):
        # Padded steps, rows and lanes have a = 1 (its imaginary part 0), b = 0: the carry
        # passes through them.
        args = (
            [_pad_to(x, (Tp, Bp, Hp), 0.0 if part else 1.0) for part, x in enumerate(a)],
            [_pad_to(x, (Tp, Bp, Hp), 0.0) for x in b],
            [_pad_to(x, (Bp, Hp), 0.0) for x in h0],
        )
        hs, hT = pl.pallas_call(
            partial(scan_kernel, blocks=blocks, time_blocks=time_blocks, descending=descending),
            grid=grid,
            in_specs=([sequence] * P, [sequence] * P, [state] * P),
            out_specs=([sequence] * P, [state] * P),
            out_shape=varying_like(out_shape, args),
            interpret=target.interpret,
            compiler_params=target.compiler_params((False, False, True)),
            name="rnn_jax_linear_scan",
        )(*args)
        return [x[:T, :B, :H] for x in hs], [x[:B, :H] for x in hT]

    return run


def _shift(x, descending: bool, fill: float):
    """``x`` moved one step against the scan direction, ``fill`` at the vacated end.

    Forward scans (``descending=False``) give ``x_{t+1}`` at ``t``; reverse
    scans ``x_{t-1}``.
    """
    pad = jnp.full_like(x[:1], fill)
    if descending:
        return jnp.concatenate([pad, x[:-1]], axis=0)
    return jnp.concatenate([x[1:], pad], axis=0)


def _core(sizes: LinearSizes, options: LinearOptions, descending: bool, b_dtypes):
    def scan(a, b, h0, direction):
        variant = partial(_scan_variant, sizes, options, direction)
        return on_each_platform(variant, options.interpret, a, b, h0)

    @jax.custom_vjp
    def core(a, b, h0):
        return scan(a, b, h0, descending)

    def fwd(a, b, h0):
        hs, hT = scan(a, b, h0, descending)
        return (hs, hT), (a, h0, hs)

    def bwd(res, cts):
        a, h0, hs = res
        dhs, dhT = cts
        # g_t = dh_t + a_{t+1}^T g_{t+1}: the transpose of multiplying by a complex a
        # is multiplying by its conjugate.
        a_next = [_shift(x, descending, 1.0 if p == 0 else 0.0) for p, x in enumerate(a)]
        if sizes.parts == 2:
            a_next = [a_next[0], -a_next[1]]
        g, _ = scan(a_next, list(dhs), list(dhT), not descending)
        # h_{t-1} in scan order (h0 before the first step).
        h_prev = [
            jnp.concatenate([x[1:], h[None]] if descending else [h[None], x[:-1]])
            for x, h in zip(hs, h0, strict=True)
        ]
        first = -1 if descending else 0
        if sizes.parts == 1:
            da = [g[0] * h_prev[0]]
            dh0 = [a[0][first] * g[0][first]]
        else:
            (gr, gi), (pr, pi), (ar, ai) = g, h_prev, a
            da = [gr * pr + gi * pi, gi * pr - gr * pi]
            dh0 = [
                ar[first] * gr[first] + ai[first] * gi[first],
                ar[first] * gi[first] - ai[first] * gr[first],
            ]
        da = [d.astype(x.dtype) for d, x in zip(da, a, strict=True)]
        db = [x.astype(d) for x, d in zip(g, b_dtypes, strict=True)]
        return da, db, dh0

    core.defvjp(fwd, bwd)
    return core


def linear_scan(
    a: jax.Array,
    b: jax.Array,
    h0: jax.Array,
    *,
    reverse: bool = False,
    options: LinearOptions = LinearOptions(),
) -> tuple[jax.Array, jax.Array]:
    """All states of ``h_t = a_t * h_{t-1} + b_t``: returns ``(hs [T, B, H], h_final [B, H])``.

    ``a, b: [T, B, H]`` (real, or complex for a complex state), ``h0: [B, H]``.
    The carry is float32 (complex64 for complex coefficients) whatever the
    dtype of ``a`` and ``b``; ``hs`` has ``h0``'s dtype. With ``reverse`` the
    recurrence runs from ``t = T-1`` down to 0 (``h_t = a_t h_{t+1} + b_t``).

    Example:
        >>> a = jnp.full((4, 1, 2), 0.5); b = jnp.ones((4, 1, 2))
        >>> hs, h = linear_scan(a, b, jnp.zeros((1, 2)))
        >>> hs[:, 0, 0]
        Array([1.   , 1.5  , 1.75 , 1.875], dtype=float32)
    """
    if a.ndim != 3 or a.shape != b.shape or h0.shape != a.shape[1:]:
        raise ValueError(
            "linear_scan needs a, b: [T, B, H] and h0: [B, H]; got "
            f"a {a.shape}, b {b.shape}, h0 {h0.shape}"
        )
    T, B, H = a.shape
    complex_ = any(jnp.iscomplexobj(x) for x in (a, b, h0))

    def parts(x):
        if complex_:
            x = x.astype(jnp.result_type(x, jnp.complex64))
            return [jnp.real(x), jnp.imag(x)]
        return [x]

    a_parts, b_parts = parts(a), parts(b)
    h0_parts = [p.astype(f32) for p in parts(h0)]
    itemsize = max(jnp.dtype(x.dtype).itemsize for x in (*a_parts, *b_parts))
    sizes = LinearSizes(T, B, H, len(a_parts), itemsize)
    b_dtypes = tuple(jnp.dtype(p.dtype) for p in b_parts)
    hs, hT = _core(sizes, options, bool(reverse), b_dtypes)(a_parts, b_parts, h0_parts)
    if complex_:
        out = lambda r, i: jax.lax.complex(r, i).astype(h0.dtype)  # noqa: E731
        return out(*hs), out(*hT)
    return hs[0].astype(h0.dtype), hT[0].astype(h0.dtype)


def linear_cell_scan(
    cell: Cell, params: Any, problem: Problem, options: LinearOptions
) -> tuple[jax.Array, jax.Array]:
    """`rj.scan` of a cell with a `LinearRecurrence` through the linear-scan kernel."""
    a, b = cell.linear.coefficients(params, problem.xs)
    a = jnp.broadcast_to(a, b.shape)
    a, b = masked_coefficients(a, b, problem)
    hs, hT = linear_scan(a, b, problem.initial_state, reverse=problem.reverse, options=options)
    ys = cell.linear.output(params, hs, problem.xs)
    if problem.valid is not None:
        ys = zero_where_not(problem.valid, ys)
    return hT, ys
