"""Layers: rnn, bidirectional, stack, dropout and zoneout, and the specs exports read."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_jax as rj
from rnn_jax.layers import Layer

T, B, F, H = 5, 3, 3, 4
LENGTH = jnp.array([5, 2, 3])


def normal(shape, seed):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


XS = normal((T, B, F), 0)


def close(a, b, tol=1e-5):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=tol, atol=tol), a, b)


def noisy_init(layer, seed, input_size=F):
    """``layer.init``'s structure with N(0, 0.5²) everywhere (biases included)."""
    shapes = jax.eval_shape(lambda key: layer.init(key, input_size), jax.random.key(0))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(0.5 * rng.standard_normal(s.shape), s.dtype), shapes)


def identity_layer(**rates):
    """An rnn over ``h_t = x_t + h_{t-1}`` (identity activation and weights, F = H = 4)."""
    cell = rj.simple(H, activation="identity")
    params = rj.SimpleParams(jnp.eye(H), jnp.eye(H), jnp.zeros(H))
    return rj.rnn(cell, **rates), params


def passthrough(**rates):
    """An rnn whose outputs are its inputs (no recurrence), F = H = 4."""
    cell = rj.simple(H, activation="identity")
    params = rj.SimpleParams(jnp.eye(H), jnp.zeros((H, H)), jnp.zeros(H))
    return rj.rnn(cell, **rates), params


IDENTITY = Layer(init=lambda key, size: (), apply=lambda p, xs, **kw: (None, xs))


# --- rnn ---------------------------------------------------------------------------------------


def test_rnn_layer_is_the_scan():
    cell = rj.lstm(H, proj_size=2)
    layer = rj.rnn(cell, reverse=True, backend="reference")
    params = noisy_init(layer, 0)
    h0 = rj.LSTMState(normal((B, 2), 1), normal((B, H), 2))

    @jax.jit
    def compare(params, h0):
        return {
            "lengths": (
                layer.apply(params, XS, length=LENGTH),
                rj.scan(cell, params, XS, length=LENGTH, reverse=True),
            ),
            "initial_state": (
                layer.apply(params, XS, initial_state=h0),
                rj.scan(cell, params, XS, initial_state=h0, reverse=True),
            ),
        }

    for got, want in compare(params, h0).values():
        close(got, want)
    assert layer.init is cell.init


# --- bidirectional -----------------------------------------------------------------------------


@pytest.mark.parametrize("merge", ["concat", "sum", "mul", "ave", None, jnp.maximum])
def test_bidirectional_merges(merge):
    cell = rj.gru(H)
    layer = rj.bidirectional(cell, merge=merge)
    params = noisy_init(layer, 0)
    assert isinstance(params, rj.BidirectionalParams)

    @jax.jit
    def compare(params):
        want_fwd = rj.scan(cell, params.forward, XS, length=LENGTH)
        want_bwd = rj.scan(cell, params.backward, XS, length=LENGTH, reverse=True)
        return layer.apply(params, XS, length=LENGTH), want_fwd, want_bwd

    ((fwd_state, bwd_state), ys), want_fwd, want_bwd = compare(params)
    close((fwd_state, bwd_state), (want_fwd[0], want_bwd[0]))
    f, b = want_fwd[1], want_bwd[1]
    expected = {
        "concat": jnp.concatenate([f, b], axis=-1),
        "sum": f + b,
        "mul": f * b,
        "ave": (f + b) / 2,
        None: (f, b),
        jnp.maximum: jnp.maximum(f, b),  # a merge function, as Flax's merge_fn
    }[merge]
    close(ys, expected)
    hash(layer)


@pytest.mark.parametrize("kind", ["bidirectional", "stack_of_bidirectional"])
def test_padded_batch_is_exact_against_each_sequence_alone(kind):
    if kind == "bidirectional":
        layer = rj.bidirectional(rj.lstm(H))
    else:
        layer = rj.stack([rj.bidirectional(rj.gru(H)), rj.bidirectional(rj.lstm(H), merge="sum")])
    params = noisy_init(layer, 0)
    lengths = [int(n) for n in LENGTH]

    @jax.jit
    def compare(params):
        # each sequence of the batch also run alone, unpadded
        alone = [layer.apply(params, XS[:n, b]) for b, n in enumerate(lengths)]
        return layer.apply(params, XS, length=LENGTH), alone

    (state, ys), alone = compare(params)
    for b, (alone_state, alone_ys) in enumerate(alone):
        n = lengths[b]
        close(ys[:n, b], alone_ys)
        assert not np.asarray(ys[n:, b]).any()
        close(jax.tree.map(lambda leaf, b=b: leaf[b], state), alone_state)


