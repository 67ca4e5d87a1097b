"""Block-diagonal multi-head cells: one head is the dense cell; heads are independent."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_jax as rj
from rnn_jax.cells.capabilities import Gates
from rnn_jax.cells.multihead import block_diagonal, merge_heads, split_heads

DENSE = {
    "multihead_lstm": (rj.multihead_lstm, rj.lstm, rj.LSTMParams, 4),
    "multihead_gru": (rj.multihead_gru, rj.gru, rj.GRUParams, 3),
    "multihead_simple": (rj.multihead_simple, rj.simple, rj.SimpleParams, 1),
}


def dense_params(kind, params):
    _, _, Params, _ = DENSE[kind]
    fields = {"kernel": params.kernel, "recurrent_kernel": params.recurrent_kernel[0]}
    fields["bias"] = params.bias
    if kind == "multihead_gru":
        fields["recurrent_bias"] = params.recurrent_bias
    return Params(**fields)


@pytest.mark.parametrize("kind", list(DENSE))
def test_one_head_is_the_dense_cell(kind):
    multi, dense, _, G = DENSE[kind]
    cell = multi(6, 1)
    params = cell.init(jax.random.key(0), 3)
    assert params.recurrent_kernel.shape == (1, 6, G * 6)
    xs = jax.random.normal(jax.random.key(1), (5, 2, 3))
    carry, ys = rj.scan(cell, params, xs, backend="reference")
    carry_d, ys_d = rj.scan(dense(6), dense_params(kind, params), xs, backend="reference")
    np.testing.assert_allclose(ys, ys_d, atol=1e-6)
    for a, b in zip(jax.tree.leaves(carry), jax.tree.leaves(carry_d), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("kind", list(DENSE))
def test_heads_are_independent_dense_cells(kind):
    multi, dense, _, G = DENSE[kind]
    NH, Hh = 3, 2
    cell = multi(NH * Hh, NH)
    params = cell.init(jax.random.key(0), 3)
    xs = jax.random.normal(jax.random.key(1), (4, 2, 3))
    _, ys = rj.scan(cell, params, xs)
    for n in range(NH):
        cols = slice(n * G * Hh, (n + 1) * G * Hh)
        head = params._replace(
            kernel=params.kernel[:, cols],
            recurrent_kernel=params.recurrent_kernel[n : n + 1],
            bias=params.bias[cols],
            recurrent_bias=None if params.recurrent_bias is None else params.recurrent_bias[cols],
        )
        _, ys_n = rj.scan(multi(Hh, 1), head, xs)
        np.testing.assert_allclose(ys[..., n * Hh : (n + 1) * Hh], ys_n, atol=1e-6)


@pytest.mark.parametrize("kind", list(DENSE))
def test_dense_gates_contract_equals_step(kind):
    multi, _, _, _ = DENSE[kind]
    cell = multi(8, 2)
    assert isinstance(cell.gates, Gates)
    params = cell.init(jax.random.key(0), 3)
    carry = jax.tree.map(
        lambda x: jax.random.normal(jax.random.key(2), x.shape), cell.initial_state(params, (2,))
    )
    x = jax.random.normal(jax.random.key(1), (2, 3))
    gates = cell.gates
    assert gates.heads.num_heads == 2
    want = cell.step(params, carry, x)
    hu = gates.fed_back(carry) @ gates.kernel(params)
    got = gates.combine(params, carry, cell.project(params, x), hu)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_multihead_lstm_forget_bias_and_errors():
    params = rj.multihead_lstm(4, 2, forget_bias=1.0).init(jax.random.key(0), 3)
    # per head: gates i, f, g, o of 2 units each
    np.testing.assert_array_equal(params.bias, jnp.tile(jnp.array([0, 0, 1, 1, 0, 0, 0, 0]), 2))
    with pytest.raises(ValueError, match="num_heads"):
        rj.multihead_gru(10, 3)
    with pytest.raises(ValueError, match="num_heads"):
        rj.multihead_simple(8, 0)


def test_head_layout_helpers():
    x = jnp.arange(12.0).reshape(2, 6)
    heads = split_heads(3)(x)
    assert heads.shape == (3, 2, 2)
    np.testing.assert_array_equal(heads[1], x[:, 2:4])
    np.testing.assert_array_equal(merge_heads(heads), x)
    blocks = jnp.arange(8.0).reshape(2, 2, 2)
    dense = block_diagonal(blocks)
    np.testing.assert_array_equal(dense[2:, 2:], blocks[1])
    assert not np.any(np.asarray(dense[:2, 2:]))
