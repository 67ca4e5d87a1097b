"""Keras interop: parity with Keras 3 itself on the JAX backend (outputs, states, masks,
go_backwards, every merge mode, Sequential with Masking), round trips both ways, refusals."""

from __future__ import annotations

import os

os.environ["KERAS_BACKEND"] = "jax"  # before Keras is first imported

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")
if keras.backend.backend() != "jax":
    pytest.skip("Keras was imported on another backend", allow_module_level=True)

import rnn_jax as rj  # noqa: E402
import rnn_jax.interop.keras as rjk  # noqa: E402

# Keras' own NumPy conversions, on every weight read or written.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy")

B, T, F, H = 3, 5, 3, 4
RNG = np.random.default_rng(0)
X = RNG.normal(size=(B, T, F)).astype(np.float32)  # Keras' [B, T, F]
XS = jnp.asarray(X).swapaxes(0, 1)  # ours, [T, B, F]
# Holes, a masked first step (the held output is the initial state) and trailing padding.
MASK = np.array([[1, 1, 1, 1, 1], [1, 0, 1, 1, 0], [0, 1, 1, 0, 0]], bool)
LENGTHS = np.array([5, 3, 1])
PREFIX = np.arange(T)[None] < LENGTHS[:, None]  # the same right padding as a Keras mask


def randomized(layer):
    """``layer`` built, every weight (biases too) drawn away from Keras' init."""
    if not layer.built:
        layer.build((None, None, F))
    layer.set_weights([RNG.uniform(-0.7, 0.7, w.shape).astype(np.float32) for w in layer.weights])
    return layer


def assert_close(got, want):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def apply_jitted(layer, params, **kwargs):
    """``layer.apply`` compiled once, on ``XS``."""
    return jax.jit(lambda p, kw: layer.apply(p, XS, **kw))(params, kwargs)


def keras_states(values, count):
    return [np.asarray(v) for v in values[-count:]]


def sequences(**options):
    return {"return_sequences": True, "return_state": True, **options}


# name: (Keras layer, number of states, how the steps that count are given)
LAYERS = {
    "simple_relu": (lambda: keras.layers.SimpleRNN(H, activation="relu", **sequences()), 1, "mask"),
    "gru": (lambda: keras.layers.GRU(H, **sequences()), 1, "mask"),
    "gru_reset_before_backwards": (
        lambda: keras.layers.GRU(
            H,
            reset_after=False,
            recurrent_activation="hard_sigmoid",
            **sequences(go_backwards=True),
        ),
        1,
        "length",
    ),
    "lstm_backwards": (lambda: keras.layers.LSTM(H, **sequences(go_backwards=True)), 2, "mask"),
}


@pytest.fixture(scope="module")
def keras_layers():
    return {name: randomized(make()) for name, (make, _, _) in LAYERS.items()}


def initial_states(count):
    return [RNG.normal(size=(B, H)).astype(np.float32) for _ in range(count)]


def as_carry(states):
    return rj.LSTMState(*map(jnp.asarray, states)) if len(states) == 2 else jnp.asarray(states[0])


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_matches_keras_with_masks_and_initial_state(keras_layers, name):
    keras_layer = keras_layers[name]
    _, count, steps = LAYERS[name]
    h0 = initial_states(count)
    if steps == "mask":
        want = keras_layer(X, mask=MASK, initial_state=h0)
        given = {"mask": jnp.asarray(MASK.T)}
    else:  # right padding: Keras' prefix mask is our length
        want = keras_layer(X, mask=PREFIX, initial_state=h0)
        given = {"length": jnp.asarray(LENGTHS)}
    layer, params = rjk.from_keras(keras_layer)
    state, ys = apply_jitted(layer, params, initial_state=as_carry(h0), **given)
    assert_close(ys.swapaxes(0, 1), want[0])
    for got, expected in zip(jax.tree.leaves(state), keras_states(want, count), strict=True):
        assert_close(got, expected)


def test_go_backwards_is_reverse_with_outputs_flipped_over_the_whole_axis(keras_layers):
    layer, params = rjk.from_keras(keras_layers["lstm_backwards"])
    length = jnp.asarray(LENGTHS)
    both = jax.jit(
        lambda p: (
            layer.apply(p, XS, length=length),
            rj.rnn(layer.spec.layer.spec.cell, reverse=True).apply(p, XS, length=length),
        )
    )
    (state, ys), (want_state, want) = both(params)
    # Keras reads the padding first, holding the zero initial state: those outputs are zeros.
    assert_close(ys, jnp.flip(want, 0))
    assert_close(state.h, want_state.h)