def test_bidirectional_with_its_own_backward_cell_and_layers():
    layer = rj.bidirectional(rj.lstm(H), rj.gru(2))
    # a backward *layer* runs as given: rnn(cell, reverse=True) is the same as the cell
    as_layers = rj.bidirectional(rj.rnn(rj.lstm(H)), rj.rnn(rj.gru(2), reverse=True))
    params = noisy_init(layer, 0)

    @jax.jit
    def compare(params):
        return (
            layer.apply(params, XS, length=LENGTH),
            rj.scan(rj.gru(2), params.backward, XS, length=LENGTH, reverse=True),
            as_layers.apply(params, XS, length=LENGTH),
        )

    ((_, bwd_state), ys), want_bwd, given = compare(params)
    assert ys.shape == (T, B, H + 2) and bwd_state.shape == (B, 2)
    close(ys[..., H:], want_bwd[1])
    close(given[1], ys)


def test_bidirectional_of_a_layer_reverses_the_whole_layer():
    inner = rj.stack([rj.gru(H), rj.lstm(H)])
    layer = rj.bidirectional(inner, merge=None)
    params = noisy_init(layer, 0)

    @jax.jit
    def compare(params):
        flipped_state, flipped_ys = inner.apply(
            params.backward, rj.flip_valid(XS, LENGTH), length=LENGTH
        )
        return (
            layer.apply(params, XS, length=LENGTH),
            inner.apply(params.forward, XS, length=LENGTH)[1],
            (flipped_state, rj.flip_valid(flipped_ys, LENGTH)),
        )

    ((_, bwd_state), (ys_fwd, ys_bwd)), want_fwd, want_bwd = compare(params)
    close(ys_fwd, want_fwd)
    close((bwd_state, ys_bwd), want_bwd)


def test_reversed_layer_of_an_rnn_is_the_reverse_scan():
    cell = rj.lstm(H)
    params = noisy_init(rj.rnn(cell), 0)
    compare = jax.jit(
        lambda params: (
            rj.reversed_layer(rj.rnn(cell)).apply(params, XS, length=LENGTH),
            rj.rnn(cell, reverse=True).apply(params, XS, length=LENGTH),
        )
    )
    close(*compare(params))


def test_a_mask_reaches_every_layer_of_stacks_and_bidirectionals():
    # Holes, and a masked first step; with LENGTH as well.
    mask = jnp.asarray(np.random.default_rng(3).random((T, B)) < 0.7).at[0, 1].set(False)
    gru, lstm = rj.gru(H), rj.lstm(H)
    layer = rj.stack([rj.bidirectional(rj.stack([gru])), lstm])  # a reversed_layer backwards
    params = noisy_init(layer, 0)

    @jax.jit
    def compare(params):
        both, top = params
        given = {"length": LENGTH, "mask": mask}
        fwd = rj.scan(gru, both.forward[0], XS, **given)[1]
        bwd = rj.scan(gru, both.backward[0], XS, reverse=True, **given)[1]
        want = rj.scan(lstm, top, jnp.concatenate([fwd, bwd], axis=-1), **given)[1]
        return layer.apply(params, XS, **given)[1], want

    close(*compare(params))


def test_bidirectional_initial_state_is_a_pair():
    layer = rj.bidirectional(rj.gru(H))
    params = noisy_init(layer, 0)
    h0 = (normal((B, H), 1), normal((B, H), 2))
    apply = jax.jit(layer.apply)
    (fwd, _), _ = apply(params, XS, initial_state=h0, length=LENGTH)
    scan = jax.jit(lambda p, h: rj.scan(rj.gru(H), p, XS, initial_state=h, length=LENGTH))
    close(fwd, scan(params.forward, h0[0])[0])
    # with nothing to read, both directions keep their initial states
    state, _ = apply(params, XS, initial_state=h0, length=jnp.zeros(B, int))
    close(state, h0, 0)
    with pytest.raises(ValueError, match=r"initial_state of a bidirectional layer must be a pair"):
        layer.apply(params, XS, initial_state=h0[0])
    with pytest.raises(ValueError, match=r"merge must be one of .*; got 'max'"):
        rj.bidirectional(rj.gru(H), merge="max")


