"""The linear-recurrence cells: min_gru, min_lstm, lru, rg_lru.

Each cell's ``step`` must be ``h = a * h_prev + b`` with the ``(a, b)`` its
``linear.coefficients`` give, its outputs ``linear.output`` of the states, and
``linear.log_coefficients`` (where present) the logarithms of ``(a, b)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_jax as rj
from rnn_jax.cells.lru import lru_lambda
from rnn_jax.cells.min_gru import log_positive, positive
from rnn_jax.cells.rg_lru import sqrt_bound_derivative

LINEAR_CELLS = ("min_gru", "min_lstm", "lru", "rg_lru")
T, B, F, H = 9, 3, 5, 6


def setup(name, hidden=H, features=F):
    cell = getattr(rj, name)(hidden)
    params = cell.init(jax.random.key(0), features)
    xs = 2.0 * jax.random.normal(jax.random.key(1), (T, B, features))
    return cell, params, xs


@pytest.mark.parametrize("name", LINEAR_CELLS)
def test_step_is_the_linear_form(name):
    cell, params, xs = setup(name)
    assert cell.linear is not None and cell.name == name
    a, b = cell.linear.coefficients(params, xs)
    h = cell.initial_state(params, (B,)) + 0.5  # a nonzero start
    carry, hs, ys = h, [], []
    for t in range(T):
        h = a[t] * h + b[t]
        hs.append(h)
        carry, y = cell.step(params, carry, xs[t])
        ys.append(y)
        np.testing.assert_allclose(carry, h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cell.linear.output(params, jnp.stack(hs), xs), jnp.stack(ys),
                               rtol=1e-5, atol=1e-5)  # fmt: skip


@pytest.mark.parametrize("name", ["min_gru", "min_lstm"])
def test_log_coefficients_are_the_logarithms(name):
    cell, params, xs = setup(name)
    xs = 10.0 * xs  # far into both branches of g and the gates
    a, b = cell.linear.coefficients(params, xs)
    log_a, log_b = cell.linear.log_coefficients(params, xs)
    assert bool(jnp.all(a > 0)) and bool(jnp.all(a <= 1)) and bool(jnp.all(b > 0))
    np.testing.assert_allclose(jnp.exp(log_a), a, rtol=1e-5, atol=1e-30)
    np.testing.assert_allclose(jnp.exp(log_b), b, rtol=1e-5, atol=1e-30)


def test_min_lstm_gates_are_normalised():
    cell, params, xs = setup("min_lstm")
    xp = xs @ params.kernel + params.bias[None, None]
    f, i = jax.nn.sigmoid(xp[..., :H]), jax.nn.sigmoid(xp[..., H : 2 * H])
    a, b = cell.linear.coefficients(params, xs)
    np.testing.assert_allclose(a, f / (f + i), rtol=1e-5)
    np.testing.assert_allclose(b, i / (f + i) * positive(xp[..., 2 * H :]), rtol=1e-5)


def test_positive_g_is_the_papers_and_its_log_has_finite_gradients():
    v = jnp.array([-80.0, -3.0, -1e-3, 0.0, 1e-3, 2.0, 1e4])
    np.testing.assert_allclose(positive(v), jnp.where(v >= 0, v + 0.5, jax.nn.sigmoid(v)))
    np.testing.assert_allclose(jnp.exp(log_positive(v)), positive(v), rtol=1e-5)
    grads = jax.vmap(jax.grad(log_positive))(v)
    assert bool(jnp.all(jnp.isfinite(grads)))


def test_parameter_shapes():
    assert rj.count_params(rj.min_gru(H).init(jax.random.key(0), F)) == F * 2 * H + 2 * H
    assert rj.count_params(rj.min_lstm(H).init(jax.random.key(0), F)) == F * 3 * H + 3 * H
    p = rj.rg_lru(H).init(jax.random.key(0), F)
    assert p.gate_kernel.shape == (F, 2 * H) and p.input_kernel.shape == (F, H)
    assert rj.rg_lru(H).init(jax.random.key(0), H).input_kernel is None
    p = rj.lru(H).init(jax.random.key(0), F)
    assert p.B_re.shape == (F, H) and p.C_re.shape == (H, F) and p.D.shape == (F,)
    p = rj.lru(H, output_size=7).init(jax.random.key(0), F)
    assert p.C_im.shape == (H, 7) and p.D is None


def test_lru_state_is_complex_stable_and_normalised():
    cell = rj.lru(64, r_min=0.5, r_max=0.9)
    params = cell.init(jax.random.key(0), F)
    h0 = cell.initial_state(params, (B,))
    assert h0.dtype == jnp.complex64 and h0.shape == (B, 64) and not bool(jnp.any(h0))
    lam = lru_lambda(params)
    radius = jnp.abs(lam)
    assert bool(jnp.all(radius >= 0.5 - 1e-5)) and bool(jnp.all(radius <= 0.9 + 1e-5))
    np.testing.assert_allclose(jnp.exp(params.gamma_log), jnp.sqrt(1 - radius**2), rtol=1e-4)
    carry, ys = rj.scan(cell, params, jnp.ones((T, B, F)))
    assert carry.dtype == jnp.complex64 and ys.dtype == jnp.float32 and ys.shape == (T, B, F)
    # any parameters give |lambda| < 1
    wild = params._replace(nu_log=jnp.full((64,), -30.0))
    assert bool(jnp.all(jnp.abs(lru_lambda(wild)) <= 1.0 + 1e-6))


def test_rg_lru_decay_and_bounded_sqrt_gradient():
    cell, params, xs = setup("rg_lru")
    a, _ = cell.linear.coefficients(params, xs)
    assert bool(jnp.all(a > 0)) and bool(jnp.all(a < 1))
    base = jnp.exp(-jax.nn.softplus(params.a_param))  # initialised on the ring [0.9, 0.999]
    assert bool(jnp.all(base >= 0.9 - 1e-6)) and bool(jnp.all(base <= 0.999 + 1e-6))
    assert float(jax.grad(lambda x: sqrt_bound_derivative(x, 1000.0))(0.0)) == pytest.approx(1000.0)
    assert float(jax.grad(lambda x: sqrt_bound_derivative(x, 1000.0))(0.25)) == pytest.approx(1.0)


@pytest.mark.parametrize("name", LINEAR_CELLS)
def test_one_example_and_vmap_agree(name):
    cell, params, xs = setup(name)
    carry, ys = rj.scan(cell, params, xs, backend="reference")
    one = jax.vmap(lambda x: rj.scan(cell, params, x, backend="reference"), in_axes=1,
                   out_axes=(0, 1))(xs)  # fmt: skip
    np.testing.assert_allclose(one[0], carry, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(one[1], ys, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: rj.min_gru(0), "hidden_size"),
        (lambda: rj.lru(4, r_min=0.9, r_max=0.5), "r_min"),
        (lambda: rj.lru(4, output_size=-1), "output_size"),
        (lambda: rj.rg_lru(4, c=0.0), "c must be positive"),
    ],
)
def test_bad_hyperparameters_are_refused_in_words(make, message):
    with pytest.raises(ValueError, match=message):
        make()
