"""The fused recurrent kernel: the time loop inside the kernel, the recurrent block on chip.

One program per (head, batch tile) loads its head's ``[R, G*H]`` block of the
recurrent matrix once and runs the whole time loop
``hu = fed_back(carry) @ W; carry, y = combine(params, carry, xp_t, hu)``
with the cell's own `Gates` functions traced into the kernel body, so any
cell with `Gates` (LSTM with peepholes, projection or layer norm, GRU, Elman,
the multi-head cells) runs without a line of cell-specific kernel code.

The backward pass is a second, reverse-time kernel joined by ``custom_vjp``:
it recomputes each step from the stored carries, takes ``jax.vjp`` of the
cell's ``combine`` inside the kernel and returns the gradients with respect
to the projected inputs, the initial carry and ``combine``'s own parameters
(accumulated over time), plus ``d hu`` for every step; the recurrent
weights' gradient is then one large matmul outside the kernel,
``dW = sum_t fed_back(carry_t)^T @ d hu_t``.

Precision: the carry is float32 (the cell's own carry dtype). With
low-precision (bf16/fp16) weights the recurrent matmuls take their inputs in
that precision and accumulate in float32, as the ``sequential`` backend does
(and FlashRNN and cuDNN); float32 weights multiply in float32.

Lengths follow `rnn_jax.backends.masking`: step ``t`` of a sequence counts iff
``t < length``; otherwise the carry passes through and the output is zero.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl

from rnn_jax.backends.contract import Problem
from rnn_jax.backends.jaxprs import leaves_read
from rnn_jax.backends.numerics import is_low_precision
from rnn_jax.backends.pallas.heads import head_view
from rnn_jax.backends.pallas.platform import compiler_params, platform, resolve_interpret, tiling
from rnn_jax.cells.base import Cell, Gates


class _Leaves(NamedTuple):
    """A flattened pytree whose leaves share leading axes: its structure and per-leaf tails."""

    treedef: Any
    tails: tuple[tuple[int, ...], ...]  # the shape after the leading axes
    dtypes: tuple[Any, ...]


def _describe(tree, lead: int) -> _Leaves:
    leaves, treedef = jax.tree.flatten(tree)
    return _Leaves(
        treedef,
        tuple(tuple(x.shape[lead:]) for x in leaves),
        tuple(jnp.dtype(x.dtype) for x in leaves),
    )


def _at_least_2d(tail: tuple[int, ...]) -> tuple[int, ...]:
    """A parameter leaf's per-head shape as stored for the kernel (TPU blocks want 2 dims)."""
    return (1,) * (2 - len(tail)) + tail if len(tail) < 2 else tail


def _index_map(*prefix):
    """An index map ``(n, b, j) -> (*prefix(n, b, j), 0, ..., 0)`` for a block of given rank."""

    def make(rank: int):
        zeros = (0,) * (rank - len(prefix))

        def index(n, b, j):
            return tuple(p(n, b, j) for p in prefix) + zeros

        return index

    return make


_HEAD = lambda n, b, j: n  # noqa: E731
_BATCH = lambda n, b, j: b  # noqa: E731


def _time_block(descending: bool, blocks: int):
    if descending:
        return lambda n, b, j: blocks - 1 - j
    return lambda n, b, j: j


def _recurrent_matmul(fed: jax.Array, W: jax.Array) -> jax.Array:
    """``fed @ W``; low-precision (bf16/fp16) weights multiply in their precision with
    float32 accumulation (as the ``sequential`` backend does), others promote."""
    if is_low_precision(W.dtype):
        return jax.lax.dot(fed.astype(W.dtype), W, preferred_element_type=jnp.float32)
    return fed @ W