# --- stack -------------------------------------------------------------------------------------


def test_stack_feeds_each_layer_the_previous_outputs_and_returns_every_state():
    layers = [rj.gru(H), rj.bidirectional(rj.lstm(H)), rj.simple(2)]
    layer = rj.stack(layers)
    params = noisy_init(layer, 0)
    assert isinstance(params, list) and len(params) == 3
    h0 = [normal((B, H), 1), None, normal((B, 2), 2)]

    @jax.jit
    def compare(params, h0):
        s1, y1 = rj.scan(rj.gru(H), params[0], XS, length=LENGTH, initial_state=h0[0])
        s2, y2 = rj.bidirectional(rj.lstm(H)).apply(params[1], y1, length=LENGTH)
        s3, y3 = rj.scan(rj.simple(2), params[2], y2, length=LENGTH, initial_state=h0[2])
        return layer.apply(params, XS, length=LENGTH, initial_state=h0), ([s1, s2, s3], y3)

    close(*compare(params, h0))
    with pytest.raises(ValueError, match=r"initial_state must hold 3 entries \(one per layer\)"):
        layer.apply(params, XS, initial_state=[None])
    with pytest.raises(ValueError, match=r"params must hold 3 entries \(one per layer\); got 2"):
        layer.apply(params[:2], XS)
    with pytest.raises(ValueError, match=r"layers must hold at least one"):
        rj.stack([])


def test_stack_residual_adds_inputs_from_the_second_layer_on():
    layer = rj.stack([rj.gru(H), rj.lstm(H), rj.gru(H)], residual=True)
    params = noisy_init(layer, 0)

    @jax.jit
    def compare(params):
        _, y1 = rj.scan(rj.gru(H), params[0], XS, length=LENGTH)
        _, y2 = rj.scan(rj.lstm(H), params[1], y1, length=LENGTH)
        _, y3 = rj.scan(rj.gru(H), params[2], y1 + y2, length=LENGTH)
        return layer.apply(params, XS, length=LENGTH)[1], y1 + y2 + y3

    close(*compare(params))
    with pytest.raises(ValueError, match=r"residual needs layer 1 to output its input size 4; it"):
        noisy_init(rj.stack([rj.gru(H), rj.gru(H + 1)], residual=True), 0)


def test_stack_skip_connections_are_haikus_deep_rnn_equations():
    """Haiku's DeepRNN(skip_connections=True), written out step by step: layer 0 reads x_t,
    layer i > 0 reads [x_t, y_{i-1,t}], and the output is [y_0,t, y_1,t, ...]."""
    cells = [rj.gru(H), rj.lstm(3), rj.simple(2)]
    layer = rj.stack(cells, skip_connections=True)
    params = noisy_init(layer, 0)
    assert [p.kernel.shape[0] for p in params] == [F, F + H, F + 3]

    def equations(params):
        carries = [cell.initial_state(p, (B,)) for cell, p in zip(cells, params, strict=True)]
        ys = []
        for x in XS:
            outputs = []
            for i, (cell, p) in enumerate(zip(cells, params, strict=True)):
                reads = x if i == 0 else jnp.concatenate([x, outputs[-1]], axis=-1)
                carries[i], y = cell.step(p, carries[i], reads)
                outputs.append(y)
            ys.append(jnp.concatenate(outputs, axis=-1))
        return carries, jnp.stack(ys)

    got, want = jax.jit(lambda p: (layer.apply(p, XS), equations(p)))(params)
    close(got, want)
    with pytest.raises(ValueError, match=r"residual and skip_connections cannot both be set"):
        rj.stack(cells, residual=True, skip_connections=True)


def test_stack_skip_connections_with_lengths_and_dropout_reach_every_layer():
    layer = rj.stack([rj.gru(H), rj.gru(H)], dropout=0.5, skip_connections=True)
    params = noisy_init(layer, 1)
    apply = lambda p, key: layer.apply(p, XS, length=LENGTH, key=key)[1]
    ys, plain = jax.jit(lambda p: (apply(p, jax.random.key(0)), apply(p, None)))(params)
    assert ys.shape == (T, B, 2 * H) and not np.asarray(ys[2:, 1]).any()
    close(ys[..., :H], plain[..., :H])  # the first layer sees no dropout
    assert (np.asarray(ys[..., H:]) != np.asarray(plain[..., H:])).any()


