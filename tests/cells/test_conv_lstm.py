"""ConvLSTM: Keras' own expected numbers for ConvLSTM1D/2D/3D, Keras itself with the same
weights (valid padding, strides, dilation), Flax's ConvLSTMCell step by step; images of a size
learned from the input, through the driver (lengths, reverse, resets, vmap) and the layers."""

from __future__ import annotations

import os

os.environ["KERAS_BACKEND"] = "jax"  # before keras is first imported

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import scan_helpers  # noqa: E402

import rnn_jax as rj  # noqa: E402
from rnn_jax.cells import initial_carry  # noqa: E402

T, B, HW, C, F = 5, 2, (6, 5), 3, 4
SHAPE = (T, B, *HW, C)


def cell_and_params(kernel_size=(3, 3), **options):
    cell = rj.conv_lstm(F, kernel_size, **options)
    params = cell.init(jax.random.key(0), C)
    return cell, params._replace(bias=jax.random.normal(jax.random.key(3), params.bias.shape))


def keras_or_skip():
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "jax":
        pytest.skip(f"keras was imported with the {keras.backend.backend()} backend")
    return keras


# Keras' tests of ConvLSTM1D/2D/3D (test_correctness): a sequence of arange / scale, weights
# constant 0.01 (kernel) and 0.02 (recurrent), bias 0.03 with unit_forget_bias (forget gate 1),
# padding "valid"; the last step's output.
KERAS_EXPECTED = {
    1: (
        (2, 3, 4, 5),
        10,
        [[[0.40807986, 0.40807986], [0.46421072, 0.46421072]],
         [[0.80933154, 0.80933154], [0.8233646, 0.8233646]]],
    ),
    2: (
        (2, 3, 4, 4, 5),
        100,
        [[[[0.48694518, 0.48694518], [0.50237733, 0.50237733]],
          [[0.5461202, 0.5461202], [0.5598283, 0.5598283]]],
         [[[0.8661607, 0.8661607], [0.86909103, 0.86909103]],
          [[0.8774414, 0.8774414], [0.8800861, 0.8800861]]]],
    ),
    3: (
        (2, 3, 4, 4, 4, 5),
        100,
        [[[[[0.99149036, 0.99149036], [0.99180907, 0.99180907]],
           [[0.99258363, 0.99258363], [0.9927925, 0.9927925]]],
          [[[0.99413764, 0.99413764], [0.99420583, 0.99420583]],
           [[0.9943788, 0.9943788], [0.9944278, 0.9944278]]]],
         [[[[0.9950547, 0.9950547], [0.9950547, 0.9950547]],
           [[0.9950547, 0.9950547], [0.9950547, 0.9950547]]],
          [[[0.9950547, 0.9950547], [0.9950547, 0.9950547]],
           [[0.9950547, 0.9950547], [0.9950547, 0.9950547]]]]],
    ),
}  # fmt: skip


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_keras_own_expected_numbers(rank):
    shape, scale, expected = KERAS_EXPECTED[rank]
    sequence = jnp.arange(np.prod(shape), dtype=jnp.float32).reshape(shape) / scale  # [B, T, ...]
    channels, filters, kernel = shape[-1], 2, (3,) * rank
    params = rj.ConvLSTMParams(
        kernel=jnp.full((*kernel, channels, 4 * filters), 0.01),
        recurrent_kernel=jnp.full((*kernel, filters, 4 * filters), 0.02),
        bias=jnp.array([0.03] * filters + [1.0] * filters + [0.03] * 2 * filters),
    )
    layer = rj.rnn(rj.conv_lstm(filters, kernel, padding="valid"))
    state, ys = layer.apply(params, sequence, time_major=False)
    np.testing.assert_allclose(ys[:, -1], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.h, expected, rtol=1e-5, atol=1e-6)


KERAS_CASES = {
    "1d_valid_strides": ((9,), dict(padding="valid", strides=2)),
    "2d_valid_dilation": ((7, 6), dict(padding="valid", dilation_rate=(2, 1))),
    "2d_same_strides": ((7, 6), dict(padding="same", strides=(2, 3))),
    "3d_valid_strides": ((5, 4, 6), dict(padding="valid", strides=(1, 2, 1))),
}


