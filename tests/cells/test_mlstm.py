"""mLSTM: the paper's equations step by step in NumPy; the chunkwise-parallel form against the
reference in values and gradients, with lengths, holes, resets and both directions; no state
per step in its gradient."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scan_helpers

import rnn_jax as rj

T, B, F, H, NH = 10, 3, 3, 4, 2
D = H // NH
LENGTH = np.array([10, 7, 0])
RESETS = np.zeros((T, B), bool)
RESETS[[0, 4, 8], 0] = True  # at the first step, inside a chunk and at a chunk's start
RESETS[[3, 6], 1] = True
HOLES = np.ones((T, B), bool)
HOLES[[2, 3, 8], 0] = False
HOLES[::2, 2] = False


def random_params(cell, scale=0.6, seed=0, input_gate=0.0):
    shapes = jax.eval_shape(lambda: cell.init(jax.random.key(0), F))
    rng = np.random.default_rng(seed)
    params = jax.tree.map(lambda s: jnp.asarray(scale * rng.standard_normal(s.shape)), shapes)
    return params._replace(gate_bias=params.gate_bias.at[:NH].add(input_gate))


def paper_equations(params, xs, forget_gate):
    """The mLSTM of Beck et al. (2024), eqs. 19-27, unstabilised, in float64, one step at a time.

    Returns the outputs ``[T, B, H]`` and the memories ``C [T, B, NH, D, D]``, ``n [T, B, NH, D]``.
    """
    W, b, Wg, bg = (np.asarray(p, np.float64) for p in params)
    C, n = np.zeros((xs.shape[1], NH, D, D)), np.zeros((xs.shape[1], NH, D))
    ys, Cs, ns = [], [], []
    for x in np.asarray(xs, np.float64):
        q, k, v, o = (a.reshape(-1, NH, D) for a in np.split(x @ W + b, 4, axis=-1))
        k = k / np.sqrt(D)
        i_pre, f_pre = np.split(x @ Wg + bg, 2, axis=-1)
        i = np.exp(i_pre)[..., None, None]
        f = (1 / (1 + np.exp(-f_pre)) if forget_gate == "sigmoid" else np.exp(f_pre))[
            ..., None, None
        ]
        C = f * C + i * np.einsum("bna,bnc->bnac", k, v)
        n = f[..., 0] * n + i[..., 0] * k
        h = np.einsum("bna,bnac->bnc", q, C) / np.maximum(np.abs(np.sum(q * n, -1)), 1)[..., None]
        ys.append((1 / (1 + np.exp(-o)) * h).reshape(-1, H)), Cs.append(C), ns.append(n)
    return np.stack(ys), np.stack(Cs), np.stack(ns)


@pytest.mark.parametrize("forget_gate", ["sigmoid", "exp"])
def test_the_step_is_the_papers_equations(forget_gate):
    cell = rj.mlstm(H, NH, forget_gate=forget_gate)
    params = random_params(cell, input_gate=1.0)
    xs = jax.random.normal(jax.random.key(1), (T, B, F))

    @jax.jit
    def states_and_outputs(params, xs):
        def step(carry, x):
            carry, y = cell.step(params, carry, x)
            return carry, (carry, y)

        return jax.lax.scan(step, cell.initial_state(params, (B,)), xs)[1]

    states, ys = states_and_outputs(params, xs)
    want_ys, want_c, want_n = paper_equations(params, xs, forget_gate)
    np.testing.assert_allclose(ys, want_ys, rtol=1e-5, atol=1e-6)
    scale = np.exp(np.asarray(states.m, np.float64))
    np.testing.assert_allclose(states.c * scale[..., None, None], want_c, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(states.n * scale[..., None], want_n, rtol=1e-4, atol=1e-5)


# (backend, reverse, steps): chunks of 4 pad T = 10 in the last; both directions and both
# kinds of valid steps reach the chunkwise form.
CASES = {
    "parallel-forward": (rj.backends.Parallel(memory_chunk=4), False, "lengths"),
    "parallel-reverse-holes": (rj.backends.Parallel(memory_chunk=4), True, "holes"),
    "sequential-reverse-holes": ("sequential", True, "holes"),
}


@functools.cache
def case(reverse: bool, steps: str):
    """Input gates near exp(5) keep the stabiliser busy; the initial memory is not empty."""
    cell = rj.mlstm(H, NH)
    params = random_params(cell, input_gate=5.0)
    xs = jax.random.normal(jax.random.key(2), (T, B, F))
    h0 = cell.initial_state(params, (B,))
    h0 = h0._replace(c=h0.c + 0.2, n=h0.n + 0.1, m=h0.m - 0.5)
    kwargs = {"reverse": reverse, "resets": jnp.asarray(RESETS)}
    if steps == "lengths":
        kwargs["length"] = jnp.asarray(LENGTH)
    else:
        kwargs["mask"] = jnp.asarray(HOLES)
    reference = scan_helpers.value_and_grads(cell, "reference", params, xs, h0, **kwargs)
    return cell, params, xs, h0, kwargs, reference


@pytest.mark.parametrize("name", list(CASES))
def test_backends_equal_the_reference_with_restarts(name):
    """Values and gradients with resets, and lengths or masks with holes."""
    backend, reverse, steps = CASES[name]
    cell, params, xs, h0, kwargs, want = case(reverse, steps)
    scan_helpers.skip_unless_supported(backend, cell, params, xs, **kwargs)
    got = scan_helpers.value_and_grads(cell, backend, params, xs, h0, **kwargs)
    # A sum of large terms can be small (the input gates' bias gradient): rounding is relative
    # to the largest entry of each array.
    close = lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * np.abs(w).max())
    jax.tree.map(close, got, want)


def test_the_chunkwise_form_survives_input_gates_past_float32():
    """Input gates near exp(100) (infinite in float32): the chunkwise form in float32 against the
    unstabilised equations in float64."""
    cell = rj.mlstm(H, NH)
    params = random_params(cell, input_gate=100.0)
    xs = jax.random.normal(jax.random.key(3), (T, B, F))
    assert np.isinf(np.exp(np.float32(params.gate_bias[0])))
    backend = rj.backends.Parallel(memory_chunk=4)
    _, ys = jax.jit(lambda p, x: rj.scan(cell, p, x, backend=backend))(params, xs)
    want, _, _ = paper_equations(params, xs, "sigmoid")
    np.testing.assert_allclose(ys, want, rtol=1e-4, atol=1e-5)


def shapes_in(jaxpr) -> set[tuple[int, ...]]:
    """The shapes of every value a jaxpr (and the jaxprs inside it) computes."""
    found = set()
    for eqn in jaxpr.eqns:
        found.update(tuple(v.aval.shape) for v in eqn.outvars if hasattr(v.aval, "shape"))
        for inner in scan_helpers.inner_jaxprs(eqn):
            found |= shapes_in(getattr(inner, "jaxpr", inner))
    return found


def test_the_parallel_gradient_keeps_one_state_per_chunk_not_per_step():
    steps, chunk, d = 64, 16, 3
    cell = rj.mlstm(2 * d, 2)
    params = cell.init(jax.random.key(0), F)
    xs = jnp.ones((steps, B, F))

    def per_step_states(backend):
        loss = lambda p: jnp.sum(rj.scan(cell, p, xs, backend=backend)[1])
        shapes = shapes_in(jax.make_jaxpr(jax.grad(loss))(params).jaxpr)
        return {s for s in shapes if s[-2:] == (d, d) and steps in s}

    assert per_step_states(rj.backends.Parallel(memory_chunk=chunk)) == set()
    assert per_step_states("sequential")  # autodiff of the step loop keeps every state


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="forget_gate must be one of"):
        rj.mlstm(8, 2, forget_gate="relu")
    with pytest.raises(ValueError, match="hidden_size must be a multiple of num_heads=3"):
        rj.mlstm(8, 3)
    with pytest.raises(ValueError, match="memory_chunk must be a positive int; got 0"):
        rj.backends.Parallel(memory_chunk=0)
