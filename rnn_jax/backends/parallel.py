"""The ``parallel`` backend: scans over a cell's linear recurrence ``h_t = a_t h_{t-1} + b_t``.

For cells with a `LinearRecurrence` (``cell.linear``: min_gru, min_lstm, lru,
rg_lru), all coefficients ``(a, b)`` come from the inputs at once; the states are
then one solve of the recurrence (`rnn_jax.backends.linear_solve`) and the outputs
one map over all states. Methods:

- ``"associative"``: ``lax.associative_scan``, ``O(log T)`` depth; the form for
  GPUs and TPUs.
- ``"chunked"``: sequential inside short chunks (fused, unrolled), a scan across
  chunks; fewer loop iterations, for long sequences of small states on CPU.
- ``log_space=True``: the associative scan over ``(log a, log b)`` for cells
  whose coefficients are positive (``linear.log_coefficients``: min_gru,
  min_lstm). States from a zero start are positive, so they are carried as
  logarithms; the initial state (of any sign) adds ``exp(sum log a) * h0``
  exactly. Finite over any length (tested at 65,536 steps).

Lengths, reversal and initial states are exact: steps past a sequence's length
become ``a = 1, b = 0`` (the carry passes through; ``log a = 0, log b = -inf`` in
log space) and their outputs are zero; ``reverse=True`` scans from the end, so the
padding (at the end) is passed first and changes nothing; ``h0`` enters at the
first step in scan order.

`parallel_backend` configures one; ``backend="parallel"`` is the default
configuration (``method="auto"``: the associative scan on GPU and TPU, the
chunked scan on CPU, where it measures better than an associative scan).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from rnn_jax.backends import linear_solve
from rnn_jax.backends.masking import expand_to, zero_where_not
from rnn_jax.backends.registry import Backend, register_backend

METHODS = ("auto", "associative", "chunked")


def require_linear(cell, backend: str = "parallel", *, log_space: bool = False):
    """``cell.linear``, or a ValueError naming the cell and the backends that do apply."""
    linear = getattr(cell, "linear", None)
    if linear is None:
        raise ValueError(
            f"the {backend} backend needs a cell with a linear recurrence (cell.linear, as "
            f"min_gru, min_lstm, lru and rg_lru have); the {cell.name} cell has none: use "
            "backend='newton' (parallel in time for any cell) or backend='sequential'"
        )
    if log_space and linear.log_coefficients is None:
        raise ValueError(
            f"log_space=True needs positive coefficients (linear.log_coefficients, as min_gru "
            f"and min_lstm have); the {cell.name} cell has none: use log_space=False"
        )
    return linear


def valid_steps(length: jax.Array | None, steps: int) -> jax.Array | None:
    """``[T, *batch]`` booleans: step ``t`` of a sequence counts when ``t < length``."""
    if length is None:
        return None
    t = jnp.arange(steps).reshape((steps,) + (1,) * length.ndim)
    return t < length


def resolve_method(method: str) -> str:
    """``"auto"`` is the chunked scan on CPU and the associative scan on GPU and TPU."""
    if method == "auto":
        return "chunked" if jax.default_backend() == "cpu" else "associative"
    return method


def _solve(a, b, h0, reverse, method, chunk):
    if method == "chunked":
        return linear_solve.chunked(a, b, h0, reverse=reverse, chunk=chunk)
    return linear_solve.associative(a, b, h0, reverse=reverse)


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
    return linear_solve.log_space(log_a, log_b, h0, reverse=reverse)


def _log_recurrence_fwd(log_a, log_b, h0, reverse, method, chunk):
    hs = linear_solve.log_space(log_a, log_b, h0, reverse=reverse)
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


def parallel_scan(
    cell,
    params,
    xs: jax.Array,
    *,
    initial_state: jax.Array,
    length: jax.Array | None = None,
    reverse: bool = False,
    method: str = "auto",
    chunk: int = 8,
    log_space: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """``(final_carry, ys)`` of a linear-recurrence cell, as the reference scan gives them.

    Arguments as `rnn_jax.backends` (already validated; ``initial_state`` given),
    plus the method options of `parallel_backend`.
    """
    linear = require_linear(cell, log_space=log_space)
    T = xs.shape[0]
    h0 = initial_state
    if T == 0:
        return h0, linear.output(params, jnp.zeros(xs.shape[:-1] + h0.shape[-1:], h0.dtype), xs)
    valid = valid_steps(length, T)
    if log_space:
        log_a, log_b = linear.log_coefficients(params, xs)
        log_b = log_b.astype(h0.dtype)
        log_a = jnp.broadcast_to(log_a, log_b.shape).astype(h0.dtype)
        if valid is not None:
            keep = expand_to(valid, log_b)
            log_a = jnp.where(keep, log_a, 0.0)
            log_b = jnp.where(keep, log_b, -jnp.inf)
        hs = solve_log(log_a, log_b, h0, reverse=reverse, method=method, chunk=chunk)
    else:
        a, b = linear.coefficients(params, xs)
        dtype = jnp.result_type(a, b, h0)
        b = b.astype(dtype)
        a = jnp.broadcast_to(a, b.shape).astype(dtype)
        if valid is not None:
            keep = expand_to(valid, b)
            a = jnp.where(keep, a, jnp.ones_like(a))
            b = jnp.where(keep, b, jnp.zeros_like(b))
        hs = solve(a, b, h0.astype(dtype), reverse=reverse, method=method, chunk=chunk)
    hs = hs.astype(h0.dtype)
    final = hs[0] if reverse else hs[-1]
    ys = linear.output(params, hs, xs)
    if valid is not None:
        ys = zero_where_not(valid, ys)
    return final, ys


def parallel_backend(
    *,
    method: str = "auto",
    chunk: int = 8,
    log_space: bool = False,
    name: str = "parallel",
) -> Backend:
    """A ``parallel`` backend configured with a scan method.

    Args:
        method: ``"associative"`` (``lax.associative_scan``), ``"chunked"``
            (sequential inside chunks of ``chunk`` steps, a scan across them)
            or ``"auto"`` (chunked on CPU, associative elsewhere).
        chunk: steps per chunk of the chunked method (small: 4 to 16).
        log_space: scan ``(log a, log b)`` (associative); for cells with
            positive coefficients (min_gru, min_lstm), finite over any length.
        name: the backend's name.

    Example:
        >>> cell = rj.min_gru(16)
        >>> params = cell.init(jax.random.key(0), 4)
        >>> backend = rj.parallel_backend(log_space=True)
        >>> carry, ys = rj.scan(cell, params, jnp.ones((1000, 4)), backend=backend)
        >>> bool(jnp.isfinite(ys).all())
        True
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive int; got {chunk!r}")
    if log_space and method == "chunked":
        raise ValueError("log_space=True scans associatively; use method='auto' or 'associative'")

    def run(cell, params, xs, *, initial_state, length, reverse, unroll):
        del unroll
        return parallel_scan(
            cell,
            params,
            xs,
            initial_state=initial_state,
            length=length,
            reverse=reverse,
            method=method,
            chunk=chunk,
            log_space=log_space,
        )

    return Backend(name, run)


parallel = register_backend(parallel_backend())
