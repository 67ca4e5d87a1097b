"""The Flax modules compute exactly what the wrapped layer computes."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import rnn_jax as rj
from rnn_jax.flax import NNXRNN, RNN

XS = jax.random.normal(jax.random.key(0), (7, 3, 5))
LENGTH = jnp.array([7, 4, 1])


def test_linen_matches_layer_apply():
    layer = rj.stack([rj.bidirectional(rj.gru(6)), rj.lstm(4)], dropout=0.3)
    model = RNN(layer)
    variables = model.init(jax.random.key(1), XS)
    state, ys = model.apply(variables, XS, length=LENGTH)
    want_state, want = layer.apply(variables["params"]["layer"], XS, length=LENGTH)
    np.testing.assert_array_equal(ys, want)
    chex.assert_trees_all_equal(state, want_state)


def test_linen_dropout_only_when_not_deterministic():
    model = RNN(rj.rnn(rj.lstm(4), input_dropout=0.5))
    variables = model.init(jax.random.key(1), XS)
    _, eval_ys = model.apply(variables, XS)
    _, train_ys = model.apply(
        variables, XS, deterministic=False, rngs={"dropout": jax.random.key(2)}
    )
    _, want = rj.rnn(rj.lstm(4)).apply(variables["params"]["layer"], XS)
    np.testing.assert_array_equal(eval_ys, want)
    assert not np.allclose(train_ys, eval_ys)


def test_nnx_matches_layer_apply_and_its_gradient():
    layer = rj.rnn(rj.gru(6))
    model = NNXRNN(layer, input_size=5, rngs=nnx.Rngs(0, dropout=1))
    params = jax.tree.map(
        lambda p: p[...], model.params, is_leaf=lambda x: isinstance(x, nnx.Variable)
    )
    _, ys = model(XS, length=LENGTH)
    np.testing.assert_array_equal(ys, layer.apply(params, XS, length=LENGTH)[1])

    grads = nnx.grad(lambda m: jnp.sum(m(XS, length=LENGTH)[1] ** 2))(model)
    want = jax.grad(lambda p: jnp.sum(layer.apply(p, XS, length=LENGTH)[1] ** 2))(params)
    for name, w in want._asdict().items():
        np.testing.assert_allclose(grads["params"][name][...], w, rtol=1e-6, atol=1e-6)


def test_nnx_train_mode_turns_dropout_on():
    model = NNXRNN(rj.rnn(rj.lstm(4), output_dropout=0.5), 5, rngs=nnx.Rngs(0, dropout=1))
    _, eval_ys = model(XS)
    model.train()
    _, train_ys = model(XS)
    model.eval()
    _, again = model(XS)
    assert not np.allclose(train_ys, eval_ys)
    np.testing.assert_array_equal(again, eval_ys)
