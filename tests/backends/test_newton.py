"""The ``newton`` backend (DEER / quasi-DEER) equals the reference scan.

gru, lstm and simple at T = 1,024 within 1e-4 in values and gradients (both
directions, lengths, initial states); the diagonal (quasi-DEER) mode; the
iteration report; the sequential fallback when it does not converge; gradients
by the implicit function theorem; and option errors in words.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scan_helpers import value_and_grads_both_ways

import rnn_jax as rj
from rnn_jax.backends.newton import (
    _flat_carry,
    has_unitwise_shape,
    unitwise_diagonal,
    unitwise_matches,
)

F = 3
CELLS = {
    "gru": rj.gru(12),
    "lstm": rj.lstm(8),  # a pytree carry: 16 numbers per sequence
    "simple": rj.simple(12),
    "lru": rj.lru(4),  # a complex carry, flattened to 8 reals
}
BACKENDS = {
    "newton": "newton",
    "diagonal": rj.backends.Newton(jacobian="diagonal", max_iters=400),
    "associative": rj.backends.Newton(method="associative"),
}


def problem(name, steps, batch=2, seed=0):
    cell = CELLS[name]
    params = cell.init(jax.random.key(seed), F)
    rng = np.random.default_rng(seed)
    xs = jnp.asarray(rng.standard_normal((steps, batch, F)), jnp.float32)
    h0 = jax.tree.map(
        lambda leaf: jnp.asarray(0.5 * rng.standard_normal(leaf.shape), leaf.dtype),
        cell.initial_state(params, (batch,)),
    )
    return cell, params, xs, h0


@partial(jax.jit, static_argnames=("name", "method"))
def value_and_grads(params, xs, h0, length, *, name, method):
    """Both directions' outputs and final carries, and the gradients of a loss of them."""
    final_loss = lambda final: sum(real_loss(c) for c in jax.tree.leaves(final))
    backend = BACKENDS.get(method, method)
    return value_and_grads_both_ways(CELLS[name], backend, params, xs, h0, length, final_loss)


def real_loss(c):
    return jnp.sum(jnp.sin(jnp.real(c)) + jnp.cos(jnp.imag(c)))


def assert_trees_close(got, want, tol):
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol)


@pytest.mark.parametrize("name", ["gru", "lstm", "simple"])
def test_newton_equals_the_reference_at_1024_steps(name):
    cell, params, xs, h0 = problem(name, 1024)
    length = jnp.array([1024, 700])
    want = value_and_grads(params, xs, h0, length, name=name, method="reference")
    got = value_and_grads(params, xs, h0, length, name=name, method="newton")
    assert_trees_close(got, want, 1e-4)
    if name == "gru":  # the iteration report, and a run without lengths
        carry, ys, info = jax.jit(partial(rj.newton_scan, cell))(params, xs, initial_state=h0)
        assert bool(info.converged) and 1 <= int(info.iterations) < 64
        assert_trees_close((carry, ys), rj.scan(cell, params, xs, initial_state=h0), 1e-4)


def test_quasi_deer_diagonal_jacobians_converge_to_the_reference():
    cell, params, xs, h0 = problem("gru", 192)
    length = jnp.array([192, 57])
    want = value_and_grads(params, xs, h0, length, name="gru", method="reference")
    got = value_and_grads(params, xs, h0, length, name="gru", method="diagonal")
    assert_trees_close(got, want, 1e-4)

    @jax.jit
    def infos(xs):
        diagonal = rj.newton_scan(cell, params, xs, jacobian="diagonal", max_iters=400)[2]
        return diagonal, rj.newton_scan(cell, params, xs, jacobian="full")[2]

    diagonal, full = infos(xs)
    assert bool(diagonal.converged) and bool(full.converged)
    assert int(diagonal.iterations) > int(full.iterations)  # linear vs quadratic convergence


def unitwise_and_exact(cell):
    """The unit-wise diagonal of ``cell``'s step Jacobian and the exact one, at a random point."""
    params = cell.init(jax.random.key(0), F)
    params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.key(1), p.shape), params)
    flat = _flat_carry(cell.initial_state(params, ()))
    h = jax.random.normal(jax.random.key(2), (flat.size,))
    x = jax.random.normal(jax.random.key(3), (F,))

    @jax.jit
    def both(h, x):
        step = lambda h: flat.flatten(cell.step(params, flat.unflatten(h), x)[0])
        carry, xp = flat.unflatten(h), cell.project(params, x)
        new, diagonal = unitwise_diagonal(cell.gates, params, carry, xp)
        exact = jnp.diagonal(jax.jacfwd(step)(h))
        return (flat.flatten(new), flat.flatten(diagonal)), (step(h), exact)

    assert has_unitwise_shape(cell, params, flat)
    return both(h, x)


@pytest.mark.parametrize(
    "cell",
    [rj.gru(5), rj.simple(5), rj.lstm(5, peephole=True)],
    ids=["gru", "simple", "lstm_peephole"],
)
def test_unitwise_diagonal_is_the_jacobians_diagonal(cell):
    (new, diagonal), (want_new, want_diagonal) = unitwise_and_exact(cell)
    np.testing.assert_allclose(diagonal, want_diagonal, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new, want_new, rtol=1e-6, atol=1e-7)