def _mask(valid: jax.Array, leaf: jax.Array) -> jax.Array:
    """``valid [bb, 1]`` shaped to broadcast against ``leaf [bb, ...]``.

    Kept two-dimensional for the common ``[bb, H]`` leaves (TPU tiles are 2-D).
    """
    if leaf.ndim == 2:
        return valid
    if leaf.ndim == 1:
        return valid[:, 0]
    return valid.reshape(valid.shape + (1,) * (leaf.ndim - 2))


class _Static(NamedTuple):
    gates: Gates
    hp: _Leaves  # every head-param leaf (per head)
    used: tuple[bool, ...]
    xp: _Leaves  # per (time, batch) row
    carry: _Leaves  # per batch row
    y: _Leaves  # per (time, batch) row
    num_heads: int
    rows: int  # R
    width: int  # G*H
    block_batch: int
    block_time: int
    batch_blocks: int
    time_blocks: int
    reverse: bool
    has_length: bool
    interpret: bool
    unroll: int


def _build_params(s: _Static, used_values):
    """The per-head params pytree inside a kernel: used leaves from refs, scalars elsewhere."""
    values = iter(used_values)
    leaves = []
    for used, tail, dtype in zip(s.used, s.hp.tails, s.hp.dtypes, strict=True):
        leaves.append(next(values).reshape(tail) if used else jnp.zeros((), dtype))
    return jax.tree.unflatten(s.hp.treedef, leaves)


def _param_specs(s: _Static) -> list[pl.BlockSpec]:
    specs = []
    for used, tail in zip(s.used, s.hp.tails, strict=True):
        if used:
            stored = _at_least_2d(tail)
            specs.append(pl.BlockSpec((None, *stored), _index_map(_HEAD)(1 + len(stored))))
    return specs


def _sequence_spec(s: _Static, tail, descending: bool) -> pl.BlockSpec:
    """A ``[NH, T, B, *tail]`` array in blocks ``(time block, batch tile)`` per program."""
    return pl.BlockSpec(
        (None, s.block_time, s.block_batch, *tail),
        _index_map(_HEAD, _time_block(descending, s.time_blocks), _BATCH)(3 + len(tail)),
    )


def _state_spec(s: _Static, tail) -> pl.BlockSpec:
    """A ``[NH, B, *tail]`` array in batch tiles; the same block for every time block."""
    return pl.BlockSpec((None, s.block_batch, *tail), _index_map(_HEAD, _BATCH)(2 + len(tail)))


def _grid(s: _Static) -> tuple[int, int, int]:
    return (s.num_heads, s.batch_blocks, s.time_blocks)


# ----------------------------------------------------------------------------- forward