@pytest.fixture(scope="module")
def keras_bidirectional():
    layer = keras.layers.Bidirectional(
        keras.layers.SimpleRNN(H, **sequences()),
        backward_layer=keras.layers.GRU(H, **sequences(go_backwards=True)),
    )
    return randomized(layer)


def test_bidirectional_matches_keras_for_every_merge_mode(keras_bidirectional):
    merges = ["concat", "sum", "mul", "ave", None]
    wants, converted = [], []
    for merge in merges:
        # One layer serves every mode: Keras reads merge_mode when called, from_keras when
        # converting.
        keras_bidirectional.merge_mode = merge
        wants.append(keras_bidirectional(X, mask=MASK))
        converted.append(rjk.from_keras(keras_bidirectional))
    mask = jnp.asarray(MASK.T)
    # One compiled program for the five layers.
    results = jax.jit(
        lambda ps: [
            layer.apply(p, XS, mask=mask) for (layer, _), p in zip(converted, ps, strict=True)
        ]
    )([params for _, params in converted])
    for merge, (layer, _), want, (state, ys) in zip(merges, converted, wants, results, strict=True):
        assert layer.spec.merge == merge
        outputs = list(ys) if merge is None else [ys]
        got = [y.swapaxes(0, 1) for y in outputs] + jax.tree.leaves(state)
        for g, w in zip(got, want, strict=True):
            assert_close(g, w)


@pytest.fixture(scope="module")
def keras_sequential():
    model = keras.Sequential(
        [
            keras.Input((None, F)),
            keras.layers.Masking(0.0),
            keras.layers.LSTM(H, return_sequences=True),
            keras.layers.Bidirectional(
                keras.layers.GRU(H, return_sequences=True), merge_mode="ave"
            ),
            keras.layers.SimpleRNN(H, return_sequences=True, go_backwards=True),
        ]
    )
    return randomized(model)


def test_sequential_with_masking_matches_keras(keras_sequential):
    x = X.copy()
    x[1, 1] = 0.0  # a hole
    x[2, 3:] = 0.0  # padding
    layer, params = rjk.from_keras(keras_sequential)
    assert isinstance(layer.spec, rjk.MaskingSpec)
    _, ys = jax.jit(layer.apply)(params, jnp.asarray(x).swapaxes(0, 1))
    assert_close(ys.swapaxes(0, 1), keras_sequential(x))


def test_to_keras_of_from_keras_has_the_original_weights(
    keras_layers, keras_bidirectional, keras_sequential
):
    for keras_layer in [*keras_layers.values(), keras_bidirectional, keras_sequential]:
        back = rjk.to_keras(*rjk.from_keras(keras_layer))
        assert type(back) is type(keras_layer)
        assert len(back.weights) == len(keras_layer.weights)
        for got, want in zip(back.weights, keras_layer.weights, strict=True):
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=want.path)


def test_to_keras_computes_the_layer_and_from_keras_gives_its_params_back():
    cell = rj.lstm(H, gate_activation="hard_sigmoid")
    layer = rj.rnn(cell)
    params = jax.jit(layer.init, static_argnums=1)(jax.random.key(0), F)
    keras_layer = rjk.to_keras(layer, params, return_state=True)
    state, ys = apply_jitted(layer, params, mask=jnp.asarray(MASK.T))
    # rj.rnn becomes zero_output_for_mask=True: Keras then outputs zeros where rj does.
    want = keras_layer(X, mask=MASK)
    assert_close(ys.swapaxes(0, 1), want[0])
    assert_close(state.h, want[1])
    assert_close(state.c, want[2])
    again, back = rjk.from_keras(keras_layer)
    jax.tree.map(np.testing.assert_array_equal, back, params)
    assert isinstance(again.spec, rj.layers.RNNSpec) and again.spec.cell == cell


def test_gru_gates_are_permuted_and_biases_split():
    keras_layer = randomized(keras.layers.GRU(H))
    _, params = rjk.from_keras(keras_layer)
    kernel, _, bias = (np.asarray(w) for w in keras_layer.weights)
    np.testing.assert_array_equal(params.kernel[:, :H], kernel[:, H : 2 * H])  # r
    np.testing.assert_array_equal(params.kernel[:, H : 2 * H], kernel[:, :H])  # z
    np.testing.assert_array_equal(params.bias[2 * H :], bias[0, 2 * H :])  # the input bias
    np.testing.assert_array_equal(params.recurrent_bias[:H], bias[1, H : 2 * H])