def test_cells_that_mix_units_take_the_general_diagonal():
    """A layer norm mixes units: the unit-wise formula is wrong there, so the run-time probe
    sends the solve to the exact diagonal, which converges to the reference."""
    cell = rj.lstm(5, layer_norm=True)
    (_, diagonal), (_, exact) = unitwise_and_exact(cell)
    assert float(jnp.max(jnp.abs(diagonal - exact))) > 1e-3
    params = cell.init(jax.random.key(0), F)
    flat = _flat_carry(cell.initial_state(params, ()))
    h, x = jnp.sin(jnp.arange(10.0)), jnp.ones((F,))
    assert not bool(unitwise_matches(cell, params, flat, h, cell.project(params, x)))
    gru = rj.gru(5)
    gru_params = gru.init(jax.random.key(0), F)
    gru_flat = _flat_carry(gru.initial_state(gru_params, ()))
    xp = gru.project(gru_params, x)
    assert bool(unitwise_matches(gru, gru_params, gru_flat, h[:5], xp))
    xs = jnp.asarray(np.random.default_rng(0).standard_normal((48, 2, F)), jnp.float32)
    # a nonzero start: at a zero state the layer norm's Jacobians are huge (1/sqrt(eps)), and
    # Newton from there overflows (then the sequential fallback answers)
    h0 = jax.tree.map(lambda leaf: 0.5 + 0.0 * leaf, cell.initial_state(params, (2,)))
    h0 = h0._replace(h=jnp.sin(jnp.arange(10.0)).reshape(2, 5))
    run = jax.jit(partial(rj.newton_scan, cell, jacobian="diagonal", max_iters=200))
    carry, ys, info = run(params, xs, initial_state=h0)
    assert bool(info.converged)
    want = rj.scan(cell, params, xs, initial_state=h0, backend="reference")
    assert_trees_close((carry, ys), want, 1e-4)
    for other in (rj.lstm(5, proj_size=2), rj.mgu(5), rj.lru(5)):
        other_params = other.init(jax.random.key(0), F)
        flat = _flat_carry(other.initial_state(other_params, ()))
        assert not has_unitwise_shape(other, other_params, flat)


def test_associative_linear_solves():
    """The associative matrix scan (the accelerator default; CPU runs use the chunked one)."""
    cell, params, xs, h0 = problem("lstm", 100)
    length = jnp.array([100, 31])
    want = value_and_grads(params, xs, h0, length, name="lstm", method="reference")
    got = value_and_grads(params, xs, h0, length, name="lstm", method="associative")
    assert_trees_close(got, want, 1e-4)


def test_without_convergence_the_sequential_result_is_returned():
    cell, params, xs, h0 = problem("lstm", 64)
    length = jnp.array([64, 30])
    run = jax.jit(partial(rj.newton_scan, cell, max_iters=1))
    carry, ys, info = run(params, xs, initial_state=h0, length=length)
    assert not bool(info.converged) and int(info.iterations) == 1
    want = rj.scan(cell, params, xs, initial_state=h0, length=length, backend="reference")
    assert_trees_close((carry, ys), want, 1e-6)


def test_complex_carries_are_flattened_to_reals():
    cell, params, xs, h0 = problem("lru", 40)
    length = jnp.array([40, 11])
    want = value_and_grads(params, xs, h0, length, name="lru", method="reference")
    got = value_and_grads(params, xs, h0, length, name="lru", method="newton")
    assert_trees_close(got, want, 1e-4)
    flat = _flat_carry(h0[0])
    assert flat.size == 8 and flat.dtype == jnp.float32
    np.testing.assert_array_equal(flat.unflatten(flat.flatten(h0)), h0)


def test_batch_shapes_and_zero_steps():
    cell = CELLS["gru"]
    params = cell.init(jax.random.key(0), F)
    xs = jnp.asarray(np.random.default_rng(1).standard_normal((20, 2, 3, F)), jnp.float32)
    length = jnp.array([[20, 0, 5], [1, 19, 20]])
    want = rj.scan(cell, params, xs, length=length, backend="reference")
    got = rj.scan(cell, params, xs, length=length, backend="newton")
    assert_trees_close(got, want, 1e-5)
    carry, ys, info = rj.newton_scan(cell, params, jnp.ones((0, 2, F)))
    assert ys.shape == (0, 2, 12) and carry.shape == (2, 12) and int(info.iterations) == 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"tol": 0.0}, "tol must be a positive number"),
        ({"max_iters": -1}, "max_iters must be a non-negative int"),
        ({"jacobian": "dense"}, "jacobian must be one of"),
        ({"method": "tree"}, "method must be one of"),
    ],
)
def test_bad_options_are_refused_in_words(kwargs, message):
    with pytest.raises(ValueError, match=message):
        rj.backends.Newton(**kwargs)
    cell = CELLS["simple"]
    with pytest.raises(ValueError, match=message):
        rj.newton_scan(cell, cell.init(jax.random.key(0), F), jnp.ones((4, F)), **kwargs)