def _forward_call(s: _Static, W, hp_used, xp, c0, lengths, *, save_states: bool):
    """Runs the forward kernel; returns ``(cT, ys, states or None)`` as leaf lists."""
    n_hp, n_xp, n_c, n_y = len(hp_used), len(xp), len(c0), len(s.y.tails)
    descending = s.reverse
    T_pad, B_pad = s.time_blocks * s.block_time, s.batch_blocks * s.block_batch

    def kernel(*refs):
        refs = list(refs)
        w_ref = refs.pop(0)
        hp_refs = [refs.pop(0) for _ in range(n_hp)]
        xp_refs = [refs.pop(0) for _ in range(n_xp)]
        c0_refs = [refs.pop(0) for _ in range(n_c)]
        len_ref = refs.pop(0) if s.has_length else None
        cT_refs = [refs.pop(0) for _ in range(n_c)]
        y_refs = [refs.pop(0) for _ in range(n_y)]
        st_refs = [refs.pop(0) for _ in range(n_c)] if save_states else []

        j = pl.program_id(2)

        @pl.when(j == 0)
        def _start():
            for src, dst in zip(c0_refs, cT_refs, strict=True):
                dst[...] = src[...]

        W = w_ref[...]
        hp = _build_params(s, [r[...] for r in hp_refs])
        length = len_ref[...] if s.has_length else None  # [bb, 1]
        block = (s.time_blocks - 1 - j) if descending else j
        t0 = block * s.block_time

        def body(i, carry_leaves):
            local = (s.block_time - 1 - i) if descending else i
            if save_states:
                for ref, c in zip(st_refs, carry_leaves, strict=True):
                    ref[local] = c
            carry = jax.tree.unflatten(s.carry.treedef, carry_leaves)
            xp_t = jax.tree.unflatten(s.xp.treedef, [r[local] for r in xp_refs])
            hu = _recurrent_matmul(s.gates.fed_back(carry), W)
            new, y = s.gates.combine(hp, carry, xp_t, hu)
            new_leaves = [
                n.astype(c.dtype) for n, c in zip(jax.tree.leaves(new), carry_leaves, strict=True)
            ]
            y_leaves = jax.tree.leaves(y)
            if length is not None:
                valid = (t0 + local) < length
                new_leaves = [
                    jnp.where(_mask(valid, n), n, c)
                    for n, c in zip(new_leaves, carry_leaves, strict=True)
                ]
                y_leaves = [jnp.where(_mask(valid, v), v, jnp.zeros_like(v)) for v in y_leaves]
            for ref, v in zip(y_refs, y_leaves, strict=True):
                ref[local] = v.astype(ref.dtype)
            return new_leaves

        final = jax.lax.fori_loop(0, s.block_time, body, [r[...] for r in cT_refs], unroll=s.unroll)
        for ref, c in zip(cT_refs, final, strict=True):
            ref[...] = c

    in_specs = [pl.BlockSpec((None, s.rows, s.width), _index_map(_HEAD)(3))]
    in_specs += _param_specs(s)
    in_specs += [_sequence_spec(s, tail, descending) for tail in s.xp.tails]
    in_specs += [_state_spec(s, tail) for tail in s.carry.tails]
    args = [W, *hp_used, *xp, *c0]
    if s.has_length:
        in_specs.append(pl.BlockSpec((s.block_batch, 1), lambda n, b, j: (b, 0)))
        args.append(lengths)
    NH = s.num_heads
    out_shape = [
        jax.ShapeDtypeStruct((NH, B_pad, *t), d) for t, d in zip(*s.carry[1:], strict=True)
    ]
    out_specs = [_state_spec(s, tail) for tail in s.carry.tails]
    out_shape += [
        jax.ShapeDtypeStruct((NH, T_pad, B_pad, *t), d) for t, d in zip(*s.y[1:], strict=True)
    ]
    out_specs += [_sequence_spec(s, tail, descending) for tail in s.y.tails]
    if save_states:
        out_shape += [
            jax.ShapeDtypeStruct((NH, T_pad, B_pad, *t), d)
            for t, d in zip(*s.carry[1:], strict=True)
        ]
        out_specs += [_sequence_spec(s, tail, descending) for tail in s.carry.tails]
    outs = pl.pallas_call(
        kernel,
        grid=_grid(s),
        in_specs=in_specs,
        out_specs=out_specs,
        out_shape=out_shape,
        interpret=s.interpret,
        compiler_params=compiler_params(s.interpret, (False, False, True)),
        name="rnn_jax_fused_forward",
    )(*args)
    cT, ys = outs[:n_c], outs[n_c : n_c + n_y]
    states = outs[n_c + n_y :] if save_states else None
    return cT, ys, states


# ----------------------------------------------------------------------------- backward