def test_stack_dropout_only_with_a_key_and_one_mask_per_sequence():
    xs = jnp.ones((T, 64, 8))
    layer = rj.stack([IDENTITY, IDENTITY], dropout=0.5)
    _, same = layer.apply([(), ()], xs)
    np.testing.assert_array_equal(same, xs)  # no key: nothing dropped
    _, ys = layer.apply([(), ()], xs, key=jax.random.key(0))
    ys = np.asarray(ys)
    assert set(np.unique(ys)) == {0.0, 2.0}  # inverted dropout: kept units scaled by 1/(1-p)
    np.testing.assert_array_equal(ys, np.broadcast_to(ys[0], ys.shape))  # same mask every step
    assert 0.3 < (ys[0] == 0).mean() < 0.7
    _, again = layer.apply([(), ()], xs, key=jax.random.key(0))
    np.testing.assert_array_equal(again, ys)
    _, other = layer.apply([(), ()], xs, key=jax.random.key(1))
    assert (np.asarray(other) != ys).any()
    # the first layer's inputs are never dropped
    _, first = rj.stack([IDENTITY], dropout=0.5).apply([()], xs, key=jax.random.key(0))
    np.testing.assert_array_equal(first, xs)


# --- dropout and zoneout in rnn ----------------------------------------------------------------


def test_without_a_key_dropout_is_off():
    cell = rj.lstm(H)
    params = noisy_init(rj.rnn(cell), 0)
    noisy = rj.rnn(cell, input_dropout=0.5, recurrent_dropout=0.5, output_dropout=0.5)

    @jax.jit
    def runs(params, key):
        return (
            noisy.apply(params, XS, length=LENGTH),
            rj.rnn(cell).apply(params, XS, length=LENGTH),
            noisy.apply(params, XS, length=LENGTH, key=key),
        )

    off, plain, keyed = runs(params, jax.random.key(0))
    close(off, plain, 0)
    # with a key it is on, and reproducible
    assert (np.asarray(keyed[1]) != np.asarray(plain[1])).any()
    close(runs(params, jax.random.key(0))[2], keyed, 0)


@pytest.mark.parametrize("where", ["input_dropout", "output_dropout"])
def test_input_and_output_dropout_masks_are_constant_over_time(where):
    layer, params = passthrough(**{where: 0.5})
    xs = jnp.ones((T, 64, H))
    _, ys = layer.apply(params, xs, key=jax.random.key(0))
    ys = np.asarray(ys)
    assert set(np.unique(ys)) == {0.0, 2.0}
    # a dropped feature stays dropped at every step of its sequence
    np.testing.assert_array_equal(ys, np.broadcast_to(ys[0], ys.shape))
    assert 0.3 < (ys[0] == 0).mean() < 0.7
    assert (ys[0, 0] != ys[0, 1:]).any()  # masks differ between sequences


def test_recurrent_dropout_masks_the_fed_back_state_the_same_way_every_step():
    layer, params = identity_layer(recurrent_dropout=0.5)
    xs = jnp.ones((T, 64, H))
    _, ys = layer.apply(params, xs, key=jax.random.key(0))
    ys = np.asarray(ys)
    # h_t = 1 + m * h_{t-1}: a dropped unit (m = 0) is 1 at every step; a kept one (m = 2)
    # is 1, 3, 7, 15, 31: never a mix, so the mask is the same at every step
    dropped, kept = np.ones(T), 2.0 ** np.arange(1, T + 1) - 1
    per_unit = ys.reshape(T, -1).T
    is_dropped = (per_unit == dropped).all(axis=1)
    is_kept = (per_unit == kept).all(axis=1)
    assert (is_dropped | is_kept).all()
    assert 0.3 < is_dropped.mean() < 0.7
    # an LSTM's h is masked, its cell c is not: with no recurrent weights, h feeds nothing
    # back, so the masked run equals the plain one exactly
    lstm = rj.rnn(rj.lstm(H), recurrent_dropout=0.5)
    lstm_params = noisy_init(lstm, 0)
    lstm_params = lstm_params._replace(
        recurrent_kernel=jnp.zeros_like(lstm_params.recurrent_kernel)
    )
    runs = jax.jit(lambda p, key: (lstm.apply(p, XS, key=key), lstm.apply(p, XS)))
    masked, plain = runs(lstm_params, jax.random.key(0))
    close(masked, plain, 0)
    # ... and with them, the mask changes the run
    with_weights = noisy_init(lstm, 0)
    masked, plain = runs(with_weights, jax.random.key(0))
    assert (np.asarray(masked[1]) != np.asarray(plain[1])).any()


