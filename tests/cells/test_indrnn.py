"""IndRNN as Li et al. (2018) set it up for sequences of T steps: |u| <= 2 ** (1 / T), u drawn in
[0, 2 ** (1 / T)]; the defaults without ``time_steps`` unchanged."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_jax as rj


def test_time_steps_bound_the_growth_over_the_sequence_to_twice():
    """With no input, a unit carrying 1 ends at u ** T: 2 at the bound, however large u is."""
    steps = 600
    cell = rj.indrnn(3, time_steps=steps)
    assert cell.config["recurrent_max_abs"] == pytest.approx(2 ** (1 / steps))
    params = cell.init(jax.random.key(0), 2)
    params = params._replace(recurrent_weight=jnp.array([10.0, 2 ** (1 / steps), 0.999]))
    final, _ = rj.scan(cell, params, jnp.zeros((steps, 1, 2)), initial_state=jnp.ones((1, 3)))
    np.testing.assert_allclose(final[0], [2.0, 2.0, 0.999**steps], rtol=1e-4)


def test_recurrent_weights_start_uniform_up_to_the_bound():
    steps = 100
    weights = rj.indrnn(4096, time_steps=steps).init(jax.random.key(1), 2).recurrent_weight
    bound = 2 ** (1 / steps)
    assert float(weights.min()) >= 0 and float(weights.max()) <= bound
    assert float(weights.max()) > 1.0  # some units start able to keep their state
    assert abs(float(weights.mean()) - bound / 2) < 0.02


def test_defaults_without_time_steps_are_unchanged():
    cell = rj.indrnn(4096)
    assert cell.config["recurrent_max_abs"] is None and cell.config["time_steps"] is None
    weights = cell.init(jax.random.key(1), 2).recurrent_weight
    assert float(weights.min()) >= 0 and float(weights.max()) <= 1.0
    assert abs(float(weights.mean()) - 0.5) < 0.02


def test_a_given_bound_and_init_win_over_time_steps():
    cell = rj.indrnn(
        8, time_steps=100, recurrent_max_abs=1.5, recurrent_init=jax.nn.initializers.ones
    )
    assert cell.config["recurrent_max_abs"] == 1.5
    np.testing.assert_array_equal(cell.init(jax.random.key(0), 2).recurrent_weight, jnp.ones(8))
    with pytest.raises(ValueError, match="time_steps must be a positive int or None; got 0"):
        rj.indrnn(8, time_steps=0)