def _backward_call(s: _Static, W, hp_used, xp, states, lengths, dys, dcT):
    """Runs the reverse-time kernel; returns ``(dxp, dhu, dc0, dhp)`` as leaf lists / array."""
    n_hp, n_xp, n_c, n_y = len(hp_used), len(xp), len(s.carry.tails), len(s.y.tails)
    descending = not s.reverse
    NH = s.num_heads
    T_pad, B_pad = s.time_blocks * s.block_time, s.batch_blocks * s.block_batch
    hp_used_tails = [t for u, t in zip(s.used, s.hp.tails, strict=True) if u]
    f32 = jnp.float32

    def kernel(*refs):
        refs = list(refs)
        w_ref = refs.pop(0)
        hp_refs = [refs.pop(0) for _ in range(n_hp)]
        xp_refs = [refs.pop(0) for _ in range(n_xp)]
        st_refs = [refs.pop(0) for _ in range(n_c)]
        len_ref = refs.pop(0) if s.has_length else None
        dy_refs = [refs.pop(0) for _ in range(n_y)]
        dcT_refs = [refs.pop(0) for _ in range(n_c)]
        dxp_refs = [refs.pop(0) for _ in range(n_xp)]
        dhu_ref = refs.pop(0)
        dc_refs = [refs.pop(0) for _ in range(n_c)]
        dhp_refs = [refs.pop(0) for _ in range(n_hp)]

        j = pl.program_id(2)

        @pl.when(j == 0)
        def _start():
            for src, dst in zip(dcT_refs, dc_refs, strict=True):
                dst[...] = src[...].astype(dst.dtype)
            for ref in dhp_refs:
                ref[...] = jnp.zeros(ref.shape, ref.dtype)

        W = w_ref[...]
        W_t = W if is_low_precision(W.dtype) else W.astype(f32)
        hp_values = [r[...].reshape(t) for r, t in zip(hp_refs, hp_used_tails, strict=True)]
        length = len_ref[...] if s.has_length else None  # [bb, 1]
        block = (s.time_blocks - 1 - j) if descending else j
        t0 = block * s.block_time

        def combine(hp_vals, carry, xp_t, hu):
            return s.gates.combine(_build_params(s, hp_vals), carry, xp_t, hu)

        def body(i, state):
            dcarry_leaves, dhp_acc = state
            local = (s.block_time - 1 - i) if descending else i
            prev = jax.tree.unflatten(s.carry.treedef, [r[local] for r in st_refs])
            xp_t = jax.tree.unflatten(s.xp.treedef, [r[local] for r in xp_refs])
            dy_leaves = [r[local] for r in dy_refs]
            dc_in = list(dcarry_leaves)
            if length is not None:
                valid = (t0 + local) < length
                dc_in = [jnp.where(_mask(valid, d), d, jnp.zeros_like(d)) for d in dc_in]
                dy_leaves = [jnp.where(_mask(valid, d), d, jnp.zeros_like(d)) for d in dy_leaves]
            fb, fb_vjp = jax.vjp(s.gates.fed_back, prev)
            hu = _recurrent_matmul(fb, W)
            (new, y), combine_vjp = jax.vjp(combine, hp_values, prev, xp_t, hu)
            d_new = jax.tree.unflatten(
                s.carry.treedef,
                [d.astype(n.dtype) for d, n in zip(dc_in, jax.tree.leaves(new), strict=True)],
            )
            d_y = jax.tree.unflatten(
                s.y.treedef,
                [d.astype(v.dtype) for d, v in zip(dy_leaves, jax.tree.leaves(y), strict=True)],
            )
            d_hp, d_prev, d_xp, d_hu = combine_vjp((d_new, d_y))
            d_fb = jax.lax.dot_general(
                d_hu.astype(W_t.dtype), W_t, (((1,), (1,)), ((), ())), preferred_element_type=f32
            )
            (d_prev_fb,) = fb_vjp(d_fb.astype(fb.dtype))
            d_prev_leaves = [
                a.astype(f32) + b.astype(f32)
                for a, b in zip(jax.tree.leaves(d_prev), jax.tree.leaves(d_prev_fb), strict=True)
            ]
            if length is not None:
                d_prev_leaves = [
                    jnp.where(_mask(valid, d), d, c)
                    for d, c in zip(d_prev_leaves, dcarry_leaves, strict=True)
                ]
            for ref, d in zip(dxp_refs, jax.tree.leaves(d_xp), strict=True):
                ref[local] = d.astype(ref.dtype)
            dhu_ref[local] = d_hu.astype(f32)
            dhp_acc = [
                acc + d.astype(f32).reshape(acc.shape) for acc, d in zip(dhp_acc, d_hp, strict=True)
            ]
            return d_prev_leaves, dhp_acc

        init = ([r[...] for r in dc_refs], [r[...] for r in dhp_refs])
        final_dc, final_dhp = jax.lax.fori_loop(0, s.block_time, body, init, unroll=s.unroll)
        for ref, d in zip(dc_refs, final_dc, strict=True):
            ref[...] = d
        for ref, d in zip(dhp_refs, final_dhp, strict=True):
            ref[...] = d

    in_specs = [pl.BlockSpec((None, s.rows, s.width), _index_map(_HEAD)(3))]
    in_specs += _param_specs(s)
    in_specs += [_sequence_spec(s, tail, descending) for tail in s.xp.tails]
    in_specs += [_sequence_spec(s, tail, descending) for tail in s.carry.tails]
    args = [W, *hp_used, *xp, *states]
    if s.has_length:
        in_specs.append(pl.BlockSpec((s.block_batch, 1), lambda n, b, j: (b, 0)))
        args.append(lengths)
    in_specs += [_sequence_spec(s, tail, descending) for tail in s.y.tails]
    in_specs += [_state_spec(s, tail) for tail in s.carry.tails]
    args += [*dys, *dcT]

    out_shape = [
        jax.ShapeDtypeStruct((NH, T_pad, B_pad, *t), d) for t, d in zip(*s.xp[1:], strict=True)
    ]
    out_specs = [_sequence_spec(s, tail, descending) for tail in s.xp.tails]
    out_shape.append(jax.ShapeDtypeStruct((NH, T_pad, B_pad, s.width), f32))
    out_specs.append(_sequence_spec(s, (s.width,), descending))
    out_shape += [jax.ShapeDtypeStruct((NH, B_pad, *t), f32) for t in s.carry.tails]
    out_specs += [_state_spec(s, tail) for tail in s.carry.tails]
    for tail in hp_used_tails:
        stored = _at_least_2d(tail)
        out_shape.append(jax.ShapeDtypeStruct((NH, s.batch_blocks, *stored), f32))
        out_specs.append(
            pl.BlockSpec((None, None, *stored), _index_map(_HEAD, _BATCH)(2 + len(stored)))
        )
    outs = pl.pallas_call(
        kernel,
        grid=_grid(s),
        in_specs=in_specs,
        out_specs=out_specs,
        out_shape=out_shape,
        interpret=s.interpret,
        compiler_params=compiler_params(s.interpret, (False, False, True)),
        name="rnn_jax_fused_backward",
    )(*args)
    dxp = outs[:n_xp]
    dhu = outs[n_xp]
    dc0 = outs[n_xp + 1 : n_xp + 1 + n_c]
    dhp = outs[n_xp + 1 + n_c :]
    return dxp, dhu, dc0, dhp