def test_zoneout_is_the_expected_blend_without_a_key():
    layer, params = identity_layer(zoneout=0.25)
    state, ys = layer.apply(params, jnp.ones((T, 2, H)), length=jnp.array([T, 3]))
    # the carry moves to 0.25 * h + 0.75 * (h + 1) each step, so h_t = 0.75 t, and the output
    # is that zoned-out state (Krueger et al.)
    t = np.arange(1, T + 1)[:, None]
    np.testing.assert_allclose(ys[:, 0], np.broadcast_to(0.75 * t, (T, H)), rtol=1e-6)
    np.testing.assert_allclose(state, np.full((2, H), 0.75) * np.array([[T], [3]]), rtol=1e-6)
    assert not np.asarray(ys[3:, 1]).any()


def test_zoneout_with_a_key_keeps_units_step_by_step():
    layer, params = identity_layer(zoneout=0.5)
    xs = jnp.ones((12, 8, H))
    apply = jax.jit(lambda p, key: layer.apply(p, xs, key=key, length=jnp.full(8, 10)))
    state, ys = apply(params, jax.random.key(0))
    # the output is the zoned-out carry: each unit either keeps its value (0) or takes the
    # step (+1), decided anew at every step, and the last valid output is the final state
    carries = np.asarray(ys[:10])
    increments = np.diff(carries, axis=0)
    assert set(np.unique(increments)) == {0.0, 1.0}
    assert ((increments[1:] != increments[:-1]).any(axis=0)).mean() > 0.9
    np.testing.assert_array_equal(state, carries[-1])
    assert not np.asarray(ys[10:]).any()


def test_zoneout_on_an_lstm_with_a_projection():
    """Two carry leaves of different widths (h: 2, c: 4), each zoned out."""
    cell = rj.lstm(H, proj_size=2)
    zoned = rj.rnn(cell, zoneout=0.3)
    params = noisy_init(zoned, 0)

    @jax.jit
    def runs(params, key):
        return (
            zoned.apply(params, XS, length=LENGTH, key=key),
            zoned.apply(params, XS, length=LENGTH),
            rj.rnn(cell).apply(params, XS, length=LENGTH),
        )

    (keyed_state, keyed), (expected_state, expected), (plain_state, plain) = runs(
        params, jax.random.key(1)
    )
    assert keyed.shape == expected.shape == (T, B, 2) and keyed_state.c.shape == (B, H)
    # the first step's output is the zoned-out blend of the zero initial state and the
    # cell's output: 0.7 of it in expectation, all or nothing per unit with a key
    close(expected[0], 0.7 * plain[0], 1e-6)
    kept = np.isclose(np.asarray(keyed[0]), np.asarray(plain[0]), atol=1e-6)
    assert (kept | (np.asarray(keyed[0]) == 0)).all() and kept.any() and not kept.all()
    last_valid = np.asarray(keyed)[np.asarray(LENGTH) - 1, np.arange(B)]
    close(keyed_state.h, last_valid, 0)
    assert (np.abs(np.asarray(expected[1:3, 0] - plain[1:3, 0])) > 1e-4).all()
    assert not np.asarray(keyed[2:, 1]).any()


def test_dropout_rates_are_checked():
    with pytest.raises(ValueError, match=r"^recurrent_dropout must lie in \[0, 1\); got 1.0$"):
        rj.rnn(rj.gru(H), recurrent_dropout=1.0)
    with pytest.raises(ValueError, match=r"^zoneout must lie in \[0, 1\); got -0.1$"):
        rj.rnn(rj.gru(H), zoneout=-0.1)
    with pytest.raises(ValueError, match=r"^dropout must lie in \[0, 1\)"):
        rj.stack([rj.gru(H)], dropout=2)
    with pytest.raises(TypeError, match=r"^cell must be an rnn_jax Cell; got int$"):
        rj.rnn(3)
    with pytest.raises(TypeError, match=r"^expected an rnn_jax Cell or Layer; got str$"):
        rj.stack(["lstm"])


# --- composition and specs ---------------------------------------------------------------------


def test_layers_vmap_over_batch_major_sequences():
    layer = rj.stack([rj.bidirectional(rj.gru(H)), rj.lstm(H)])
    params = noisy_init(layer, 0)
    _, want = layer.apply(params, XS, length=LENGTH)
    one = lambda x_tf, n: layer.apply(params, x_tf, length=n)[1]
    got = jax.jit(jax.vmap(one))(XS.swapaxes(0, 1), LENGTH)
    close(got.swapaxes(0, 1), want)


