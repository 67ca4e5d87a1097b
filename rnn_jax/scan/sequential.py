"""The ``sequential`` backend: a tuned ``lax.scan`` with a custom backward pass.

For a cell with `Gates` (``simple``, ``lstm``, ``gru``):

- the carry-free input projection of every step is one ``[T * batch, F] @ [F, G*H]``
  matmul before the loop (``cell.project``), and the loop keeps only the one
  fused recurrent matmul ``fed_back(carry) @ kernel`` and ``combine``;
- its ``custom_vjp`` runs the reverse sweep with one ``[batch, G*H] @ [G*H, R]``
  matmul per step, and only then forms the recurrent kernel's gradient as ONE
  ``[R, T * batch] @ [T * batch, G*H]`` matmul over all steps (autodiff of the
  loop would add ``T`` small outer products instead). The input kernel's
  gradient is autodiff of ``project``, one matmul over all steps as well;
- ``combine``'s own parameters (biases after the matmul, peepholes, layer
  norms, projections) accumulate in the reverse sweep; the parameters it does
  not read are found from its jaxpr and skipped;
- the forward pass stores, per step, the residuals of ``combine``'s VJP (gate
  activations), so the reverse sweep evaluates no transcendental twice;
  ``residuals="recompute"`` stores the carry and the recurrent pre-activation
  instead and recomputes ``combine`` (less memory);
- low-precision (bf16/fp16) parameters run both recurrent matmuls in that
  precision with float32 accumulation, while the carry stays float32.

Lengths and ``reverse`` follow the reference exactly (see `masking.scan_steps`):
a step past a sequence's length passes the carry (and its cotangent) through.

Cells without `Gates` run the hoisted ``lax.scan`` (projection outside the
loop, ``recur`` inside) and JAX's autodiff; cells without a projection split
run the reference loop.

``unroll``: the driver's value, except that the default ``1`` means the tuned
value for the platform, `TUNED_UNROLL`, measured with
``python benchmarks/cpu_suite.py --unroll-sweep``. Configure explicitly with
``rj.scan(..., backend=sequential(unroll=1))``.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.extend.core import Literal

from rnn_jax.scan.masking import keep_where, scan_steps, zero_where_not
from rnn_jax.scan.reference import run as run_reference
from rnn_jax.scan.registry import Backend, register_backend

RESIDUALS = ("store", "recompute")
# Steps unrolled per loop iteration when the caller leaves ``unroll`` at 1, by platform.
# Measured by ``python benchmarks/cpu_suite.py --unroll-sweep`` (see benchmarks/results/).
TUNED_UNROLL = {"cpu": 1}


class Plan(NamedTuple):
    """Static choices of one run: direction, unroll, what the forward pass stores."""

    reverse: bool
    unroll: int | bool
    residuals: str


# ----------------------------------------------------------------------------- helpers


def is_low_precision(dtype) -> bool:
    """True for floating dtypes narrower than float32 (bf16, fp16, fp8)."""
    return jnp.issubdtype(dtype, jnp.floating) and jnp.finfo(dtype).bits < 32


def matmul(a: jax.Array, b: jax.Array, out_dtype) -> jax.Array:
    """``a @ b`` in ``b``'s precision when that is low (float32 accumulation), else as given."""
    if is_low_precision(b.dtype):
        return jnp.matmul(a.astype(b.dtype), b, preferred_element_type=out_dtype)
    return jnp.matmul(a, b)


def used_leaves(fn, leaves: list, *args) -> list[bool]:
    """Which of ``leaves`` the function ``fn(leaves, *args)`` reads (from its jaxpr)."""
    closed = jax.make_jaxpr(fn)(leaves, *args)
    jaxpr = closed.jaxpr
    read = {id(v) for eqn in jaxpr.eqns for v in eqn.invars if not isinstance(v, Literal)}
    read |= {id(v) for v in jaxpr.outvars if not isinstance(v, Literal)}
    return [id(v) in read for v in jaxpr.invars[: len(leaves)]]


