"""ConvLSTM: against Flax's ConvLSTMCell step by step and Keras's ConvLSTM2D with the same
weights; three feature axes through the driver (lengths, reverse, resets, vmap) and the layers
``rnn`` and ``bidirectional``."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scan_helpers

import rnn_jax as rj

T, B, HW, C, F = 5, 2, (6, 5), 3, 4
SHAPE = (T, B, *HW, C)


def cell_and_params(kernel_size=3):
    cell = rj.conv_lstm(F, kernel_size, spatial_shape=HW)
    params = cell.init(jax.random.key(0), C)
    return cell, params._replace(bias=jax.random.normal(jax.random.key(3), params.bias.shape))


def test_equals_flax_conv_lstm_cell_step_by_step():
    nn = pytest.importorskip("flax.linen")
    flax_cell = nn.ConvLSTMCell(features=F, kernel_size=(3, 3))
    xs = jax.random.normal(jax.random.key(1), SHAPE)
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
    cell = rj.conv_lstm(F, 3, spatial_shape=HW)
    final, ys = jax.jit(lambda p, x: rj.scan(cell, p, x))(params, xs)
    np.testing.assert_allclose(ys, jnp.stack(want), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(final.c, carry[0], rtol=1e-5, atol=1e-5)


def test_equals_keras_conv_lstm2d_with_the_same_weights():
    os.environ["KERAS_BACKEND"] = "jax"  # before keras is first imported
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "jax":
        pytest.skip(f"keras was imported with the {keras.backend.backend()} backend")
    cell, params = cell_and_params(kernel_size=(3, 2))
    xs = np.asarray(jax.random.normal(jax.random.key(1), SHAPE))
    with jax.numpy_rank_promotion("allow"):  # Keras's own code broadcasts implicitly
        layer = keras.layers.ConvLSTM2D(
            F, (3, 2), padding="same", return_sequences=True, return_state=True
        )
        layer.build((B, T, *HW, C))
        layer.set_weights([np.asarray(w) for w in params])  # kernel, recurrent_kernel, bias
        ys_keras, h_keras, c_keras = layer(np.swapaxes(xs, 0, 1))
    final, ys = rj.scan(cell, params, jnp.asarray(xs))
    np.testing.assert_allclose(ys, np.swapaxes(np.asarray(ys_keras), 0, 1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(final.h, h_keras, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(final.c, c_keras, rtol=1e-5, atol=1e-5)


def test_lengths_reverse_resets_and_gradients_through_the_driver():
    """The sequential and checkpointed backends against the reference, reversed, with lengths
    and resets over images; reversing a valid prefix is scanning its flip."""
    cell, params = cell_and_params()
    xs = jax.random.normal(jax.random.key(1), SHAPE)
    h0 = jax.tree.map(lambda z: z + 0.1, cell.initial_state(params, (B,)))
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
    cell, params = cell_and_params()
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


def test_wrong_images_and_channels_are_named():
    cell, params = cell_and_params()
    with pytest.raises(ValueError, match=r"spatial_shape \(6, 5\) .* got shape \(2, 6, 6, 3\)"):
        rj.scan(cell, params, jnp.ones((T, B, 6, 6, C)))
    with pytest.raises(ValueError, match="xs must have 3 features .* got shape"):
        rj.scan(cell, params, jnp.ones((T, B, *HW, 2)))
    with pytest.raises(ValueError, match=r"rank >= 4 for the conv_lstm cell"):
        rj.scan(cell, params, jnp.ones((T, *HW)))
    with pytest.raises(ValueError, match="kernel_size must be an int or a pair"):
        rj.conv_lstm(F, (3, 3, 3), spatial_shape=HW)