# ----------------------------------------------------------------------------- custom_vjp


def _core(s: _Static):
    """``(W, hp_used, xp, c0, lengths) -> (cT, ys)`` over padded leaf lists, with its VJP."""

    @jax.custom_vjp
    def core(W, hp_used, xp, c0, lengths):
        cT, ys, _ = _forward_call(s, W, hp_used, xp, c0, lengths, save_states=False)
        return cT, ys

    def fwd(W, hp_used, xp, c0, lengths):
        cT, ys, states = _forward_call(s, W, hp_used, xp, c0, lengths, save_states=True)
        return (cT, ys), (W, hp_used, xp, c0, lengths, states)

    def bwd(res, cts):
        W, hp_used, xp, c0, lengths, states = res
        dcT, dys = cts
        dxp, dhu, dc0, dhp = _backward_call(s, W, hp_used, xp, states, lengths, dys, dcT)
        fed = s.gates.fed_back(jax.tree.unflatten(s.carry.treedef, states))
        mm_dtype = W.dtype if is_low_precision(W.dtype) else jnp.float32
        dW = jnp.einsum(
            "ntbr,ntbg->nrg",
            fed.astype(mm_dtype),
            dhu.astype(mm_dtype),
            preferred_element_type=jnp.float32,
        ).astype(W.dtype)
        dhp_used = [
            d.sum(axis=1).reshape(p.shape).astype(p.dtype)
            for d, p in zip(dhp, hp_used, strict=True)
        ]
        dc0 = [d.astype(c.dtype) for d, c in zip(dc0, c0, strict=True)]
        return dW, dhp_used, list(dxp), dc0, None

    core.defvjp(fwd, bwd)
    return core


