"""Layers over degenerate shapes: no steps, no sequences, no valid step give what the same
layers on the reference backend give, gradients included (``rj.rnn``, ``rj.bidirectional``
and ``rj.stack`` in one layer), and ``vmap`` over batch-major sequences likewise."""

from __future__ import annotations

from functools import partial

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_jax as rj

H, F = 3, 2
SHAPES = [  # (T, batch shape, length)
    (0, (2,), [0, 0]),
    (3, (0, 2), None),
    (3, (2,), [0, 0]),
]


def layer(backend):
    gru = rj.gru(H)
    both_ways = rj.bidirectional(
        rj.rnn(gru, backend=backend), rj.rnn(gru, backend=backend, reverse=True)
    )
    return rj.stack([rj.rnn(rj.lstm(H), backend=backend), both_ways])


@partial(jax.jit, static_argnums=0)
def value_and_grads(backend, params, xs, length):
    def loss(params, xs):
        state, ys = layer(backend).apply(params, xs, length=length)
        return sum(jnp.sum(jnp.sin(leaf)) for leaf in jax.tree.leaves((state, ys))), (state, ys)

    return jax.grad(loss, argnums=(0, 1), has_aux=True)(params, xs)


@pytest.mark.parametrize(("steps", "batch", "length"), SHAPES)
def test_rnn_bidirectional_and_stack_over_degenerate_shapes(steps, batch, length):
    params = layer("auto").init(jax.random.key(0), F)
    xs = jnp.asarray(np.random.default_rng(0).normal(size=(steps, *batch, F)), jnp.float32)
    length = None if length is None else jnp.asarray(length)
    got = value_and_grads("auto", params, xs, length)
    want = value_and_grads("reference", params, xs, length)
    chex.assert_trees_all_equal_shapes_and_dtypes(got, want)
    chex.assert_trees_all_close(got, want, atol=1e-6)
    assert got[1][1].shape == (steps, *batch, 2 * H)


def test_vmap_of_a_layer_over_no_sequences_and_no_steps():
    bidirectional = rj.bidirectional(rj.gru(H))
    params = bidirectional.init(jax.random.key(0), F)
    apply = jax.vmap(lambda xs: bidirectional.apply(params, xs)[1])  # [T, F] per sequence
    assert apply(jnp.ones((0, 4, F))).shape == (0, 4, 2 * H)
    assert apply(jnp.ones((3, 0, F))).shape == (3, 0, 2 * H)
