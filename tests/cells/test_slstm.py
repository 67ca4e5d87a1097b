"""sLSTM: the paper's equations step by step in NumPy, float32 stability over 4,096 steps, and
every backend that takes `Gates` against the reference, values and gradients."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scan_helpers

import rnn_jax as rj

T, B, F, H, NH = 6, 3, 3, 4, 2
LENGTH = np.array([6, 4, 0])
RESETS = np.zeros((T, B), bool)
RESETS[[2, 5], 0] = True
RESETS[1, 1] = True


def random_params(cell, scale, seed=0):
    """Every parameter drawn N(0, scale^2), recurrent blocks included (they start at zero)."""
    shapes = jax.eval_shape(lambda: cell.init(jax.random.key(0), F))
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda s: jnp.asarray(scale * rng.standard_normal(s.shape), s.dtype), shapes
    )


def paper_equations(params, xs, forget_gate):
    """The sLSTM of Beck et al. (2024), eqs. 8-17, unstabilised, in float64, one step at a time.

    Returns ``h [T, B, H]`` and the cell and normaliser ``c, n`` after every step.
    """
    W, R, b = (
        np.asarray(p, np.float64) for p in (params.kernel, params.recurrent_kernel, params.bias)
    )
    Hh = H // NH
    h = c = n = np.zeros((xs.shape[1], H))
    hs, cs, ns = [], [], []
    for x in np.asarray(xs, np.float64):
        pre = x @ W + b
        for head in range(NH):  # block-diagonal recurrence: head k sees only its own h
            units = slice(head * Hh, (head + 1) * Hh)
            pre[:, head * 4 * Hh : (head + 1) * 4 * Hh] += h[:, units] @ R[head]
        pre = pre.reshape(-1, NH, 4, Hh)  # per head: gates i, f, z, o
        i_pre, f_pre, z_pre, o_pre = (pre[:, :, g].reshape(-1, H) for g in range(4))
        i = np.exp(i_pre)
        f = 1 / (1 + np.exp(-f_pre)) if forget_gate == "sigmoid" else np.exp(f_pre)
        c = f * c + i * np.tanh(z_pre)
        n = f * n + i
        h = 1 / (1 + np.exp(-o_pre)) * c / n
        hs.append(h), cs.append(c), ns.append(n)
    return np.stack(hs), np.stack(cs), np.stack(ns)


def states_and_outputs(cell, params, xs):
    """Every carry and output of ``cell.step``, stacked over time."""

    def step(carry, x):
        carry, y = cell.step(params, carry, x)
        return carry, (carry, y)

    return jax.lax.scan(step, cell.initial_state(params, (xs.shape[1],)), xs)[1]


@pytest.mark.parametrize("forget_gate", ["sigmoid", "exp"])
def test_the_step_is_the_papers_equations(forget_gate):
    cell = rj.slstm(H, NH, forget_gate=forget_gate)
    params = random_params(cell, 0.7)
    xs = jax.random.normal(jax.random.key(1), (T, B, F))
    states, ys = jax.jit(states_and_outputs, static_argnums=0)(cell, params, xs)
    h, c, n = paper_equations(params, xs, forget_gate)
    np.testing.assert_allclose(ys, h, rtol=2e-5, atol=2e-6)
    # c and n are kept scaled by exp(-m): the paper's values once the stabiliser is undone
    scale = np.exp(np.asarray(states.m, np.float64))
    np.testing.assert_allclose(states.c * scale, c, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(states.n * scale, n, rtol=2e-5)
    assert np.all(np.asarray(states.n) >= 1 - 1e-6)  # one gate is exactly 1 in every step


def test_stable_in_float32_over_4096_steps():
    """Input-gate pre-activations past 88 overflow exp in float32; the stabilised cell agrees with
    the unstabilised equations computed in float64 over 4,096 steps."""
    steps = 4096
    cell = rj.slstm(H, NH)
    params = random_params(cell, 1.0, seed=3)
    per_head = jnp.repeat(jnp.array([60.0, 3.0, 0.0, 0.0]), H // NH)  # gates i, f, z, o
    params = params._replace(
        recurrent_kernel=0.2 * params.recurrent_kernel, bias=params.bias + jnp.tile(per_head, NH)
    )
    xs = 20.0 * jax.random.normal(jax.random.key(2), (steps, 1, F))
    i_pre = (np.asarray(xs @ params.kernel) + np.asarray(params.bias)).reshape(steps, NH, 4, -1)[
        :, :, 0
    ]
    assert i_pre.max() > 88 and np.isinf(np.exp(np.float32(i_pre.max())))
    _, ys = jax.jit(lambda p, x: rj.scan(cell, p, x, backend="reference"))(params, xs)
    h, _, _ = paper_equations(params, xs, "sigmoid")
    assert np.isfinite(h).all() and np.isfinite(np.asarray(ys)).all()
    np.testing.assert_allclose(ys, h, rtol=1e-3, atol=1e-4)


# Reversed, with lengths and resets. The fused Pallas kernel runs in interpret mode on a CPU
# and refuses resets. ``checkpointed`` runs this same sequential kernel in each segment.
BACKENDS = {
    "sequential": rj.backends.Sequential(chunk=2, residuals="store"),
    "newton": "newton",
    "pallas": "pallas",
}


@functools.cache
def case(resets: bool):
    cell = rj.slstm(H, NH)
    params = random_params(cell, 0.5)
    xs = jax.random.normal(jax.random.key(1), (T, B, F))
    h0 = jax.tree.map(lambda z: z + 0.3, cell.initial_state(params, (B,)))
    kwargs = {"length": jnp.asarray(LENGTH), "reverse": True}
    if resets:
        kwargs["resets"] = jnp.asarray(RESETS)
    reference = scan_helpers.value_and_grads(cell, "reference", params, xs, h0, **kwargs)
    return cell, params, xs, h0, kwargs, reference


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_every_gates_backend_equals_the_reference(backend):
    """Values and gradients, reversed, with lengths and resets (where the backend takes them)."""
    chosen = BACKENDS[backend]
    cell, params, xs, *_ = case(True)
    resets = scan_helpers.refusal(chosen, cell, params, xs, resets=jnp.asarray(RESETS)) is None
    cell, params, xs, h0, kwargs, want = case(resets)
    scan_helpers.skip_unless_supported(chosen, cell, params, xs, **kwargs)
    got = scan_helpers.value_and_grads(cell, chosen, params, xs, h0, **kwargs)
    jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=5e-5, atol=5e-5), got, want)


def test_options_are_checked_in_words():
    with pytest.raises(ValueError, match="forget_gate must be one of"):
        rj.slstm(8, 2, forget_gate="tanh")
    with pytest.raises(ValueError, match="hidden_size must be a multiple of num_heads=3"):
        rj.slstm(8, 3)
    bias = rj.slstm(4, 2, forget_bias=2.0).init(jax.random.key(0), 3).bias
    np.testing.assert_array_equal(bias, jnp.tile(jnp.array([0, 0, 2, 2, 0, 0, 0, 0]), 2))
