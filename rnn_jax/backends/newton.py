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
- Valid steps and restarts enter the step itself: a step that does not count
  returns its entering state, and at a restart the entering state is the
  restart state (so that step's Jacobian is zero).
- Gradients do not differentiate the iterations: at the solution, the adjoint
  ``lam_t = g_t + J_{t+1}^T lam_{t+1}`` (the implicit function theorem) is one
  more linear recurrence, run backwards in time and solved in parallel (full
  Jacobians: one scan; diagonal: quasi-Newton iterations with exact
  ``J^T lam`` products, falling back to sequential backpropagation if they do
  not converge).

`rnn_jax.newton_scan` (the driver's front end into this backend) returns
``(carry, ys, NewtonInfo(iterations, converged))``; ``rj.backends.Newton(...)``
configures a backend for ``rj.scan`` (which drops the info);
``backend="newton"`` is the default configuration.

``jax.vmap`` of ``rj.scan`` folds the mapped axis into the batch, which the
solver treats as one system (a ``lax.cond`` under ``vmap`` would evaluate both
branches, so the sequential fallback would always run).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from functools import partial
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp

from rnn_jax import _validate
from rnn_jax.backends import linear_solve
from rnn_jax.backends.contract import Backend, Problem
from rnn_jax.backends.linear_solve import METHODS, previous_states, resolve_method
from rnn_jax.backends.masking import zero_where_not
from rnn_jax.cells.cell import initial_carry

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


class Setup(NamedTuple):
    """The static side of one solve: the cell, its flattening and the options."""

    cell: Any
    flat: _Flat
    reverse: bool
    tol: float
    max_iters: int
    full: bool  # full [D, D] Jacobians (DEER), else their diagonals (quasi-DEER)
    method: str
    structured: bool  # the shapes allow the unit-wise diagonal (checked at run time)


class System(NamedTuple):
    """One problem's trajectory equation ``s_t = f(s_{t-1})``, every sequence flattened.

    ``xp [T, N, ...]`` (projected) inputs, ``valid`` and ``starts [T, N]``
    (the steps that count; where the entering state is ``restart [N, D]``),
    ``h0 [N, D]`` the state before the first step in scan order.
    """

    xp: Any
    valid: jax.Array
    starts: jax.Array
    restart: jax.Array
    h0: jax.Array


def advance(cell):
    """The step over a carry and a (projected) input: ``recur`` where the cell splits."""
    return cell.recur if cell.project is not None and cell.recur is not None else cell.step


def entering(h, start, restart):
    return jnp.where(start, restart, h)


def step_one(setup: Setup, params, h, xp, ok, start, restart):
    """One sequence, one step, flat: ``h [D] -> [D]`` (masked and restarted)."""
    e = entering(h, start, restart)
    new, _ = advance(setup.cell)(params, setup.flat.unflatten(e), xp)
    return jnp.where(ok, setup.flat.flatten(new), e)


def step_and_jacobian(setup: Setup, params, h, xp, ok, start, restart):
    """The step and its Jacobian in ``h`` (full, or its diagonal), by forward mode."""
    both = lambda h: (step_one(setup, params, h, xp, ok, start, restart),) * 2
    jac, value = jax.jacfwd(both, has_aux=True)(h)
    return value, (jac if setup.full else jnp.diagonal(jac))


def step_and_unitwise(setup: Setup, params, h, xp, ok, start, restart):
    """The step and its Jacobian's diagonal by `unitwise_diagonal` (one JVP per carry leaf)."""
    e = entering(h, start, restart)
    value, diagonal = unitwise_diagonal(setup.cell.gates, params, setup.flat.unflatten(e), xp)
    value, diagonal = setup.flat.flatten(value), setup.flat.flatten(diagonal)
    # d/dh of where(ok, step(e), e) with e = where(start, restart, h).
    diagonal = jnp.where(start, 0.0, jnp.where(ok, diagonal, 1.0))
    return jnp.where(ok, value, e), diagonal


def over_steps(fn, setup: Setup):
    """``fn(setup, params, h, xp, ok, start, restart)`` mapped over ``[T, N]``."""
    per_sequence = jax.vmap(partial(fn, setup), (None, 0, 0, 0, 0, 0))
    return jax.vmap(per_sequence, (None, 0, 0, 0, 0, None))


def steps_of(setup: Setup, params, prev, system: System):
    """``f`` at every step and sequence from the previous states ``prev [T, N, D]``."""
    f = over_steps(step_one, setup)
    return f(params, prev, system.xp, system.valid, system.starts, system.restart)


def general_jacobians(setup: Setup, params, prev, system: System):
    """Values and Jacobians (full, or diagonals) at every step, within a memory budget."""
    T, N, D = prev.shape
    per_step = jax.vmap(partial(step_and_jacobian, setup), (None, 0, 0, 0, 0, 0))

    def at(args):
        p, x, ok, start = args
        return per_step(params, p, x, ok, start, system.restart)

    args = (prev, system.xp, system.valid, system.starts)
    if setup.full or T * N * D * D <= _JACOBIAN_BUDGET:
        return jax.vmap(at)(args)
    return jax.lax.map(at, args, batch_size=max(1, _JACOBIAN_BUDGET // (N * D * D)))


def values_and_jacobians(setup: Setup, params, prev, system: System, unitwise):
    """Step values and Jacobians at every step: ``unitwise`` (a traced bool, or None where
    the shapes rule it out) picks the cheap diagonal."""
    if unitwise is None:
        return general_jacobians(setup, params, prev, system)
    cheap = over_steps(step_and_unitwise, setup)
    args = (params, prev, system.xp, system.valid, system.starts, system.restart)
    return jax.lax.cond(
        unitwise, lambda: cheap(*args), lambda: general_jacobians(setup, params, prev, system)
    )


def unitwise_applies(setup: Setup, params, system: System):
    """Whether the unit-wise diagonal is the Jacobian's at a generic point of this run (near
    the first step's state and input: a mixing of units shows there); None where the shapes
    rule it out."""
    if not setup.structured:
        return None
    x = jax.tree.map(lambda v: v[0, 0], system.xp)
    h = system.h0[0] + 0.25 * jnp.sin(1.0 + jnp.arange(system.h0.shape[-1], dtype=system.h0.dtype))
    return unitwise_matches(setup.cell, params, setup.flat, h, x)


def linear_states(setup: Setup, a, c, h0, backwards: bool):
    """All states of the linearised recurrence ``s_t = a_t s_{t-1} + c_t``."""
    if setup.full and setup.method == "chunked":
        return linear_solve.chunked_full(a, c, h0, reverse=backwards)
    if setup.full:
        return linear_solve.full(a, c, h0, reverse=backwards)
    return linear_solve.solve(a, c, h0, reverse=backwards, method=setup.method)


def sequential_states(setup: Setup, params, system: System):
    """Every state by the plain loop: the fallback when Newton does not converge."""
    step = jax.vmap(partial(step_one, setup), (None, 0, 0, 0, 0, 0))

    def body(h, inputs):
        x_t, ok_t, start_t = inputs
        h = step(params, h, x_t, ok_t, start_t, system.restart)
        return h, h

    inputs = (system.xp, system.valid, system.starts)
    return jax.lax.scan(body, system.h0, inputs, reverse=setup.reverse)[1]


def change(new, old):
    return jnp.max(jnp.abs(new - old) / (1.0 + jnp.abs(new)))


def newton_states(setup: Setup, params, system: System):
    """``(states [T, N, D], iterations, converged)``: Newton iterations from ``h0`` everywhere;
    the sequential loop's states where they do not converge."""
    unitwise = unitwise_applies(setup, params, system)

    def iterate(states):
        prev = previous_states(states, system.h0, setup.reverse)
        value, jac = values_and_jacobians(setup, params, prev, system, unitwise)
        if setup.full:
            offset = value - jnp.einsum("...ij,...j->...i", jac, prev)
        else:
            offset = value - jac * prev
        return linear_states(setup, jac, offset, system.h0, setup.reverse)

    def cond(state):
        k, _, err = state
        return (k < setup.max_iters) & (err > setup.tol)

    def body(state):
        k, states, _ = state
        new = iterate(states)
        return k + 1, new, change(new, states)

    T = system.valid.shape[0]
    guess = jnp.broadcast_to(system.h0, (T,) + system.h0.shape)
    start = (jnp.int32(0), guess, jnp.asarray(jnp.inf, setup.flat.dtype))
    k, states, err = jax.lax.while_loop(cond, body, start)
    converged = err <= setup.tol
    states = jax.lax.cond(
        converged, lambda: states, lambda: sequential_states(setup, params, system)
    )
    return states, k, converged


def sequential_adjoint(setup: Setup, params, prev, system: System, g):
    """The adjoint by backpropagation step by step: the fallback of the parallel adjoints."""
    step = jax.vmap(partial(step_one, setup), (None, 0, 0, 0, 0, 0))

    def body(carry, inputs):
        p_t, x_t, ok_t, start_t, g_t = inputs
        lam = g_t + carry
        _, back = jax.vjp(lambda h: step(params, h, x_t, ok_t, start_t, system.restart), p_t)
        return back(lam)[0], lam

    inputs = (prev, system.xp, system.valid, system.starts, g)
    return jax.lax.scan(body, jnp.zeros_like(g[0]), inputs, reverse=not setup.reverse)[1]


def adjoint(setup: Setup, params, prev, system: System, g):
    """The adjoint ``lam_t = g_t + J_{n(t)}^T lam_{n(t)}``, ``n(t)`` the next step in scan
    order: one linear recurrence run backwards (full Jacobians), or quasi-Newton iterations
    with exact ``J^T lam`` products (diagonals); step by step where either fails."""
    step_back = -1 if not setup.reverse else 1  # the roll moving J_{next(t)} to position t
    boundary = -1 if not setup.reverse else 0  # the last step in scan order has no next
    zero = jnp.zeros_like(g[0])
    fallback = partial(sequential_adjoint, setup, params, prev, system, g)
    unitwise = unitwise_applies(setup, params, system)
    _, jac = values_and_jacobians(setup, params, prev, system, unitwise)
    if setup.full:
        a = jnp.roll(jnp.swapaxes(jac, -1, -2), step_back, axis=0)
        lam = linear_states(setup, a, g, zero, not setup.reverse)
        return jax.lax.cond(jnp.all(jnp.isfinite(lam)), lambda: lam, fallback)

    _, jvp_t = jax.vjp(lambda p: steps_of(setup, params, p, system), prev)

    def next_transposed(lam):  # (J_{next(t)}^T lam_{next(t)})_t
        moved = jnp.roll(jvp_t(lam)[0], step_back, axis=0)
        return moved.at[boundary].set(0.0)

    a = jnp.roll(jac, step_back, axis=0)
    precondition = lambda r: linear_states(setup, a, r, zero, not setup.reverse)

    def cond(state):
        k, _, err = state
        return (k < setup.max_iters) & (err > setup.tol)

    def body(state):
        k, lam, _ = state
        delta = precondition(g + next_transposed(lam) - lam)
        new = lam + delta
        return k + 1, new, jnp.max(jnp.abs(delta) / (1.0 + jnp.abs(new)))

    start = (jnp.int32(0), precondition(g), jnp.asarray(jnp.inf, setup.flat.dtype))
    _, lam, err = jax.lax.while_loop(cond, body, start)
    return jax.lax.cond(err <= setup.tol, lambda: lam, fallback)


@partial(jax.custom_vjp, nondiff_argnums=(0,))
def trajectory(setup: Setup, params, system: System):
    """``(states [T, N, D], iterations, converged)``, differentiated by the implicit adjoint."""
    return newton_states(setup, params, system)


def _trajectory_fwd(setup, params, system):
    states, k, converged = newton_states(setup, params, system)
    return (states, k, converged), (params, system, states)


def _trajectory_bwd(setup, residuals, cotangents):
    params, system, states = residuals
    g = cotangents[0]
    prev = previous_states(states, system.h0, setup.reverse)
    lam = adjoint(setup, params, prev, system, g)

    def steps(q, p, x, r):
        return steps_of(setup, q, p, system._replace(xp=x, restart=r))

    _, pullback = jax.vjp(steps, params, prev, system.xp, system.restart)
    d_params, d_prev, d_xp, d_restart = pullback(lam)
    d_h0 = d_prev[-1] if setup.reverse else d_prev[0]
    return d_params, System(d_xp, None, None, d_restart, d_h0)


trajectory.defvjp(_trajectory_fwd, _trajectory_bwd)


def outputs(setup: Setup, params, prev, system: System):
    """Every step's output from the state before it (restarted where a segment starts)."""

    def output_one(params, h, xp, start, restart):
        e = setup.flat.unflatten(entering(h, start, restart))
        return advance(setup.cell)(params, e, xp)[1]

    per_sequence = jax.vmap(output_one, (None, 0, 0, 0, 0))
    all_steps = jax.vmap(per_sequence, (None, 0, 0, 0, None))
    ys = all_steps(params, prev, system.xp, system.starts, system.restart)
    return zero_where_not(system.valid, ys)


def solve(cell, params, problem: Problem, *, tol, max_iters, jacobian, method):
    """``(carry, ys, info)`` of a `Problem` with steps and sequences by Newton iterations."""
    T, N = problem.steps, problem.batch
    one_sequence = problem.xs.shape[2:]  # one step of one sequence: [*features]
    flat = _flat_carry(jax.eval_shape(lambda p: initial_carry(cell, p, one_sequence), params))
    h0 = flat.flatten(problem.initial_state)
    full = jacobian == "full" or (jacobian == "auto" and flat.size <= FULL_JACOBIAN_MAX_STATE)
    setup = Setup(
        cell=cell,
        flat=flat,
        reverse=problem.reverse,
        tol=_default_tol(flat.dtype) if tol is None else float(tol),
        max_iters=int(max_iters),
        full=full,
        method=resolve_method(method),
        structured=not full and has_unitwise_shape(cell, params, flat),
    )
    hoist = cell.project is not None and cell.recur is not None
    xp = cell.project(params, problem.xs) if hoist else problem.xs
    no_steps = jnp.zeros((T, N), bool)
    system = System(
        xp=xp,
        valid=jnp.ones((T, N), bool) if problem.valid is None else problem.valid,
        starts=no_steps if problem.starts is None else problem.starts,
        restart=jnp.zeros_like(h0)
        if problem.starts is None
        else flat.flatten(problem.restart_state),
        h0=h0,
    )
    states, k, converged = trajectory(setup, params, system)
    prev = previous_states(states, h0, problem.reverse)
    ys = outputs(setup, params, prev, system)
    final = flat.unflatten(states[0] if problem.reverse else states[-1])
    return final, ys, NewtonInfo(k, converged)


@dataclass(frozen=True)
class Newton(Backend):
    """The ``newton`` backend with the given options (`rnn_jax.newton_scan` also reports how
    the iterations went).

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

    Example:
        >>> backend = rj.backends.Newton(jacobian="diagonal", max_iters=200)
        >>> cell = rj.lstm(8)
        >>> params = cell.init(jax.random.key(0), 4)
        >>> carry, ys = rj.scan(cell, params, jnp.ones((64, 4)), backend=backend)
    """

    name = "newton"
    tol: float | None = None
    max_iters: int = 64
    jacobian: Literal["auto", "full", "diagonal"] = "auto"
    method: Literal["auto", "associative", "chunked"] = "auto"

    def __post_init__(self):
        _validate.optional_positive_number("tol", self.tol)
        _validate.non_negative_int("max_iters", self.max_iters)
        _validate.one_of("jacobian", self.jacobian, JACOBIANS)
        _validate.one_of("method", self.method, METHODS)

    def solve(self, cell, params, problem: Problem) -> tuple[Any, Any, NewtonInfo]:
        """``(final_carry, ys, NewtonInfo)`` of a problem with steps and sequences."""
        options = {f.name: getattr(self, f.name) for f in fields(self)}
        return solve(cell, params, problem, **options)

    def run(self, cell, params, problem: Problem):
        carry, ys, _ = self.solve(cell, params, problem)
        return carry, ys
