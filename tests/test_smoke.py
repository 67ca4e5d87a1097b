import jax
import jax.numpy as jnp

import rnn_jax as rj


def test_keras_parameter_counts():
    assert rj.count_params(rj.lstm(128).init(jax.random.key(0), 64)) == 98_816
    assert rj.count_params(rj.simple(32).init(jax.random.key(0), 32)) == 2_080


def test_scan_shapes():
    cell = rj.gru(8)
    params = cell.init(jax.random.key(0), 3)
    carry, ys = rj.scan(cell, params, jnp.ones((5, 2, 3)))
    assert ys.shape == (5, 2, 8) and carry.shape == (2, 8)