def _split_params(gates, params, kernel, carry, xp_t):
    """``(used, rebuild)``: the float leaves of ``params`` that ``combine`` reads and the map
    from them back to ``params``."""
    leaves, treedef = jax.tree.flatten(params)
    hu = jax.eval_shape(
        lambda c, k: matmul(gates.fed_back(c), k, carry_dtype(carry)), carry, kernel
    )

    def call(ls, carry, xp_t, hu):
        return gates.combine(treedef.unflatten(ls), carry, xp_t, hu)

    reads = used_leaves(call, leaves, carry, xp_t, hu)
    picked = [
        i
        for i, (leaf, r) in enumerate(zip(leaves, reads, strict=True))
        if r and jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)
    ]

    def rebuild(used):
        full = list(leaves)
        for i, leaf in zip(picked, used, strict=True):
            full[i] = leaf
        return treedef.unflatten(full)

    return [leaves[i] for i in picked], rebuild


def carry_dtype(carry):
    return jax.tree.leaves(carry)[0].dtype


def _step_shapes(xp):
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), xp)


def _mask_tree(valid, tree):
    return tree if valid is None else zero_where_not(valid, tree)


# ----------------------------------------------------------------------------- the kernel


def gated_scan(gates, plan: Plan, params, kernel, carry0, xp, valid):
    """``(final_carry, ys)`` of the gated recurrence, with the custom backward pass.

    ``kernel = gates.kernel(params)`` is passed in (autodiff carries its
    gradient back to ``params``); ``xp = cell.project(params, xs)``;
    ``valid: [T, *batch]`` bools or None.
    """
    used, rebuild = _split_params(gates, params, kernel, carry0, _step_shapes(xp))
    out_dtype = carry_dtype(carry0)

    def combine(p_used, carry, xp_t, hu):
        return gates.combine(rebuild(p_used), carry, xp_t, hu)

    def run_forward(p_used, kernel, carry0, xp, valid, store):
        def step(carry, inputs):
            xp_t, valid_t = inputs
            fb = gates.fed_back(carry)
            hu = matmul(fb, kernel, out_dtype)
            if store is None:
                new, y = combine(p_used, carry, xp_t, hu)
                saved = None
            elif store == "store":
                (new, y), pullback = jax.vjp(combine, p_used, carry, xp_t, hu)
                saved = (fb, pullback)
            else:
                new, y = combine(p_used, carry, xp_t, hu)
                saved = (fb, carry, hu)
            if valid_t is not None:
                new = keep_where(valid_t, new, carry)
                y = zero_where_not(valid_t, y)
            return new, (y, saved)

        final, (ys, saved) = jax.lax.scan(
            step, carry0, (xp, valid), reverse=plan.reverse, unroll=plan.unroll
        )
        return final, ys, saved

    @jax.custom_vjp
    def recurrence(p_used, kernel, carry0, xp, valid):
        final, ys, _ = run_forward(p_used, kernel, carry0, xp, valid, None)
        return final, ys

    def fwd(p_used, kernel, carry0, xp, valid):
        final, ys, saved = run_forward(p_used, kernel, carry0, xp, valid, plan.residuals)
        return (final, ys), (p_used, kernel, carry0, xp, valid, saved)

    def bwd(res, cts):
        p_used, kernel, carry0, xp, valid, saved = res
        d_final, d_ys = cts
        _, fb_pullback = jax.vjp(gates.fed_back, carry0)  # fed_back is linear in the carry
        kernel_t = kernel.T

        def step(acc, inputs):
            d_carry, d_p = acc
            d_y, xp_t, valid_t, saved_t = inputs
            d_out = (d_carry, d_y) if valid_t is None else _mask_tree(valid_t, (d_carry, d_y))
            if plan.residuals == "store":
                _, pullback = saved_t
            else:
                _, carry, hu = saved_t
                _, pullback = jax.vjp(combine, p_used, carry, xp_t, hu)
            dp_t, d_prev, d_xp, d_hu = pullback(d_out)
            (d_fed,) = fb_pullback(matmul(d_hu, kernel_t, out_dtype))
            d_prev = jax.tree.map(jnp.add, d_prev, d_fed)
            if valid_t is not None:
                d_prev = keep_where(valid_t, d_prev, d_carry)
            d_p = jax.tree.map(jnp.add, d_p, dp_t)
            return (d_prev, d_p), (d_xp, d_hu)

        zeros_p = jax.tree.map(jnp.zeros_like, p_used)
        (d_carry0, d_p), (d_xp, d_hu) = jax.lax.scan(
            step,
            (d_final, zeros_p),
            (d_ys, xp, valid, saved),
            reverse=not plan.reverse,
            unroll=plan.unroll,
        )
        fbs = saved[0]
        rows = fbs.reshape(-1, fbs.shape[-1])
        d_rows = d_hu.reshape(-1, d_hu.shape[-1])
        if is_low_precision(kernel.dtype):
            rows, d_rows = rows.astype(kernel.dtype), d_rows.astype(kernel.dtype)
        d_kernel = jax.lax.dot_general(
            rows, d_rows, (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32
        ).astype(kernel.dtype)
        d_xp = jax.tree.map(lambda d, x: d.astype(x.dtype), d_xp, xp)
        return d_p, d_kernel, d_carry0, d_xp, None

    recurrence.defvjp(fwd, bwd)
    return recurrence(used, kernel, carry0, xp, valid)


def valid_steps(length, steps: int):
    """``[T, *batch]`` bools: step ``t`` of a sequence of length ``L`` counts when ``t < L``."""
    if length is None:
        return None
    t = jnp.arange(steps).reshape((steps,) + (1,) * length.ndim)
    return t < length


def resolve_unroll(unroll: int | bool, configured: int | bool | None) -> int | bool:
    """The unroll to use: the configured one, else the caller's, where 1 means tuned."""
    if configured is not None:
        return configured
    if unroll is True or unroll is False or unroll != 1:
        return unroll
    return TUNED_UNROLL.get(jax.default_backend(), 1)


def run(
    cell,
    params,
    xs,
    *,
    initial_state,
    length,
    reverse,
    unroll,
    configured_unroll=None,
    residuals="store",
):
    unroll = resolve_unroll(unroll, configured_unroll)
    if cell.project is None or cell.recur is None:
        return run_reference(
            cell,
            params,
            xs,
            initial_state=initial_state,
            length=length,
            reverse=reverse,
            unroll=unroll,
        )
    xp = cell.project(params, xs)
    if cell.gates is None:
        return scan_steps(
            partial(cell.recur, params),
            initial_state,
            xp,
            length=length,
            reverse=reverse,
            unroll=unroll,
        )
    plan = Plan(reverse=reverse, unroll=unroll, residuals=residuals)
    return gated_scan(
        cell.gates,
        plan,
        params,
        cell.gates.kernel(params),
        initial_state,
        xp,
        valid_steps(length, xs.shape[0]),
    )


def sequential(*, unroll: int | bool | None = None, residuals: str = "store") -> Backend:
    """The ``sequential`` backend, configured.

    Args:
        unroll: steps per loop iteration, overriding the driver's ``unroll``;
            None (default) takes the driver's, where its default 1 means the
            platform's measured `TUNED_UNROLL`.
        residuals: ``"store"`` keeps ``combine``'s VJP residuals (gate
            activations) from the forward pass; ``"recompute"`` keeps the carry
            and recurrent pre-activation and recomputes ``combine`` backwards.

    Example:
        >>> carry, ys = rj.scan(cell, params, xs, backend=sequential(residuals="recompute"))
    """
    if residuals not in RESIDUALS:
        raise ValueError(f"residuals must be one of {RESIDUALS}; got {residuals!r}")
    return Backend("sequential", partial(run, configured_unroll=unroll, residuals=residuals))


register_backend(sequential())
