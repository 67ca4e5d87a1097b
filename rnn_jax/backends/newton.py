"""The ``newton`` backend: DEER / quasi-DEER, parallel in time for any cell.

DEER (Lim et al. 2023) treats the whole trajectory ``s_1 .. s_T`` of states as
the unknown of ``s_t = f(s_{t-1}, x_t)`` and solves it by Newton's method: each
iteration linearises every step around the current guess,
``s_t = J_t s_{t-1} + (f(p_t, x_t) - J_t p_t)`` with ``p_t`` the guess of ``s_{t-1}``
and ``J_t = df/ds`` there, and solves that linear recurrence with one parallel
scan (`rnn_jax.backends.linear_solve`). Quasi-DEER (Gonzalez et al. 2024) keeps only
the diagonal of ``J_t``: ``O(T D)`` memory and elementwise scans instead of
``O(T D^2)`` and matrix products, at the price of more iterations.

- Carries of any structure (``LSTMState``, complex LRU states) are flattened to
  one real vector of size ``D`` per sequence.
- ``jacobian="full"`` uses the ``[D, D]`` Jacobians (exact Newton; for small
  states), ``"diagonal"`` their diagonals, ``"auto"`` full for ``D <= 32``.
  A diagonal costs one JVP per carry leaf for cells whose `Gates` step is
  unit-wise (`unitwise_diagonal`; checked at run time against the exact
  diagonal at one point, so no cell is named here), else the diagonal of the
  full Jacobian (``D`` JVPs). Either way only convergence speed depends on it:
  the residual of every iteration uses the exact step.
- The iteration stops when no state moves by more than ``tol * (1 + |s|)``, or
  after ``max_iters``; if it has not converged then (or produced non-finite
  values), the result is the sequential scan's (``lax.cond``), so the answer is
  always the reference's up to ``tol``.
- Gradients do not differentiate the iterations: at the solution, the adjoint
  ``lam_t = g_t + J_{t+1}^T lam_{t+1}`` (the implicit function theorem) is one
  more linear recurrence, run backwards in time and solved in parallel (full
  Jacobians: one scan; diagonal: quasi-Newton iterations with exact
  ``J^T lam`` products, falling back to sequential backpropagation if they do
  not converge).

`newton_scan` returns ``(carry, ys, NewtonInfo(iterations, converged))``;
`newton_backend` configures a `Backend` for ``rj.scan`` (which drops the
info); ``backend="newton"`` is the default configuration.

Under ``jax.vmap`` of the whole scan, ``lax.cond`` evaluates both branches, so
the sequential fallback always runs: batch inside the scan (``xs [T, B, F]``)
instead, which the solver treats as one system.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnn_jax.backends import linear_solve
from rnn_jax.backends.masking import zero_where_not
from rnn_jax.backends.parallel import METHODS, previous_states, resolve_method, valid_steps
from rnn_jax.backends.parallel import solve as solve_diagonal
from rnn_jax.backends.registry import Backend, register_backend
from rnn_jax.backends.validation import check_initial_state, check_length, check_xs

JACOBIANS = ("auto", "full", "diagonal")
FULL_JACOBIAN_MAX_STATE = 32
# Jacobian entries materialised at once by the diagonal mode (it evaluates the full [D, D]
# Jacobian of a slice of steps and keeps the diagonal).
_JACOBIAN_BUDGET = 2**24


class NewtonInfo(NamedTuple):
    """How a Newton solve went: ``iterations`` done (int32) and whether it ``converged`` (bool).

    When ``converged`` is False the returned trajectory is the sequential scan's.
    """

    iterations: jax.Array
    converged: jax.Array


class _Flat(NamedTuple):
    flatten: Any  # carry with leading axes L -> [*L, D] real
    unflatten: Any  # [*L, D] -> carry with leading axes L
    size: int
    dtype: Any


def _flat_carry(example) -> _Flat:
    """Flattening of a carry (``example``: one sequence's carry, batch shape ``()``)."""
    leaves, treedef = jax.tree.flatten(example)
    shapes = [tuple(leaf.shape) for leaf in leaves]
    dtypes = [jnp.dtype(leaf.dtype) for leaf in leaves]
    complex_ = [jnp.issubdtype(dt, jnp.complexfloating) for dt in dtypes]
    reals = [jnp.finfo(dt).dtype for dt in dtypes]
    real = jnp.result_type(*reals) if reals else jnp.float32
    sizes = [math.prod(s) * (2 if c else 1) for s, c in zip(shapes, complex_, strict=True)]

    def flatten(carry):
        parts = []
        for leaf, shape, is_complex in zip(jax.tree.leaves(carry), shapes, complex_, strict=True):
            v = leaf.reshape(leaf.shape[: leaf.ndim - len(shape)] + (-1,))
            parts += [v.real, v.imag] if is_complex else [v]
        return jnp.concatenate([p.astype(real) for p in parts], axis=-1)

    def unflatten(vec):
        lead, out, i = vec.shape[:-1], [], 0
        for shape, dt, is_complex, n in zip(shapes, dtypes, complex_, sizes, strict=True):
            if is_complex:
                half = n // 2
                v = jax.lax.complex(vec[..., i : i + half], vec[..., i + half : i + n])
            else:
                v = vec[..., i : i + n]
            out.append(v.astype(dt).reshape(lead + shape))
            i += n
        return treedef.unflatten(out)

    return _Flat(flatten, unflatten, sum(sizes), real)


def has_unitwise_shape(cell, params, flat: _Flat) -> bool:
    """Whether `unitwise_diagonal` can be evaluated for ``cell`` (shapes only, at trace time).

    It needs `Gates` and a split step, a fed-back state of ``H`` units, a
    recurrent kernel ``[H, G*H]`` and a real carry whose every leaf has ``H``
    units. Whether its result is the Jacobian's diagonal depends on the cell's
    arithmetic, which `_build` checks at run time (`probe`).
    """
    gates = cell.gates
    if gates is None or cell.project is None or cell.recur is None:
        return False
    carry = jax.eval_shape(flat.unflatten, jax.ShapeDtypeStruct((flat.size,), flat.dtype))
    leaves = jax.tree.leaves(carry)
    fed = jax.eval_shape(gates.fed_back, carry)
    kernel = jax.eval_shape(gates.kernel, params)
    if len(fed.shape) != 1 or len(kernel.shape) != 2:
        return False
    H = fed.shape[0]
    return (
        kernel.shape[0] == H
        and kernel.shape[1] % H == 0
        and all(leaf.shape == (H,) for leaf in leaves)
        and not any(jnp.issubdtype(leaf.dtype, jnp.complexfloating) for leaf in leaves)
    )


def unitwise_diagonal(gates, params, carry, xp):
    """``(new_carry, diagonal)`` of a `Gates` cell's step, for one sequence, assuming the
    cell is unit-wise.

    Unit-wise: unit ``i`` of every carry leaf depends only on unit ``i`` of each
    carry leaf and on columns ``i, H + i, 2H + i, ...`` of the recurrent
    pre-activation ``hu = fed_back(carry) @ K`` (``K [H, G*H]``), and
    ``fed_back`` is elementwise: true of ``simple``, ``gru`` (reset after the
    matmul) and ``lstm`` (with or without peepholes); false where a layer norm
    or a projection mixes units. Then the diagonal entry of carry leaf ``L``,
    unit ``i``, is ``d out_i / d carry_i`` plus
    ``sum_g d out_i / d hu[g*H + i] * K[i, g*H + i] * d fed_back_i / d carry_i``:
    one JVP of ``combine`` per carry leaf (tangent: ones on that leaf, the
    diagonals of ``K``'s gate blocks on ``hu``), no matmul with the tangents.
    For a cell that is not unit-wise the result is not the diagonal.
    """
    kernel = gates.kernel(params)
    fed = gates.fed_back(carry)
    H = fed.shape[-1]
    hu = fed @ kernel
    blocks = kernel.shape[-1] // H
    k_diag = jnp.concatenate(
        [jnp.diagonal(kernel[:, g * H : (g + 1) * H]) for g in range(blocks)], axis=-1
    )
    step = lambda c, u: gates.combine(params, c, xp, u)[0]
    leaves, treedef = jax.tree.flatten(carry)
    new, diagonal = None, []
    for index in range(len(leaves)):
        ones = treedef.unflatten(
            [jnp.ones_like(x) if j == index else jnp.zeros_like(x) for j, x in enumerate(leaves)]
        )
        _, through_fed = jax.jvp(gates.fed_back, (carry,), (ones,))
        tangent_hu = k_diag * jnp.tile(through_fed, blocks)
        new, d = jax.jvp(step, (carry, hu), (ones, tangent_hu))
        diagonal.append(jax.tree.leaves(d)[index])
    return new, treedef.unflatten(diagonal)


def unitwise_matches(cell, params, flat: _Flat, h: jax.Array, xp) -> jax.Array:
    """Whether `unitwise_diagonal` equals the exact diagonal of the step's Jacobian at the
    flat state ``h [D]`` and projected input ``xp`` (a traced bool, to 1e-4)."""
    step = lambda h: flat.flatten(cell.recur(params, flat.unflatten(h), xp)[0])
    exact = jnp.diagonal(jax.jacfwd(step)(h))
    _, guess = unitwise_diagonal(cell.gates, params, flat.unflatten(h), xp)
    return jnp.all(jnp.abs(flat.flatten(guess) - exact) <= 1e-4 * (1.0 + jnp.abs(exact)))


def _default_tol(dtype) -> float:
    return 100.0 * float(jnp.finfo(dtype).eps)


class _Solver(NamedTuple):
    states: Any  # (params, xp, h0, valid) -> (states [T, N, D], iterations, converged)
    outputs: Any  # (params, prev [T, N, D], xp) -> ys [T, N, ...]
    shift: Any  # (states, h0) -> prev


def _build(
    cell, flat: _Flat, *, reverse, tol, max_iters, full, masked, method, structured
) -> _Solver:
    """The Newton solver of one cell and configuration, with its implicit-gradient rule."""
    hoist = cell.project is not None and cell.recur is not None
    advance = cell.recur if hoist else cell.step

    def f1(params, h, xp, ok):  # one sequence, one step: h [D] -> [D]
        new, _ = advance(params, flat.unflatten(h), xp)
        new = flat.flatten(new)
        return jnp.where(ok, new, h) if masked else new

    over_batch = jax.vmap(f1, (None, 0, 0, 0))
    over_all = jax.vmap(over_batch, (None, 0, 0, 0))

    def f1_and_jacobian(params, h, xp, ok):
        both = lambda h: (f1(params, h, xp, ok),) * 2
        jac, value = jax.jacfwd(both, has_aux=True)(h)
        return value, (jac if full else jnp.diagonal(jac))

    def f1_and_unitwise(params, h, xp, ok):  # one JVP per carry leaf; see unitwise_diagonal
        value, diagonal = unitwise_diagonal(cell.gates, params, flat.unflatten(h), xp)
        value, diagonal = flat.flatten(value), flat.flatten(diagonal)
        if masked:
            return jnp.where(ok, value, h), jnp.where(ok, diagonal, 1.0)
        return value, diagonal

    general_batch = jax.vmap(f1_and_jacobian, (None, 0, 0, 0))
    unitwise_batch = jax.vmap(f1_and_unitwise, (None, 0, 0, 0))

    def probe(params, h0, xp):
        """Whether the unit-wise diagonal is the Jacobian's at a generic point of this run
        (near the first step's state and input): a mixing of units shows there."""
        x = jax.tree.map(lambda v: v[0, 0], xp)
        h = h0[0] + 0.25 * jnp.sin(1.0 + jnp.arange(h0.shape[-1], dtype=h0.dtype))
        return unitwise_matches(cell, params, flat, h, x)

    def general(params, prev, xp, valid):
        T, N, D = prev.shape
        per_step = lambda args: general_batch(params, *args)
        if full or T * N * D * D <= _JACOBIAN_BUDGET:
            return jax.vmap(per_step)((prev, xp, valid))
        batch = max(1, _JACOBIAN_BUDGET // (N * D * D))
        return jax.lax.map(per_step, (prev, xp, valid), batch_size=batch)

    def values_and_jacobians(params, prev, xp, valid, unitwise):
        """Step values and Jacobians (full, or diagonals) at every step: ``unitwise`` (a
        traced bool, or None where the shapes rule it out) picks the cheap diagonal."""
        if unitwise is None:
            return general(params, prev, xp, valid)
        cheap = lambda: jax.vmap(lambda *a: unitwise_batch(params, *a))(prev, xp, valid)
        return jax.lax.cond(unitwise, cheap, lambda: general(params, prev, xp, valid))

    def check_unitwise(params, h0, xp):
        return probe(params, h0, xp) if structured else None

    def shift(states, h0):
        return previous_states(states, h0, reverse)

    def lin_solve(a, c, h0, backwards):
        if full and method == "chunked":
            return linear_solve.chunked_full(a, c, h0, reverse=backwards)
        if full:
            return linear_solve.full(a, c, h0, reverse=backwards)
        return solve_diagonal(a, c, h0, reverse=backwards, method=method)

    def sequential(params, xp, h0, valid):
        def body(h, inputs):
            x_t, ok_t = inputs
            h = over_batch(params, h, x_t, ok_t)
            return h, h

        return jax.lax.scan(body, h0, (xp, valid), reverse=reverse)[1]

    def error(new, old):
        return jnp.max(jnp.abs(new - old) / (1.0 + jnp.abs(new)))

    def newton(params, xp, h0, valid):
        unitwise = check_unitwise(params, h0, xp)

        def iterate(states):
            prev = shift(states, h0)
            value, jac = values_and_jacobians(params, prev, xp, valid, unitwise)
            if full:
                offset = value - jnp.einsum("...ij,...j->...i", jac, prev)
            else:
                offset = value - jac * prev
            return lin_solve(jac, offset, h0, reverse)

        def cond(state):
            k, _, err = state
            return (k < max_iters) & (err > tol)

        def body(state):
            k, states, _ = state
            new = iterate(states)
            return k + 1, new, error(new, states)

        T = valid.shape[0]
        guess = jnp.broadcast_to(h0, (T,) + h0.shape)
        start = (jnp.int32(0), guess, jnp.asarray(jnp.inf, flat.dtype))
        k, states, err = jax.lax.while_loop(cond, body, start)
        converged = err <= tol
        states = jax.lax.cond(converged, lambda: states, lambda: sequential(params, xp, h0, valid))
        return states, k, converged

    def adjoint(params, prev, xp, h0, valid, g):
        """The adjoint ``lam_t = g_t + J_{n(t)}^T lam_{n(t)}``, ``n(t)`` the next step."""
        step_back = -1 if not reverse else 1  # roll that moves J_{next(t)} to position t
        boundary = -1 if not reverse else 0  # the last step in scan order has no next
        _, jvp_t = jax.vjp(lambda p: over_all(params, p, xp, valid), prev)

        def next_transposed(lam):  # (J_{next(t)}^T lam_{next(t)})_t
            moved = jnp.roll(jvp_t(lam)[0], step_back, axis=0)
            return moved.at[boundary].set(0.0)

        def sequential_adjoint():
            def body(carry, inputs):
                p_t, x_t, ok_t, g_t = inputs
                lam = g_t + carry
                _, back = jax.vjp(lambda h: over_batch(params, h, x_t, ok_t), p_t)
                return back(lam)[0], lam

            zero = jnp.zeros_like(g[0])
            return jax.lax.scan(body, zero, (prev, xp, valid, g), reverse=not reverse)[1]

        _, jac = values_and_jacobians(params, prev, xp, valid, check_unitwise(params, h0, xp))
        if full:
            a = jnp.roll(jnp.swapaxes(jac, -1, -2), step_back, axis=0)
            lam = lin_solve(a, g, jnp.zeros_like(g[0]), not reverse)
            ok = jnp.all(jnp.isfinite(lam))
            return jax.lax.cond(ok, lambda: lam, sequential_adjoint)

        a = jnp.roll(jac, step_back, axis=0)
        zero = jnp.zeros_like(g[0])
        precondition = lambda r: lin_solve(a, r, zero, not reverse)

        def cond(state):
            k, _, err = state
            return (k < max_iters) & (err > tol)

        def body(state):
            k, lam, _ = state
            delta = precondition(g + next_transposed(lam) - lam)
            new = lam + delta
            return k + 1, new, jnp.max(jnp.abs(delta) / (1.0 + jnp.abs(new)))

        start = (jnp.int32(0), precondition(g), jnp.asarray(jnp.inf, flat.dtype))
        _, lam, err = jax.lax.while_loop(cond, body, start)
        return jax.lax.cond(err <= tol, lambda: lam, sequential_adjoint)

    @jax.custom_vjp
    def states_of(params, xp, h0, valid):
        return newton(params, xp, h0, valid)

    def states_fwd(params, xp, h0, valid):
        states, k, converged = newton(params, xp, h0, valid)
        return (states, k, converged), (params, xp, h0, valid, states)

    def states_bwd(residuals, cotangents):
        params, xp, h0, valid, states = residuals
        g = cotangents[0]
        prev = shift(states, h0)
        lam = adjoint(params, prev, xp, h0, valid, g)
        _, pullback = jax.vjp(lambda q, p, x: over_all(q, p, x, valid), params, prev, xp)
        d_params, d_prev, d_xp = pullback(lam)
        d_h0 = d_prev[-1] if reverse else d_prev[0]
        return d_params, d_xp, d_h0, None

    states_of.defvjp(states_fwd, states_bwd)

    def output1(params, h, xp):
        return advance(params, flat.unflatten(h), xp)[1]

    outputs = jax.vmap(jax.vmap(output1, (None, 0, 0)), (None, 0, 0))
    return _Solver(states_of, outputs, shift)


def _solve(cell, params, xs, initial_state, length, reverse, *, tol, max_iters, jacobian, method):
    """``(carry, ys, info)`` for validated arguments."""
    T = xs.shape[0]
    batch = xs.shape[1:-1]
    N = math.prod(batch)
    example = jax.eval_shape(lambda p: cell.initial_state(p, ()), params)
    flat = _flat_carry(example)
    full = jacobian == "full" or (jacobian == "auto" and flat.size <= FULL_JACOBIAN_MAX_STATE)
    tol = _default_tol(flat.dtype) if tol is None else float(tol)

    def to_rows(leaf):  # [*batch, ...] -> [N, ...]
        return leaf.reshape((N,) + leaf.shape[len(batch) :])

    h0 = flat.flatten(jax.tree.map(to_rows, initial_state))
    if T == 0:
        x = jax.ShapeDtypeStruct(xs.shape[1:], xs.dtype)
        y = jax.eval_shape(lambda p, c, x: cell.step(p, c, x)[1], params, initial_state, x)
        ys = jax.tree.map(lambda s: jnp.zeros((0,) + s.shape, s.dtype), y)
        info = NewtonInfo(jnp.int32(0), jnp.bool_(True))
        return initial_state, ys, info
    solver = _build(
        cell,
        flat,
        reverse=reverse,
        tol=tol,
        max_iters=int(max_iters),
        full=full,
        masked=length is not None,
        method=resolve_method(method),
        structured=not full and has_unitwise_shape(cell, params, flat),
    )
    rows = xs.reshape((T, N, xs.shape[-1]))
    xp = cell.project(params, rows) if cell.project is not None and cell.recur else rows
    valid = valid_steps(length, T)
    valid = jnp.ones((T, N), bool) if valid is None else valid.reshape((T, N))
    states, k, converged = solver.states(params, xp, h0, valid)
    prev = solver.shift(states, h0)
    ys = solver.outputs(params, prev, xp)
    ys = zero_where_not(valid, ys)
    ys = jax.tree.map(lambda y: y.reshape((T, *batch) + y.shape[2:]), ys)
    final = flat.unflatten(states[0] if reverse else states[-1])
    final = jax.tree.map(lambda leaf: leaf.reshape(batch + leaf.shape[1:]), final)
    return final, ys, NewtonInfo(k, converged)


def _check_options(tol, max_iters, jacobian, method):
    if tol is not None and not (isinstance(tol, int | float) and tol > 0):
        raise ValueError(f"tol must be a positive number or None; got {tol!r}")
    if isinstance(max_iters, bool) or not isinstance(max_iters, int) or max_iters < 0:
        raise ValueError(f"max_iters must be a non-negative int; got {max_iters!r}")
    if jacobian not in JACOBIANS:
        raise ValueError(f"jacobian must be one of {JACOBIANS}; got {jacobian!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")


def newton_scan(
    cell,
    params,
    xs: jax.Array,
    *,
    initial_state: Any = None,
    length: jax.Array | None = None,
    reverse: bool = False,
    tol: float | None = None,
    max_iters: int = 64,
    jacobian: str = "auto",
    method: str = "auto",
) -> tuple[Any, Any, NewtonInfo]:
    """``rj.scan`` by Newton iterations (DEER), also reporting how they went.

    Arguments as `rnn_jax.backends`, and:

    Args:
        tol: convergence when no state moves by more than ``tol * (1 + |s|)``
            in an iteration; default ``100 * eps`` of the state dtype
            (1.2e-5 for float32).
        max_iters: Newton iterations before falling back to the sequential
            scan. In exact arithmetic the iteration is exact after ``T``.
        jacobian: ``"full"`` (DEER), ``"diagonal"`` (quasi-DEER) or
            ``"auto"`` (full for states of at most 32 numbers).
        method: how each linearised recurrence is solved: ``"associative"``
            (``lax.associative_scan``, ``O(log T)`` depth), ``"chunked"``
            (sequential inside chunks, a scan across them; compiles faster)
            or ``"auto"`` (chunked on CPU, associative elsewhere).

    Returns:
        ``(final_carry, ys, NewtonInfo(iterations, converged))``; when not
        converged, carry and outputs are the sequential scan's.

    Example:
        >>> cell = rj.gru(8)
        >>> params = cell.init(jax.random.key(0), 4)
        >>> carry, ys, info = rj.newton_scan(cell, params, jnp.ones((256, 2, 4)))
        >>> bool(info.converged), int(info.iterations) < 64
        (True, True)
    """
    _check_options(tol, max_iters, jacobian, method)
    batch_shape = check_xs(cell, params, xs)
    length = check_length(length, batch_shape, xs.shape[0])
    initial_state = check_initial_state(cell, params, initial_state, batch_shape)
    return _solve(
        cell,
        params,
        xs,
        initial_state,
        length,
        bool(reverse),
        tol=tol,
        max_iters=max_iters,
        jacobian=jacobian,
        method=method,
    )


def newton_backend(
    *,
    tol: float | None = None,
    max_iters: int = 64,
    jacobian: str = "auto",
    method: str = "auto",
    name: str = "newton",
) -> Backend:
    """A ``newton`` backend with the given options (see `newton_scan`).

    Example:
        >>> backend = rj.newton_backend(jacobian="diagonal", max_iters=200)
        >>> cell = rj.lstm(8)
        >>> params = cell.init(jax.random.key(0), 4)
        >>> carry, ys = rj.scan(cell, params, jnp.ones((64, 4)), backend=backend)
    """
    _check_options(tol, max_iters, jacobian, method)

    def run(cell, params, xs, *, initial_state, length, reverse, unroll):
        del unroll
        carry, ys, _ = _solve(
            cell,
            params,
            xs,
            initial_state,
            length,
            reverse,
            tol=tol,
            max_iters=max_iters,
            jacobian=jacobian,
            method=method,
        )
        return carry, ys

    return Backend(name, run)


newton = register_backend(newton_backend())