def _check_triton_sizes(s: _Static) -> None:
    """Pallas' Triton lowering loads and stores only power-of-two sized arrays: say so early."""
    arrays = {"the recurrent block [R, G*H]": (s.rows, s.width)}
    used_tails = [t for u, t in zip(s.used, s.hp.tails, strict=True) if u]
    arrays.update({f"combine's parameter #{i}": t for i, t in enumerate(used_tails)})
    arrays.update({f"projected input leaf #{i}": t for i, t in enumerate(s.xp.tails)})
    arrays.update({f"carry leaf #{i}": t for i, t in enumerate(s.carry.tails)})
    arrays.update({f"output leaf #{i}": t for i, t in enumerate(s.y.tails)})
    for what, shape in arrays.items():
        size = int(np.prod(shape, dtype=int))
        if size & (size - 1):
            raise ValueError(
                "the pallas backend's fused kernel on GPU (Pallas' Triton lowering) needs "
                f"power-of-two sizes per head; {what} has shape {tuple(shape)}. Use a head "
                "size and gate count whose products are powers of two, or another backend"
            )


def _unroll(unroll: int | bool, block_time: int) -> int:
    if unroll is True:
        return block_time
    if isinstance(unroll, bool) or not isinstance(unroll, int) or unroll < 1:
        return 1
    return min(unroll, block_time)


