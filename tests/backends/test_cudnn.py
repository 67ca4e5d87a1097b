"""The ``cudnn`` backend: weight packing, refusals, and its semantics through ``lstm_ref``.

No GPU here: the cuDNN call itself is unmeasured. ``implementation="reference"``
runs the same packing, length handling and reversal through
``jax.experimental.rnn.lstm_ref`` (JAX's pure model of the cuDNN call), which
must equal our reference backend in values and gradients.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import rnn as jrnn

import rnn_jax as rj
from rnn_jax.backends.cudnn import Cudnn, pack_lstm_weights, unpack_lstm_weights

T, B, F, H = 6, 3, 3, 4


def setup(cell, batch=(B,)):
    k = jax.random.split(jax.random.key(0), 4)
    params = cell.init(k[0], F)
    params = params._replace(bias=jax.random.normal(k[3], params.bias.shape))
    xs = jax.random.normal(k[1], (T, *batch, F))
    c0 = jax.tree.map(
        lambda x: 0.5 * jax.random.normal(k[2], x.shape), cell.initial_state(params, batch)
    )
    return params, xs, c0


def test_packing_round_trip_and_layout():
    cell = rj.lstm(H)
    params = cell.init(jax.random.key(0), F)
    weights = pack_lstm_weights(cell.cudnn_layout.to_weights(params))
    assert weights.shape == (jrnn.get_num_params_in_lstm(F, H, 1, False),)
    W_ih, W_hh, b_ih, b_hh = jrnn.unpack_lstm_weights(weights, F, H, 1, False)
    np.testing.assert_array_equal(W_ih[0], params.kernel.T)
    np.testing.assert_array_equal(W_hh[0], params.recurrent_kernel.T)
    np.testing.assert_array_equal(b_ih[0], params.bias)
    np.testing.assert_array_equal(b_hh[0], 0.0)
    back = cell.cudnn_layout.from_weights(unpack_lstm_weights(weights, F, H))
    for got, want in zip(back, params, strict=True):
        if want is None:
            assert got is None
        else:
            np.testing.assert_array_equal(got, want)


def test_cudnn_weights_mapped_to_our_params_agree_with_lstm_ref():
    # Weights in cuDNN's layout (two biases), mapped into our parameters, give
    # what jax.experimental.rnn's reference LSTM gives.
    weights = jrnn.init_lstm_weight(jax.random.key(1), F, H, 1, False)
    params = rj.lstm(H).cudnn_layout.from_weights(unpack_lstm_weights(weights, F, H))
    xs = jax.random.normal(jax.random.key(2), (T, B, F))
    lengths = jnp.array([6, 1, 4], jnp.int32)
    state = rj.LSTMState(jnp.zeros((B, H)), jnp.zeros((B, H)))
    carry, ys = rj.scan(rj.lstm(H), params, xs, length=lengths, backend="reference")
    W_ih, W_hh, b_ih, b_hh = jrnn.unpack_lstm_weights(weights, F, H, 1, False)
    y, h_n, c_n = jrnn.lstm_ref(
        jnp.swapaxes(xs, 0, 1), state.h[None], state.c[None], W_ih, W_hh, b_ih, b_hh,
        lengths, F, H, 1, 0.0, False,
    )  # fmt: skip
    np.testing.assert_allclose(ys, jnp.swapaxes(y, 0, 1), atol=1e-5)
    np.testing.assert_allclose(carry.h, h_n[0], atol=1e-5)
    np.testing.assert_allclose(carry.c, c_n[0], atol=1e-5)


def values_and_grads(params, xs, c0, length, reverse, backend):
    w = jax.random.normal(jax.random.key(9), (T, *xs.shape[1:-1], H))

    def loss(params, xs, c0):
        carry, ys = rj.scan(
            rj.lstm(H), params, xs, initial_state=c0, length=length, reverse=reverse,
            backend=backend,
        )  # fmt: skip
        return jnp.sum(ys * w) + jnp.sum(jnp.sin(carry.h)) + jnp.sum(carry.c**2), (carry, ys)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(params, xs, c0)


@pytest.mark.parametrize(
    "length, reverse", [([6, 2, 0], False), ([6, 2, 0], True)], ids=["lengths", "lengths-reverse"]
)
def test_cudnn_semantics_equal_reference_backend(length, reverse):
    params, xs, c0 = setup(rj.lstm(H))
    length = None if length is None else jnp.asarray(length)
    backend = Cudnn(implementation="reference")
    got = values_and_grads(params, xs, c0, length, reverse, backend)
    want = values_and_grads(params, xs, c0, length, reverse, "reference")
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
    if length is not None:
        (_, (carry, ys)), _ = got
        assert np.all(np.asarray(ys)[:, 2] == 0)
        np.testing.assert_array_equal(carry.h[2], c0.h[2])  # empty: the initial state


def test_cudnn_semantics_full_length_any_batch_shape():
    params, xs, c0 = setup(rj.lstm(H), batch=(2, 2))
    got = values_and_grads(params, xs, c0, None, False, Cudnn(implementation="reference"))
    want = values_and_grads(params, xs, c0, None, False, "reference")
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_cudnn_refuses_to_run_without_an_nvidia_gpu():
    assert jax.default_backend() == "cpu"
    cell = rj.lstm(H)
    params, xs, _ = setup(cell)
    with pytest.raises(ValueError, match=r"cudnn backend cannot .* needs an NVIDIA GPU.*'cpu'"):
        rj.scan(cell, params, xs, backend="cudnn")


NOT_CUDNN = "not cuDNN's LSTM"


@pytest.mark.parametrize(
    "cell, reason",
    [
        (rj.gru(H), NOT_CUDNN),
        (rj.lstm(H, peephole=True), NOT_CUDNN),
        (rj.lstm(H, proj_size=2), "no projection"),
        (rj.lstm(H, layer_norm=True), NOT_CUDNN),
        (rj.lstm(H, activation="relu"), NOT_CUDNN),
        (rj.lstm(H, dtype=jnp.bfloat16), "float32"),
    ],
    ids=["gru", "peephole", "proj", "layer_norm", "relu", "bf16"],
)
def test_cudnn_refuses_other_cells(cell, reason):
    params = cell.init(jax.random.key(0), F)
    xs = jnp.ones((T, B, F), jnp.float32)
    for backend in ("cudnn", Cudnn(implementation="reference")):
        with pytest.raises(
            ValueError, match=rf"cudnn backend cannot run the {cell.name} .*{reason}"
        ):
            rj.scan(cell, params, xs, backend=backend)


@pytest.mark.parametrize(
    "layer_options",
    [{"recurrent_dropout": 0.3}, {"zoneout": 0.2}],
    ids=["recurrent_dropout", "zoneout"],
)
def test_a_wrapped_lstm_is_refused_not_run_as_the_plain_one(layer_options):
    layer = rj.rnn(rj.lstm(H), backend=Cudnn(implementation="reference"), **layer_options)
    params, xs, _ = setup(rj.lstm(H))
    with pytest.raises(ValueError, match=rf"cudnn backend cannot run .*lstm.*{NOT_CUDNN}"):
        layer.apply(params, xs, key=jax.random.key(1))


def test_cudnn_refuses_resets_and_masks_with_holes():
    cell = rj.lstm(H)
    params, xs, _ = setup(cell)
    backend = Cudnn(implementation="reference")
    resets = jnp.zeros((T, B), bool).at[2, 0].set(True)
    with pytest.raises(ValueError, match="does not restart its carry"):
        rj.scan(cell, params, xs, resets=resets, backend=backend)
    mask = jnp.ones((T, B), bool).at[2, 0].set(False)
    with pytest.raises(ValueError, match="not masks with holes"):
        rj.scan(cell, params, xs, mask=mask, backend=backend)


def test_cudnn_factory_checks_its_options():
    with pytest.raises(ValueError, match="implementation"):
        Cudnn(implementation="cublas")