@pytest.mark.parametrize("case", list(KERAS_CASES))
def test_equals_keras_conv_lstm_with_the_same_weights(case):
    keras = keras_or_skip()
    spatial, options = KERAS_CASES[case]
    rank = len(spatial)
    cell, params = cell_and_params((3,) * rank, **options)
    xs = np.asarray(jax.random.normal(jax.random.key(1), (T, B, *spatial, C)))
    with jax.numpy_rank_promotion("allow"):  # Keras's own code broadcasts implicitly
        keras_type = getattr(keras.layers, f"ConvLSTM{rank}D")
        layer = keras_type(F, 3, return_sequences=True, return_state=True, **options)
        layer.build((B, T, *spatial, C))
        layer.set_weights([np.asarray(w) for w in params])  # kernel, recurrent_kernel, bias
        ys_keras, h_keras, c_keras = layer(np.swapaxes(xs, 0, 1))
    final, ys = jax.jit(lambda p, x: rj.scan(cell, p, x))(params, jnp.asarray(xs))
    assert ys.shape[2:-1] == tuple(ys_keras.shape[2:-1]) != spatial
    np.testing.assert_allclose(ys, np.swapaxes(np.asarray(ys_keras), 0, 1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(final.h, h_keras, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(final.c, c_keras, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel_size", [(3,), (3, 3)])
def test_equals_flax_conv_lstm_cell_step_by_step(kernel_size):
    nn = pytest.importorskip("flax.linen")
    spatial = HW[: len(kernel_size)]
    flax_cell = nn.ConvLSTMCell(features=F, kernel_size=kernel_size)
    xs = jax.random.normal(jax.random.key(1), (T, B, *spatial, C))
    carry = flax_cell.initialize_carry(jax.random.key(2), xs.shape[1:])
    variables = flax_cell.init(jax.random.key(4), carry, xs[0])
    step = jax.jit(flax_cell.apply)
    want = []
    for x in xs:
        carry, y = step(variables, carry, x)
        want.append(y)
    # Flax: gates i, g, f, o, a bias in both convolutions and 1 added to the forget gate
    ih, hh = variables["params"]["ih"], variables["params"]["hh"]
    order = lambda a: jnp.concatenate([a[..., g * F : (g + 1) * F] for g in (0, 2, 1, 3)], -1)
    params = rj.ConvLSTMParams(
        kernel=order(ih["kernel"]),
        recurrent_kernel=order(hh["kernel"]),
        bias=order(ih["bias"] + hh["bias"]).at[F : 2 * F].add(1.0),
    )
    cell = rj.conv_lstm(F, kernel_size)  # padding "same", the size taken from the input
    final, ys = jax.jit(lambda p, x: rj.scan(cell, p, x))(params, xs)
    np.testing.assert_allclose(ys, jnp.stack(want), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(final.c, carry[0], rtol=1e-5, atol=1e-5)


def test_lengths_reverse_resets_and_gradients_through_the_driver():
    """The sequential and checkpointed backends against the reference, reversed, with lengths
    and resets over images whose state is smaller than the input (valid padding, a size learned
    from the input); reversing a valid prefix is scanning its flip."""
    cell, params = cell_and_params(padding="valid")
    xs = jax.random.normal(jax.random.key(1), SHAPE)
    h0 = jax.tree.map(lambda z: z + 0.1, initial_carry(cell, params, xs.shape[1:]))
    assert h0.h.shape == (B, 4, 3, F)
    length = jnp.array([5, 3])
    kwargs = {
        "length": length,
        "reverse": True,
        "resets": jnp.zeros((T, B), bool).at[2, 0].set(True),
    }
    want = scan_helpers.value_and_grads(cell, "reference", params, xs, h0, **kwargs)
    for backend in ("sequential", rj.backends.Checkpointed(segment=2)):
        got = scan_helpers.value_and_grads(cell, backend, params, xs, h0, **kwargs)
        jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-5), got, want)
    (_, (_, reversed_ys)), _ = want
    _, flipped = rj.scan(cell, params, rj.flip_valid(xs, length), initial_state=h0, length=length)
    # sequence 1 has no reset: its reverse scan is the scan of its flipped valid prefix
    np.testing.assert_allclose(reversed_ys[:, 1], rj.flip_valid(flipped, length)[:, 1], atol=1e-5)


def test_vmap_and_layers_over_images():
    cell, params = cell_and_params(spatial_shape=HW)
    xs = jax.random.normal(jax.random.key(1), SHAPE)
    length = jnp.array([5, 2])
    _, batched = rj.scan(cell, params, xs, length=length)
    _, mapped = jax.vmap(
        lambda x, n: rj.scan(cell, params, x, length=n), in_axes=(1, 0), out_axes=1
    )(xs, length)
    np.testing.assert_allclose(mapped, batched, rtol=1e-5, atol=1e-5)
    layer = rj.bidirectional(cell)
    layer_params = layer.init(jax.random.key(5), C)
    _, ys = layer.apply(layer_params, xs, length=length)
    _, forward = rj.rnn(cell).apply(layer_params.forward, xs, length=length)
    assert ys.shape == (T, B, *HW, 2 * F) and not np.asarray(ys[2:, 1]).any()
    np.testing.assert_allclose(ys[..., :F], forward, rtol=1e-5, atol=1e-5)
    _, batch_major = layer.apply(layer_params, xs.swapaxes(0, 1), length=length, time_major=False)
    np.testing.assert_allclose(batch_major.swapaxes(0, 1), ys, rtol=1e-6, atol=1e-6)


def test_a_fixed_spatial_shape_is_the_learned_one():
    learned, params = cell_and_params(padding="valid", strides=(2, 1))
    fixed = rj.conv_lstm(F, 3, spatial_shape=HW, padding="valid", strides=(2, 1))
    assert fixed.initial_state(params, (B,)).h.shape == (B, 2, 3, F)
    assert initial_carry(learned, params, (B, *HW, C)).h.shape == (B, 2, 3, F)
    xs = jax.random.normal(jax.random.key(1), SHAPE)
    np.testing.assert_array_equal(rj.scan(learned, params, xs)[1], rj.scan(fixed, params, xs)[1])
    # Newton takes one sequence's carry structure from the input too
    one_d, params = cell_and_params((3,), padding="valid")
    xs = jax.random.normal(jax.random.key(1), (T, 1, 6, C))
    want = rj.scan(one_d, params, xs)[1]
    newton = rj.backends.Newton(jacobian="diagonal")
    np.testing.assert_allclose(rj.scan(one_d, params, xs, backend=newton)[1], want, atol=1e-5)


def test_wrong_images_and_options_are_named():
    cell, params = cell_and_params(spatial_shape=HW)
    with pytest.raises(ValueError, match=r"spatial_shape \(6, 5\) .* got spatial shape \(6, 6\)"):
        rj.scan(cell, params, jnp.ones((T, B, 6, 6, C)))
    with pytest.raises(ValueError, match="xs must have 3 features .* got shape"):
        rj.scan(cell, params, jnp.ones((T, B, *HW, 2)))
    with pytest.raises(ValueError, match=r"rank >= 4 for the conv_lstm cell"):
        rj.scan(cell, params, jnp.ones((T, *HW)))
    learned, _ = cell_and_params(padding="valid", dilation_rate=3)
    with pytest.raises(ValueError, match=r"smaller than the conv_lstm cell's kernel_size"):
        rj.scan(learned, params, jnp.ones((T, B, *HW, C)))
    with pytest.raises(ValueError, match=r"learns its images' size from its input"):
        learned.initial_state(params, (B,))
    with pytest.raises(ValueError, match=r"kernel_size=\(3, 3, 3\), spatial_shape=\(6, 5\)"):
        rj.conv_lstm(F, (3, 3, 3), spatial_shape=HW)
    with pytest.raises(ValueError, match=r"spatial axes \(1, 2 or 3\).* got ints only"):
        rj.conv_lstm(F, 3)
    with pytest.raises(ValueError, match=r"padding must be one of \('same', 'valid'\)"):
        rj.conv_lstm(F, (3, 3), padding="full")