CONV = {
    1: ((9,), {"padding": "valid", "strides": 2}),
    2: ((7, 6), {"padding": "valid", "dilation_rate": (2, 1), "go_backwards": True}),
    3: ((4, 5, 3), {"padding": "same"}),
}


@pytest.mark.parametrize("rank", list(CONV))
def test_conv_lstm_from_keras_computes_it_and_to_keras_gives_it_back(rank):
    spatial, options = CONV[rank]
    keras_type = getattr(keras.layers, f"ConvLSTM{rank}D")
    keras_layer = keras_type(H, 3, return_sequences=True, return_state=True, **options)
    keras_layer.build((None, None, *spatial, F))
    randomized(keras_layer)
    layer, params = rjk.from_keras(keras_layer)
    x = RNG.normal(size=(B, T, *spatial, F)).astype(np.float32)  # Keras' [B, T, *spatial, F]
    state, ys = jax.jit(lambda p: layer.apply(p, x, time_major=False))(params)
    with jax.numpy_rank_promotion("allow"):  # Keras's own code broadcasts implicitly
        want_ys, want_h, want_c = keras_layer(x)  # (Keras' ConvLSTM fails on masks)
    assert_close(ys, want_ys)
    assert_close(state.h, want_h)
    assert_close(state.c, want_c)
    back = rjk.to_keras(layer, params)
    assert type(back) is type(keras_layer)
    for name in ("kernel_size", "strides", "padding", "dilation_rate", "go_backwards"):
        assert getattr(back, name) == getattr(keras_layer, name), name
    for got, want in zip(back.weights, keras_layer.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=want.path)


REFUSED = {
    "stateful": (lambda: keras.layers.LSTM(H, stateful=True), ValueError, "stateful=True"),
    "unroll": (lambda: keras.layers.GRU(H, unroll=True), ValueError, "unroll=True"),
    "constraint": (
        lambda: keras.layers.LSTM(H, recurrent_constraint="non_neg"),
        ValueError,
        "recurrent_constraint",
    ),
    "regularizer": (
        lambda: keras.layers.SimpleRNN(H, kernel_regularizer="l2"),
        ValueError,
        "kernel_regularizer",
    ),
    "gelu": (lambda: keras.layers.GRU(H, activation="gelu"), ValueError, "'gelu'"),
    "forward_going_backwards": (
        lambda: keras.layers.Bidirectional(
            keras.layers.GRU(H, go_backwards=True), backward_layer=keras.layers.GRU(H)
        ),
        ValueError,
        "forward_layer with go_backwards=True",
    ),
    "dropout_layer": (
        lambda: keras.Sequential(
            [
                keras.layers.LSTM(H, return_sequences=True),
                keras.layers.Dropout(0.5),
                keras.layers.LSTM(H),
            ]
        ),
        TypeError,
        "got Dropout",
    ),
    "dense": (lambda: keras.layers.Dense(H), TypeError, "got Dense"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_from_keras_refuses_what_has_no_exact_form(name):
    make, error, words = REFUSED[name]
    with pytest.raises(error, match=words):
        rjk.from_keras(make())


def test_from_keras_asks_for_a_built_layer():
    with pytest.raises(ValueError, match="must be built"):
        rjk.from_keras(keras.layers.LSTM(H))


NOT_KERAS = {
    "peephole": (rj.rnn(rj.lstm(H, peephole=True)), "peephole"),
    "mgu": (rj.rnn(rj.mgu(H)), "the mgu cell"),
    "reverse": (rj.rnn(rj.gru(H), reverse=True), "reverse=True outside bidirectional"),
    "merge_function": (rj.bidirectional(rj.gru(H), merge=jnp.maximum), "merged by"),
    "stack_dropout": (rj.stack([rj.gru(H), rj.gru(H)], dropout=0.1), "dropout=0.1"),
    "zoneout": (rj.rnn(rj.gru(H), zoneout=0.1), "zoneout=0.1"),
    "gelu": (rj.rnn(rj.gru(H, activation="gelu")), "activation='gelu'"),
    "conv_size": (rj.rnn(rj.conv_lstm(H, (3, 3))), "ConvLSTM2D without its images' size"),
    "skip": (rj.stack([rj.gru(H), rj.gru(H)], skip_connections=True), "skip_connections=True"),
}


@pytest.mark.parametrize("name", list(NOT_KERAS))
def test_to_keras_refuses_what_keras_cannot_express(name):
    layer, words = NOT_KERAS[name]
    params = jax.eval_shape(lambda key: layer.init(key, F), jax.random.key(0))  # shapes suffice
    with pytest.raises(ValueError, match=words):
        rjk.to_keras(layer, params)
