"""The Equinox module computes what the pure core computes (jit, grad, vmap, an optax step), and
Equinox's own cells map to ours and back, step by step."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

eqx = pytest.importorskip("equinox")
optax = pytest.importorskip("optax")

import rnn_jax as rj  # noqa: E402
from rnn_jax.equinox import RNN, from_equinox, to_equinox  # noqa: E402

B, T, F, H = 3, 6, 3, 4
XS = jax.random.normal(jax.random.key(0), (B, T, F))  # batch-major: one [T, F] per example
LENGTH = jnp.array([6, 2, 4])
# Two cells, both directions, dropout: one layer serves every test. The wrappers do not depend
# on the scan kernel, and the reference one compiles fastest.
REF = "reference"
LAYER = rj.bidirectional(
    rj.rnn(rj.gru(H), backend=REF),
    rj.rnn(rj.lstm(H), reverse=True, input_dropout=0.5, backend=REF),
)


def close(got, want, tol=1e-5):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=tol, atol=tol), got, want)


def loss(ys):
    return jnp.sum(jnp.sin(ys))  # a cotangent that depends on the outputs


def pure(params, xs, length, key=None):
    """The core on the time-major batch, outputs back to batch-major."""
    state, ys = LAYER.apply(params, xs.swapaxes(0, 1), length=length, key=key)
    return state, ys.swapaxes(0, 1)


@pytest.fixture(scope="module")
def model():
    return eqx.filter_jit(RNN)(LAYER, F, key=jax.random.key(1))  # one compile, not many ops


def test_vmapped_module_under_filter_jit_is_the_batched_layer(model):
    @eqx.filter_jit
    def both(model):
        batched = jax.vmap(lambda x, n: model(x, length=n))(XS, LENGTH)
        return batched, pure(model.params, XS, LENGTH)

    (states, ys), (want_states, want) = both(model)
    close(ys, want)
    close(states, want_states)
    fields, params = jax.tree.leaves(model), jax.tree.leaves(model.params)
    assert all(a is b for a, b in zip(fields, params, strict=True))  # the params are the fields


def test_filter_grad_and_an_optax_step_are_the_pure_ones(model):
    optimizer = optax.adam(1e-2)

    def module_loss(model):
        return loss(jax.vmap(lambda x, n: model(x, length=n)[1])(XS, LENGTH))

    def pure_loss(params):
        return loss(pure(params, XS, LENGTH)[1])

    @eqx.filter_jit
    def steps(model):
        grads = eqx.filter_grad(module_loss)(model)
        state = optimizer.init(eqx.filter(model, eqx.is_array))
        updates, _ = optimizer.update(grads, state, eqx.filter(model, eqx.is_array))
        stepped = eqx.apply_updates(model, updates)
        want_grads = jax.grad(pure_loss)(model.params)
        want_updates, _ = optimizer.update(want_grads, optimizer.init(model.params))
        return grads, stepped, want_grads, optax.apply_updates(model.params, want_updates)

    grads, stepped, want_grads, want_params = steps(model)
    assert isinstance(grads, RNN) and isinstance(stepped, RNN)
    close(grads.params, want_grads)
    close(stepped.params, want_params)
    assert not np.allclose(stepped.params.backward.kernel, model.params.backward.kernel)


def test_a_key_turns_dropout_on_as_in_the_layer(model):
    @eqx.filter_jit
    def calls(model, key):
        want = LAYER.apply(model.params, XS[0], key=key)[1]
        return model(XS[0], key=key)[1], model(XS[0])[1], want

    noisy, plain, want = calls(model, jax.random.key(2))
    close(noisy, want)
    assert not np.allclose(noisy, plain)


def test_one_sequence_at_a_time(model):
    with pytest.raises(ValueError, match=r"one sequence of rank 2.*jax.vmap\(model\)"):
        model(XS)


PEERS = {
    "lstm": (lambda key: eqx.nn.LSTMCell(F, H, key=key), rj.lstm(H)),
    "gru": (lambda key: eqx.nn.GRUCell(F, H, key=key), rj.gru(H)),
}


def peer_scan(module, xs, hidden):
    """The hidden state after each step of Equinox's own cell, and the last carry."""

    def step(hidden, x):
        hidden = module(x, hidden)
        return hidden, hidden[0] if isinstance(hidden, tuple) else hidden

    final, ys = jax.lax.scan(step, hidden, xs)
    return ys, final


@pytest.mark.parametrize("kind", list(PEERS))
def test_equinox_cells_map_to_ours_and_back_step_by_step(kind):
    make, ours = PEERS[kind]
    h0 = jax.random.normal(jax.random.key(4), (H,))
    carry0, peer_carry0 = (rj.LSTMState(h0, -h0), (h0, -h0)) if kind == "lstm" else (h0, h0)
    # Ours -> Equinox (one step), from params with every bias nonzero: the r and z recurrent
    # biases fold.
    shapes = jax.eval_shape(lambda key: ours.init(key, F), jax.random.key(6))
    noisy = jax.tree.map(lambda p: jax.random.normal(jax.random.key(5), p.shape), shapes)

    @eqx.filter_jit
    def compare(peer, noisy):
        cell, params = from_equinox(peer)
        back = to_equinox(ours, noisy)
        return (
            (
                peer_scan(peer, XS[0], peer_carry0),
                rj.scan(cell, params, XS[0], initial_state=carry0, backend=REF),
            ),
            (back(XS[1, 0], peer_carry0), ours.step(noisy, carry0, XS[1, 0])[0]),
            (to_equinox(cell, params), peer),
        )

    peer = make(jax.random.key(3))  # Equinox's init draws every bias away from zero
    ((want_ys, want_final), (final, ys)), back, (round_trip, same) = compare(peer, noisy)
    close(ys, want_ys)
    close(tuple(final) if kind == "lstm" else final, want_final)
    close(tuple(back[1]) if kind == "lstm" else back[1], back[0])
    jax.tree.map(np.testing.assert_array_equal, round_trip, same)


def test_to_equinox_refuses_cells_equinox_has_not():
    cell = rj.lstm(H, peephole=True)
    params = jax.eval_shape(lambda key: cell.init(key, F), jax.random.key(0))  # shapes suffice
    with pytest.raises(ValueError, match="the lstm cell"):
        to_equinox(cell, params)
