"""Solvers for linear recurrences ``h_t = a_t h_{t-1} + b_t`` over the leading (time) axis.

Shared by the ``parallel`` backend (diagonal ``a``, from a cell's `LinearRecurrence`)
and the ``newton`` backend (the linearised step: diagonal or full ``[D, D]`` Jacobians).
Every solver returns all states ``hs [T, ...]`` from ``h0`` (the state before the
first step in scan order); with ``reverse=True`` the recurrence runs from ``T - 1``
down to 0, ``h_t = a_t h_{t+1} + b_t``, and ``h0`` is the state after ``T - 1``.

- `associative`: ``lax.associative_scan`` over the affine maps ``(a, b)``:
  ``O(log T)`` depth, ``O(T)`` work (about twice a sequential scan's).
- `chunked`: sequential inside chunks of a few steps (unrolled, so XLA fuses each
  pass into one elementwise kernel), all chunks at once, with a ``lax.scan``
  across the ``T / chunk`` chunk summaries in between.
- `log_space`: the associative scan of ``(log a, log b)`` for positive ``a, b``, with
  ``log h = logaddexp(log a + log h_prev, log b)``: finite for any ``T``.
- `full`: the associative scan over affine maps with matrices ``A [T, ..., D, D]``.
- `chunked_full`: the chunked solve with matrices, as three ``lax.scan`` passes
  (``O(sqrt T)`` depth; a program whose size does not grow with ``T``).

These are plain functions: JAX differentiates them by their structure.
`solve` and `solve_log` pick one by ``method`` and differentiate it with a
custom VJP (the transposed recurrence, solved the other way), which the
``parallel`` and ``newton`` backends use.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp

METHODS = ("auto", "associative", "chunked")


def _fold_initial(a: jax.Array, b: jax.Array, h0: jax.Array, reverse: bool, matrix: bool):
    """``b`` with ``a h0`` added at the first step in scan order, so the scan starts from 0."""
    first = -1 if reverse else 0
    push = jnp.einsum("...ij,...j->...i", a[first], h0) if matrix else a[first] * h0
    return b.at[first].add(push.astype(b.dtype))


def _combine_diag(earlier, later):
    a1, b1 = earlier
    a2, b2 = later
    return a2 * a1, a2 * b1 + b2


def _combine_full(earlier, later):
    a1, b1 = earlier
    a2, b2 = later
    return a2 @ a1, jnp.einsum("...ij,...j->...i", a2, b1) + b2


def associative(a: jax.Array, b: jax.Array, h0: jax.Array, *, reverse: bool = False) -> jax.Array:
    """All states of ``h_t = a_t * h_{t-1} + b_t`` (elementwise ``a``) by an associative scan.

    ``a, b: [T, ...]`` (``a`` may broadcast against ``b``), ``h0: [...]``.

    Example:
        >>> associative(jnp.full((3, 1), 0.5), jnp.ones((3, 1)), jnp.zeros(1))[:, 0]
        Array([1.  , 1.5 , 1.75], dtype=float32)
    """
    a = jnp.broadcast_to(a, b.shape)
    b = _fold_initial(a, b, h0, reverse, matrix=False)
    return jax.lax.associative_scan(_combine_diag, (a, b), reverse=reverse)[1]


def full(a: jax.Array, b: jax.Array, h0: jax.Array, *, reverse: bool = False) -> jax.Array:
    """All states of ``h_t = A_t h_{t-1} + b_t`` with ``A: [T, ..., D, D]``, ``b: [T, ..., D]``."""
    b = _fold_initial(a, b, h0, reverse, matrix=True)
    return jax.lax.associative_scan(_combine_full, (a, b), reverse=reverse)[1]


@jax.custom_jvp
def logaddexp(x: jax.Array, y: jax.Array) -> jax.Array:
    """``log(exp(x) + exp(y))`` whose derivative is 0, not NaN, where both are ``-inf``."""
    return jnp.logaddexp(x, y)


@logaddexp.defjvp
def _logaddexp_jvp(primals, tangents):
    x, y = primals
    dx, dy = tangents
    out = jnp.logaddexp(x, y)
    empty = jnp.isneginf(out)
    safe = jnp.where(empty, 0.0, out)
    wx = jnp.where(empty, 0.0, jnp.exp(x - safe))
    wy = jnp.where(empty, 0.0, jnp.exp(y - safe))
    return out, wx * dx + wy * dy


def _combine_log(earlier, later):
    la1, lb1 = earlier
    la2, lb2 = later
    return la1 + la2, logaddexp(la2 + lb1, lb2)


def log_space(
    log_a: jax.Array, log_b: jax.Array, h0: jax.Array, *, reverse: bool = False
) -> jax.Array:
    """All states of ``h_t = a_t h_{t-1} + b_t`` from ``log a, log b`` (``a, b > 0``).

    The scan runs on ``(sum log a, log h_zero)`` where ``h_zero`` is the state
    from a zero start, which is positive and stays finite in log space; the
    initial state, of any sign, enters exactly as ``exp(sum log a) * h0``.
    ``log_b = -inf`` is allowed (``b = 0``: masked steps).
    """
    log_a = jnp.broadcast_to(log_a, log_b.shape)
    cum_log_a, log_h = jax.lax.associative_scan(_combine_log, (log_a, log_b), reverse=reverse)
    return jnp.exp(log_h) + jnp.exp(cum_log_a) * h0[None]


def chunked(
    a: jax.Array,
    b: jax.Array,
    h0: jax.Array,
    *,
    reverse: bool = False,
    chunk: int = 8,
) -> jax.Array:
    """All states of ``h_t = a_t * h_{t-1} + b_t`` (elementwise), sequential inside chunks.

    Three passes: (1) every chunk from a zero state at once, keeping only its
    end state and its product of ``a``; (2) a ``lax.scan`` over the
    ``ceil(T / chunk)`` chunk summaries from ``h0`` gives each chunk's entering
    state; (3) every chunk again from its entering state, keeping all states.
    Passes 1 and 3 are unrolled over the ``chunk`` positions (a Python loop),
    so XLA fuses each into one elementwise kernel that keeps the chain in
    registers: memory traffic stays near a sequential scan's while the loop
    runs ``chunk`` times fewer iterations. Keep ``chunk`` small (4 to 16). ``T``
    need not divide by ``chunk``: the tail is padded with ``a = 1, b = 0``,
    which leaves states unchanged in either direction.
    """
    T = b.shape[0]
    a = jnp.broadcast_to(a, b.shape)
    chunk = max(1, min(int(chunk), T))
    K = -(-T // chunk)
    pad = K * chunk - T
    if pad:
        widths = [(0, pad)] + [(0, 0)] * (b.ndim - 1)
        a = jnp.pad(a, widths, constant_values=1)
        b = jnp.pad(b, widths)
    rest = b.shape[1:]
    a = a.reshape((K, chunk) + rest)
    b = b.reshape((K, chunk) + rest)
    order = range(chunk - 1, -1, -1) if reverse else range(chunk)

    prod, end = None, None
    for j in order:
        if end is None:
            prod, end = a[:, j], b[:, j]
        else:
            prod, end = a[:, j] * prod, a[:, j] * end + b[:, j]

    def enter(h, summary):
        p, e = summary
        return p * h + e, h

    _, h = jax.lax.scan(enter, h0.astype(b.dtype), (prod, end), reverse=reverse)
    states = [None] * chunk
    for j in order:
        h = a[:, j] * h + b[:, j]
        states[j] = h
    return jnp.stack(states, axis=1).reshape((K * chunk,) + rest)[:T]


def chunked_full(
    a: jax.Array,
    b: jax.Array,
    h0: jax.Array,
    *,
    reverse: bool = False,
    chunk: int | None = None,
) -> jax.Array:
    """All states of ``h_t = A_t h_{t-1} + b_t`` (``A: [T, ..., D, D]``), sequential inside chunks.

    The three passes of `chunked`, each a ``lax.scan`` (over ``chunk`` positions,
    then over the chunks, then over positions again): ``O(T / chunk + chunk)``
    depth, ``chunk = ceil(sqrt(T))`` by default, and a program whose size does
    not grow with ``T`` (an associative scan's grows with ``log T`` and compiles
    slowly on CPU). The tail is padded with identity maps.
    """
    T = b.shape[0]
    chunk = chunk or max(1, math.isqrt(T - 1) + 1)
    chunk = max(1, min(int(chunk), T))
    K = -(-T // chunk)
    pad = K * chunk - T
    D = b.shape[-1]
    if pad:
        eye = jnp.broadcast_to(jnp.eye(D, dtype=a.dtype), (pad,) + a.shape[1:])
        a = jnp.concatenate([a, eye], axis=0)
        b = jnp.pad(b, [(0, pad)] + [(0, 0)] * (b.ndim - 1))
    a = jnp.swapaxes(a.reshape((K, chunk) + a.shape[1:]), 0, 1)
    b = jnp.swapaxes(b.reshape((K, chunk) + b.shape[1:]), 0, 1)
    apply = lambda m, v: jnp.einsum("...ij,...j->...i", m, v)

    def summarise(carry, ab):
        prod, end = carry
        at, bt = ab
        return (at @ prod, apply(at, end) + bt), None

    start = (jnp.broadcast_to(jnp.eye(D, dtype=a.dtype), a.shape[1:]), jnp.zeros_like(b[0]))
    (prods, ends), _ = jax.lax.scan(summarise, start, (a, b), reverse=reverse)

    def enter(h, summary):
        p, e = summary
        return apply(p, h) + e, h

    _, entering = jax.lax.scan(enter, h0.astype(b.dtype), (prods, ends), reverse=reverse)

    def inside(h, ab):
        at, bt = ab
        h = apply(at, h) + bt
        return h, h

    _, hs = jax.lax.scan(inside, entering, (a, b), reverse=reverse)
    hs = jnp.swapaxes(hs, 0, 1).reshape((K * chunk,) + b.shape[2:])
    return hs[:T]


def resolve_method(method: str) -> str:
    """``"auto"`` is the chunked scan on CPU and the associative scan on GPU and TPU."""
    if method == "auto":
        return "chunked" if jax.default_backend() == "cpu" else "associative"
    return method


def _solve(a, b, h0, reverse, method, chunk):
    if method == "chunked":
        return chunked(a, b, h0, reverse=reverse, chunk=chunk)
    return associative(a, b, h0, reverse=reverse)


def previous_states(hs: jax.Array, h0: jax.Array, reverse: bool) -> jax.Array:
    """The state before each step in scan order: ``h_{t-1}`` (``h_{t+1}`` in reverse)."""
    if reverse:
        return jnp.concatenate([hs[1:], h0[None]], axis=0)
    return jnp.concatenate([h0[None], hs[:-1]], axis=0)


def _adjoint(a, g, reverse, method, chunk):
    """``lam_t = g_t + a_{n(t)} lam_{n(t)}``, ``n(t)`` the next step in scan order: the
    cotangent of every ``b_t`` given the cotangents ``g`` of the states (a transposed
    recurrence, run the other way)."""
    following = jnp.roll(a, -1 if not reverse else 1, axis=0)  # a_{n(t)} at t (0 at the end)
    return _solve(following, g, jnp.zeros_like(g[0]), not reverse, method, chunk)


def _pullback(a, h0, hs, g, reverse, method, chunk):
    """Cotangents ``(da, db, dh0)`` of ``h_t = a_t h_{t-1} + b_t`` (JAX's transpose
    convention: no conjugation for complex values)."""
    lam = _adjoint(a, g, reverse, method, chunk)
    first = -1 if reverse else 0
    return lam * previous_states(hs, h0, reverse), lam, lam[first] * a[first]


@partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _recurrence(a, b, h0, reverse, method, chunk):
    return _solve(a, b, h0, reverse, method, chunk)


def _recurrence_fwd(a, b, h0, reverse, method, chunk):
    hs = _solve(a, b, h0, reverse, method, chunk)
    return hs, (a, h0, hs)


def _recurrence_bwd(reverse, method, chunk, residuals, g):
    a, h0, hs = residuals
    return _pullback(a, h0, hs, g, reverse, method, chunk)


_recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


@partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _log_recurrence(log_a, log_b, h0, reverse, method, chunk):
    return log_space(log_a, log_b, h0, reverse=reverse)


def _log_recurrence_fwd(log_a, log_b, h0, reverse, method, chunk):
    hs = log_space(log_a, log_b, h0, reverse=reverse)
    return hs, (log_a, log_b, h0, hs)


def _log_recurrence_bwd(reverse, method, chunk, residuals, g):
    # The states' cotangents propagate back through a = exp(log a) in linear space, which
    # stays finite (0 < a <= 1 for the cells with a log form); then d/dlog x = x d/dx.
    log_a, log_b, h0, hs = residuals
    a = jnp.exp(log_a)
    da, db, dh0 = _pullback(a, h0, hs, g, reverse, method, chunk)
    return da * a, db * jnp.exp(log_b), dh0


_log_recurrence.defvjp(_log_recurrence_fwd, _log_recurrence_bwd)


def solve(
    a: jax.Array,
    b: jax.Array,
    h0: jax.Array,
    *,
    reverse: bool,
    method: str = "auto",
    chunk: int = 8,
) -> jax.Array:
    """All states ``[T, *batch, H]`` of ``h_t = a_t * h_{t-1} + b_t`` by the chosen method.

    Differentiable with a custom VJP: the cotangents come from one more scan of the
    transposed recurrence, backwards (no autodiff through the scan's structure).
    """
    a = jnp.broadcast_to(a, b.shape)
    return _recurrence(a, b, h0, reverse, resolve_method(method), chunk)


def solve_log(
    log_a: jax.Array,
    log_b: jax.Array,
    h0: jax.Array,
    *,
    reverse: bool,
    method: str = "auto",
    chunk: int = 8,
) -> jax.Array:
    """`solve` from ``log a, log b`` (positive ``a, b``) by the log-space associative scan;
    its VJP scans the transposed recurrence in linear space with ``method``."""
    log_a = jnp.broadcast_to(log_a, log_b.shape)
    return _log_recurrence(log_a, log_b, h0, reverse, resolve_method(method), chunk)