def test_time_major_false_takes_and_gives_batch_major_arrays():
    """[*batch, T, F] inputs, [*batch, T] masks and resets: the time-major results, transposed,
    for every combinator; two batch axes too."""
    layer = rj.stack([rj.bidirectional(rj.gru(H)), rj.rnn(rj.lstm(H))])
    params = noisy_init(layer, 0)
    mask = jnp.ones((T, B), bool).at[1, 0].set(False)
    resets = jnp.zeros((T, B), bool).at[3, 2].set(True)
    arguments = {"length": LENGTH, "mask": mask, "resets": resets}
    moved = {"length": LENGTH, "mask": mask.T, "resets": resets.T}

    cell, xs = rj.gru(H), normal((T, 2, B, F), 3)
    flipped, lengths = rj.reversed_layer(rj.rnn(cell)), jnp.stack([LENGTH, LENGTH[::-1]])

    @jax.jit
    def both(params):
        p = params[0].forward
        return (
            (layer.apply(params, XS, **arguments), flipped.apply(p, xs, length=lengths)),
            (
                layer.apply(params, XS.swapaxes(0, 1), time_major=False, **moved),
                flipped.apply(p, jnp.moveaxis(xs, 0, 2), length=lengths, time_major=False),
            ),
        )

    ((state, ys), (flip_state, flip_ys)), ((bm_state, bm_ys), (bm_flip_state, bm_flip_ys)) = both(
        params
    )
    close(bm_state, state)
    close(bm_ys.swapaxes(0, 1), ys)
    close(bm_flip_state, flip_state)
    close(jnp.moveaxis(bm_flip_ys, 2, 0), flip_ys)
    with pytest.raises(ValueError, match=r"\[\*batch, T, \*features\] .* got shape \(4,\)"):
        rj.rnn(cell).apply(params[0].forward, jnp.ones(4), time_major=False)


def test_specs_describe_how_a_layer_was_built():
    cell = rj.lstm(H, proj_size=2)
    rnn = rj.rnn(cell, reverse=True, recurrent_dropout=0.1)
    assert rnn.spec == rj.layers.RNNSpec(cell, reverse=True, recurrent_dropout=0.1)
    assert rnn.spec.cell is cell and rnn.spec.zoneout == 0.0
    bi = rj.bidirectional(cell, merge="sum")
    assert isinstance(bi.spec, rj.layers.BidirectionalSpec) and bi.spec.merge == "sum"
    assert bi.spec.forward.spec.cell is cell and bi.spec.forward.spec.reverse is False
    assert bi.spec.backward.spec.reverse is True
    stacked = rj.stack([bi, cell], dropout=0.25, residual=False)
    assert isinstance(stacked.spec, rj.layers.StackSpec) and stacked.spec.dropout == 0.25
    assert [type(part.spec) for part in stacked.spec.layers] == [
        rj.layers.BidirectionalSpec,
        rj.layers.RNNSpec,
    ]
    assert stacked.spec.residual is False and stacked.spec.skip_connections is False
    flipped = rj.reversed_layer(stacked)
    assert flipped.spec == rj.layers.ReversedSpec(stacked)
    assert rj.as_layer(rnn) is rnn and rj.as_layer(cell).spec.cell is cell
    # what a stream needs to know: which layers read a sequence from its end
    from rnn_jax.layers.base import reads_ahead

    assert reads_ahead(rj.stack([cell, rj.rnn(cell)])) is None
    assert "bidirectional layer reads each sequence from its end" in reads_ahead(stacked)
    assert "reversed rnn layer" in reads_ahead(rnn) and "reversed layer" in reads_ahead(flipped)
    assert "not known to read forwards only" in reads_ahead(IDENTITY)


def test_layers_built_with_equal_parts_are_equal_and_hash_alike():
    def build():
        return rj.stack(
            [rj.bidirectional(rj.gru(H), merge="ave"), rj.rnn(rj.lstm(H), zoneout=0.1)],
            dropout=0.1,
            skip_connections=True,
        )

    first, second = build(), build()
    assert first is not second and first == second and hash(first) == hash(second)
    assert rj.reversed_layer(first) == rj.reversed_layer(second)
    assert first != rj.stack([rj.bidirectional(rj.gru(H)), rj.lstm(H)], dropout=0.1)