def fused_recurrence(
    gates: Gates,
    W: jax.Array,
    head_params: Any,
    xp: Any,
    c0: Any,
    lengths: jax.Array | None = None,
    *,
    reverse: bool = False,
    block_batch: int | None = None,
    block_time: int | None = None,
    interpret: bool | None = None,
    unroll: int | bool = 1,
) -> tuple[Any, Any]:
    """Runs per-head `Gates` over a sequence in the fused kernel; returns ``(final_carry, ys)``.

    Args:
        gates: one head's `Gates` (``fed_back`` and ``combine`` are traced
            into the kernel; ``kernel`` is not used: ``W`` is given).
        W: ``[NH, R, G*H]``: each head's block of the recurrent matrix.
        head_params: the parameters ``combine`` reads, every leaf ``[NH, ...]``.
        xp: projected inputs, every leaf ``[NH, T, B, ...]``.
        c0: the initial carry, every leaf ``[NH, B, ...]``.
        lengths: ``[B]`` ints in ``[0, T]``, or None.
        reverse: run from the last valid step back to the first.
        block_batch, block_time, interpret: see `rnn_jax.backends.pallas.pallas`.
        unroll: steps unrolled per iteration of the in-kernel time loop
            (``True``: the whole time block).

    Returns:
        ``(final_carry, ys)``: leaves ``[NH, B, ...]`` and ``[NH, T, B, ...]``.
    """
    interpret = resolve_interpret(interpret)
    xp_leaves = jax.tree.leaves(xp)
    NH, T, B = xp_leaves[0].shape[:3]
    if W.ndim != 3 or W.shape[0] != NH:
        raise ValueError(f"W must have shape [NH={NH}, R, G*H]; got {W.shape}")
    tiles = tiling(B, T, block_batch=block_batch, block_time=block_time, interpret=interpret)
    T_pad, B_pad = tiles.padded_time, tiles.padded_batch
    if lengths is None and T_pad != T:
        lengths = jnp.full((B,), T, jnp.int32)

    # Per-head, per-row avals, to see what combine reads and returns.
    xp_desc, c_desc = _describe(xp, 3), _describe(c0, 2)
    one = (
        lambda tree, lead: jax.tree.map(  # noqa: E731
            lambda x: jax.ShapeDtypeStruct((tiles.block_batch, *x.shape[lead:]), x.dtype), tree
        )
    )
    hp_one = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), head_params)
    carry_one, xp_one = one(c0, 2), one(xp, 3)
    fed = jax.eval_shape(gates.fed_back, carry_one)
    hu_one = jax.eval_shape(lambda f, w: f @ w, fed, jax.ShapeDtypeStruct(W.shape[1:], W.dtype))
    new_carry, y_one = jax.eval_shape(gates.combine, hp_one, carry_one, xp_one, hu_one)
    if jax.tree.structure(new_carry) != c_desc.treedef:
        raise ValueError(
            f"combine must return a carry of the structure {c_desc.treedef}; "
            f"got {jax.tree.structure(new_carry)}"
        )
    used = leaves_read(gates.combine, hp_one, carry_one, xp_one, hu_one)
    hp_leaves = jax.tree.leaves(head_params)
    s = _Static(
        gates=gates,
        hp=_describe(head_params, 1),
        used=used,
        xp=xp_desc,
        carry=c_desc,
        y=_describe(y_one, 1),
        num_heads=NH,
        rows=W.shape[1],
        width=W.shape[2],
        block_batch=tiles.block_batch,
        block_time=tiles.block_time,
        batch_blocks=tiles.batch_blocks,
        time_blocks=tiles.time_blocks,
        reverse=bool(reverse),
        has_length=lengths is not None,
        interpret=interpret,
        unroll=_unroll(unroll, tiles.block_time),
    )
    if not interpret and platform() == "gpu":
        _check_triton_sizes(s)

    def pad(x, axis_sizes):
        widths = [(0, 0)] * x.ndim
        for axis, size in axis_sizes.items():
            widths[axis] = (0, size - x.shape[axis])
        return jnp.pad(x, widths) if any(w != (0, 0) for w in widths) else x

    hp_used = [
        leaf.reshape(NH, *_at_least_2d(tuple(leaf.shape[1:])))
        for leaf, u in zip(hp_leaves, used, strict=True)
        if u
    ]
    xp_pad = [pad(x, {1: T_pad, 2: B_pad}) for x in xp_leaves]
    c0_pad = [pad(x, {1: B_pad}) for x in jax.tree.leaves(c0)]
    len_pad = None
    if lengths is not None:
        len_pad = pad(jnp.asarray(lengths, jnp.int32), {0: B_pad}).reshape(B_pad, 1)
    cT, ys = _core(s)(W, hp_used, xp_pad, c0_pad, len_pad)
    cT = [x[:, :B] for x in cT]
    ys = [x[:, :T, :B] for x in ys]
    return jax.tree.unflatten(c_desc.treedef, cT), jax.tree.unflatten(s.y.treedef, ys)


def fused_scan(
    cell: Cell,
    params: Any,
    problem: Problem,
    *,
    block_batch: int | None = None,
    block_time: int | None = None,
    interpret: bool | None = None,
) -> tuple[Any, jax.Array]:
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
        problem.length,
        reverse=problem.reverse,
        block_batch=block_batch,
        block_time=block_time,
        interpret=interpret,
        unroll=1 if problem.unroll is None else problem.unroll,
    )
    return heads.from_heads(cT), heads.from_heads(ys)
