"""The linear-scan kernel: ``h_t = a_t * h_{t-1} + b_t`` over time blocks, float32 carry.

For the diagonal (elementwise) recurrences of cells with a `LinearRecurrence`
(minGRU, minLSTM, LRU, RG-LRU, ...). The grid runs over (batch tiles, feature
tiles, time blocks); each program streams its time block through a loop that
keeps the carry in float32 (in the resident final-state block, so it carries
over from one time block to the next). Complex coefficients (the LRU) run as
their real and imaginary parts.

The backward pass is the same kernel run the other way over the adjoint,
``g_t = dh_t + a_{t+1}^T g_{t+1}``, then ``da_t = g_t h_{t-1}`` (elementwise)
and ``db_t = g_t``.

Lengths: step ``t`` of a sequence counts iff ``t < length``. Masked steps
become ``a = 1, b = 0`` (the carry passes through), outputs there are zero.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from rnn_jax.backends.contract import Problem
from rnn_jax.backends.masking import masked_coefficients, zero_where_not
from rnn_jax.backends.pallas.platform import (
    check_block,
    compiler_params,
    next_power_of_2,
    platform,
    resolve_interpret,
    round_up,
    tiling,
)
from rnn_jax.cells.base import Cell

f32 = jnp.float32


class _Static(NamedTuple):
    parts: int  # 1 (real) or 2 (complex, as real and imaginary parts)
    block_time: int
    block_batch: int
    block_features: int
    time_blocks: int
    batch_blocks: int
    feature_blocks: int
    descending: bool
    interpret: bool
    b_dtypes: tuple[Any, ...] = ()


def _feature_block(features: int, block: int | None, interpret: bool) -> int:
    check_block("block_features", block)
    if block is not None:
        return block
    where = "interpret" if interpret else platform()
    if where == "gpu":
        return min(next_power_of_2(features), 64)
    if where == "tpu":
        return 128 if features % 128 == 0 or features > 128 else features
    return features


def _scan_call(s: _Static, a, b, h0):
    """``a, b: parts x [T, B, H]``, ``h0: parts x [B, H]`` (float32) -> ``(hs, hT)`` parts."""
    P = s.parts
    T, B, H = a[0].shape

    def time_block(i, j, k):
        return (s.time_blocks - 1 - k) if s.descending else k

    seq = pl.BlockSpec(
        (s.block_time, s.block_batch, s.block_features),
        lambda i, j, k: (time_block(i, j, k), i, j),
    )
    state = pl.BlockSpec((s.block_batch, s.block_features), lambda i, j, k: (i, j))

    def kernel(*refs):
        a_refs, b_refs, h0_refs = refs[:P], refs[P : 2 * P], refs[2 * P : 3 * P]
        hs_refs, hT_refs = refs[3 * P : 4 * P], refs[4 * P : 5 * P]

        @pl.when(pl.program_id(2) == 0)
        def _start():
            for src, dst in zip(h0_refs, hT_refs, strict=True):
                dst[...] = src[...]

        def body(i, h):
            local = (s.block_time - 1 - i) if s.descending else i
            av = [r[local].astype(f32) for r in a_refs]
            bv = [r[local].astype(f32) for r in b_refs]
            if P == 1:
                h = (av[0] * h[0] + bv[0],)
            else:
                (ar, ai), (br, bi), (hr, hi) = av, bv, h
                h = (ar * hr - ai * hi + br, ar * hi + ai * hr + bi)
            for ref, v in zip(hs_refs, h, strict=True):
                ref[local] = v
            return h

        final = jax.lax.fori_loop(0, s.block_time, body, tuple(r[...] for r in hT_refs))
        for ref, v in zip(hT_refs, final, strict=True):
            ref[...] = v

    outs = pl.pallas_call(
        kernel,
        grid=(s.batch_blocks, s.feature_blocks, s.time_blocks),
        in_specs=[seq] * (2 * P) + [state] * P,
        out_specs=[seq] * P + [state] * P,
        out_shape=[jax.ShapeDtypeStruct((T, B, H), f32)] * P
        + [jax.ShapeDtypeStruct((B, H), f32)] * P,
        interpret=s.interpret,
        compiler_params=compiler_params(s.interpret, (False, False, True)),
        name="rnn_jax_linear_scan",
    )(*a, *b, *h0)
    return tuple(outs[:P]), tuple(outs[P:])


def _shift(x, descending: bool, fill: float):
    """``x`` moved one step against the scan direction, ``fill`` at the vacated end.

    Forward scans (``descending=False``) give ``x_{t+1}`` at ``t``; reverse
    scans ``x_{t-1}``.
    """
    pad = jnp.full_like(x[:1], fill)
    if descending:
        return jnp.concatenate([pad, x[:-1]], axis=0)
    return jnp.concatenate([x[1:], pad], axis=0)


def _core(s: _Static):
    @jax.custom_vjp
    def core(a, b, h0):
        return _scan_call(s, a, b, h0)

    def fwd(a, b, h0):
        hs, hT = _scan_call(s, a, b, h0)
        return (hs, hT), (a, h0, hs)

    def bwd(res, cts):
        a, h0, hs = res
        dhs, dhT = cts
        adjoint = s._replace(descending=not s.descending)
        # g_t = dh_t + a_{t+1}^T g_{t+1}: the transpose of multiplying by a complex a
        # is multiplying by its conjugate.
        a_next = tuple(_shift(x, s.descending, 1.0 if p == 0 else 0.0) for p, x in enumerate(a))
        if s.parts == 2:
            a_next = (a_next[0], -a_next[1])
        g, _ = _scan_call(adjoint, a_next, tuple(dhs), tuple(dhT))
        # h_{t-1} in scan order (h0 before the first step).
        h_prev = tuple(
            jnp.concatenate([x[1:], h[None]] if s.descending else [h[None], x[:-1]])
            for x, h in zip(hs, h0, strict=True)
        )
        first = -1 if s.descending else 0
        if s.parts == 1:
            da = (g[0] * h_prev[0],)
            dh0 = (a[0][first] * g[0][first],)
        else:
            (gr, gi), (pr, pi), (ar, ai) = g, h_prev, a
            da = (gr * pr + gi * pi, gi * pr - gr * pi)
            dh0 = (
                ar[first] * gr[first] + ai[first] * gi[first],
                ar[first] * gi[first] - ai[first] * gr[first],
            )
        da = tuple(d.astype(x.dtype) for d, x in zip(da, a, strict=True))
        db = tuple(x.astype(d) for x, d in zip(g, s.b_dtypes, strict=True))
        return da, db, dh0

    core.defvjp(fwd, bwd)
    return core


def linear_scan(
    a: jax.Array,
    b: jax.Array,
    h0: jax.Array,
    *,
    reverse: bool = False,
    block_batch: int | None = None,
    block_time: int | None = None,
    block_features: int | None = None,
    interpret: bool | None = None,
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
    interpret = resolve_interpret(interpret)
    T, B, H = a.shape
    complex_ = any(jnp.iscomplexobj(x) for x in (a, b, h0))
    tiles = tiling(
        B, T, block_batch=block_batch, block_time=block_time, interpret=interpret, gpu_min_batch=1
    )
    bh = _feature_block(H, block_features, interpret)
    H_pad = round_up(H, bh)
    s = _Static(
        parts=2 if complex_ else 1,
        block_time=tiles.block_time,
        block_batch=tiles.block_batch,
        block_features=bh,
        time_blocks=tiles.time_blocks,
        batch_blocks=tiles.batch_blocks,
        feature_blocks=H_pad // bh,
        descending=bool(reverse),
        interpret=interpret,
    )

    def pad(x, fill):
        sizes = (tiles.padded_time, tiles.padded_batch, H_pad)[-x.ndim :]
        widths = [(0, n - m) for n, m in zip(sizes, x.shape, strict=True)]
        if any(w != (0, 0) for w in widths):
            x = jnp.pad(x, widths, constant_values=fill)
        return x

    def parts(x, fill_re):
        if complex_:
            x = x.astype(jnp.result_type(x, jnp.complex64))
            return (pad(jnp.real(x), fill_re), pad(jnp.imag(x), 0.0))
        return (pad(x, fill_re),)

    # Padded steps have a = 1, b = 0: the carry passes through them.
    a_parts, b_parts = parts(a, 1.0), parts(b, 0.0)
    h0_parts = tuple(p.astype(f32) for p in parts(h0, 0.0))
    s = s._replace(b_dtypes=tuple(jnp.dtype(p.dtype) for p in b_parts))
    hs, hT = _core(s)(a_parts, b_parts, h0_parts)
    hs = [x[:T, :B, :H] for x in hs]
    hT = [x[:B, :H] for x in hT]
    if complex_:
        out = lambda r, i: jax.lax.complex(r, i).astype(h0.dtype)  # noqa: E731
        return out(*hs), out(*hT)
    return hs[0].astype(h0.dtype), hT[0].astype(h0.dtype)


class LinearScanOptions(NamedTuple):
    block_batch: int | None = None
    block_time: int | None = None
    block_features: int | None = None
    interpret: bool | None = None


def linear_cell_scan(
    cell: Cell, params: Any, problem: Problem, *, options: LinearScanOptions
) -> tuple[jax.Array, jax.Array]:
    """`rj.scan` of a cell with a `LinearRecurrence` through the linear-scan kernel."""
    a, b = cell.linear.coefficients(params, problem.xs)
    a = jnp.broadcast_to(a, b.shape)
    a, b = masked_coefficients(a, b, problem)
    hs, hT = linear_scan(
        a,
        b,
        problem.initial_state,
        reverse=problem.reverse,
        block_batch=options.block_batch,
        block_time=options.block_time,
        block_features=options.block_features,
        interpret=options.interpret,
    )
    ys = cell.linear.output(params, hs, problem.xs)
    if problem.valid is not None:
        ys = zero_where_not(problem.valid, ys)
    return hT, ys
