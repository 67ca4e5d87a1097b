"""The Flax modules compute what the pure core computes (jit, grad, vmap, an optax step); the NNX
module keeps nnx.RNN's conventions, checked against nnx.RNN and nnx.Bidirectional themselves;
NNX's and Linen's own cells map to ours and back, step by step."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from flax import nnx

import rnn_jax as rj
from rnn_jax.flax import (
    NNXRNN,
    RNN,
    carry_from_flax,
    carry_to_flax,
    from_linen,
    from_nnx,
    to_linen,
    to_nnx,
)

T, B, F, H = 7, 3, 5, 4
XS = jax.random.normal(jax.random.key(0), (T, B, F))  # time-major
X_BTF = XS.swapaxes(0, 1)  # batch-major, NNX's default
LENGTH = jnp.array([7, 4, 1])
VALID = jnp.arange(T)[None, :, None] < LENGTH[:, None, None]  # [B, T, 1]


# The modules do not depend on the scan kernel, and the reference one compiles fastest.
REF = "reference"


def close(got, want, tol=1e-5):
    chex.assert_trees_all_close(got, want, rtol=tol, atol=tol)


def loss(ys):
    return jnp.sum(jnp.sin(ys))  # a cotangent that depends on the outputs


def values(module):
    """An NNX module's params as the plain pytree the pure core takes."""
    return jax.tree.map(lambda p: p[...], module.params, is_leaf=lambda x: isinstance(x, nnx.Param))


# --- Linen --------------------------------------------------------------------------------------


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


def test_linen_vmapped_grad_and_optax_step_are_the_pure_ones():
    layer = rj.rnn(rj.gru(H), backend=REF)
    model = RNN(layer)
    optimizer = optax.sgd(0.1)

    @jax.jit
    def steps(variables):
        def module_loss(variables):  # one [T, F] sequence per call, vmapped over the batch
            one = lambda x, n: model.apply(variables, x, length=n)[1]  # noqa: E731
            return loss(jax.vmap(one, in_axes=(1, 0), out_axes=1)(XS, LENGTH))

        def pure_loss(params):
            return loss(layer.apply(params, XS, length=LENGTH)[1])

        grads = jax.grad(module_loss)(variables)
        updates, _ = optimizer.update(grads, optimizer.init(variables))
        params = variables["params"]["layer"]
        return grads, optax.apply_updates(variables, updates), jax.grad(pure_loss)(params)

    variables = model.init(jax.random.key(1), XS)
    grads, stepped, want = steps(variables)
    close(grads["params"]["layer"], want)
    close(
        stepped["params"]["layer"],
        jax.tree.map(lambda p, g: p - 0.1 * g, variables["params"]["layer"], want),
    )


# --- NNX ---------------------------------------------------------------------------------------


def test_nnx_under_jit_grad_vmap_and_an_optax_step_is_the_pure_core():
    layer = rj.bidirectional(rj.rnn(rj.gru(H), backend=REF), merge="sum")
    model = NNXRNN(layer, F, rngs=nnx.Rngs(0))
    params = values(model)
    sgd = optax.sgd(0.1)  # the step is then -0.1 times the gradient itself
    optimizer = nnx.Optimizer(model, sgd, wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer):
        # vmapped over the sequences: each call sees one [T, F] sequence
        run = nnx.vmap(lambda m, x, n: m(x, seq_lengths=n), in_axes=(None, 0, 0))
        ys = run(model, X_BTF, LENGTH)
        grads = nnx.grad(lambda m: loss(m(X_BTF, seq_lengths=LENGTH)))(model)
        optimizer.update(model, grads)
        return ys

    @jax.jit
    def pure(params):
        grads = jax.grad(lambda p: loss(layer.apply(p, XS, length=LENGTH)[1]))(params)
        updates, _ = sgd.update(grads, sgd.init(params))
        return layer.apply(params, XS, length=LENGTH)[1], optax.apply_updates(params, updates)

    want_ys, want_params = pure(params)
    close(step(model, optimizer), want_ys.swapaxes(0, 1))
    close(values(model), want_params)
    assert not np.allclose(values(model).forward.kernel, params.forward.kernel)


def test_nnx_train_mode_turns_dropout_on():
    layer = rj.rnn(rj.lstm(4), output_dropout=0.5, backend=REF)
    model = NNXRNN(layer, F, rngs=nnx.Rngs(0, dropout=1))
    run = nnx.jit(lambda m: m(X_BTF))
    eval_ys = run(model)
    model.train()
    train_ys = run(model)
    model.eval()
    np.testing.assert_array_equal(run(model), eval_ys)
    assert not np.allclose(train_ys, eval_ys)


def valid_part(ys):
    return jnp.where(VALID, ys, 0.0)


def test_nnx_follows_nnx_rnn_for_every_convention():
    cell = rj.gru(H)
    model = NNXRNN(rj.rnn(cell, backend=REF), F, rngs=nnx.Rngs(0))
    peer = nnx.RNN(to_nnx(cell, values(model)))
    settings = [{}, {"reverse": True}, {"reverse": True, "keep_order": True, "time_major": True}]
    for options in settings:
        time_major = options.get("time_major", False)
        inputs = XS if time_major else X_BTF
        carry, ys = model(inputs, seq_lengths=LENGTH, return_carry=True, **options)
        want_carry, want = peer(inputs, seq_lengths=LENGTH, return_carry=True, **options)
        if time_major:
            ys, want = ys.swapaxes(0, 1), want.swapaxes(0, 1)
        close(carry, want_carry)
        close(ys, valid_part(want))  # past a length nnx.RNN runs on the padding, ours is zero
        assert ys.shape == want.shape
    assert model(X_BTF).shape == (B, T, H)  # return_carry=False, nnx's default


def gated_merge(ys_fwd, ys_bwd):
    return ys_fwd * jax.nn.sigmoid(ys_bwd)


def test_bidirectional_merge_function_is_nnx_merge_fn():
    cell = rj.gru(H)
    layer = rj.bidirectional(rj.rnn(cell, backend=REF), merge=gated_merge)
    assert hash(layer) == hash(layer)
    model = NNXRNN(layer, F, rngs=nnx.Rngs(0))
    params = values(model)
    peer = nnx.Bidirectional(
        nnx.RNN(to_nnx(cell, params.forward)),
        nnx.RNN(to_nnx(cell, params.backward)),
        merge_fn=gated_merge,
        return_carry=True,
    )
    carry, ys = model(X_BTF, seq_lengths=LENGTH, return_carry=True)
    want_carry, want = peer(X_BTF, seq_lengths=LENGTH)
    close(carry, want_carry)
    close(ys, valid_part(want))


def randomized(module, seed=0):
    """``module`` with every parameter drawn anew (NNX initialises biases to zero)."""
    rng = np.random.default_rng(seed)
    for _, param in nnx.iter_graph(module):
        if isinstance(param, nnx.Param):
            param[...] = jnp.asarray(rng.uniform(-0.7, 0.7, param.shape), param.dtype)
    return module


PEERS = {
    "lstm": (lambda: nnx.LSTMCell(F, H, rngs=nnx.Rngs(0)), rj.lstm(H)),
    "gru": (lambda: nnx.GRUCell(F, H, rngs=nnx.Rngs(0)), rj.gru(H)),
}


@pytest.mark.parametrize("kind", list(PEERS))
def test_nnx_cells_map_to_ours_and_back_step_by_step(kind):
    make, ours = PEERS[kind]
    peer = randomized(make())
    cell, params = from_nnx(peer)
    h0 = jax.random.normal(jax.random.key(4), (B, H))
    carry = rj.LSTMState(h0, -h0) if kind == "lstm" else h0

    def nnx_carry(carry):  # NNX's LSTM carry is (c, h)
        return (carry.c, carry.h) if kind == "lstm" else carry

    peer_carry = nnx_carry(carry)
    for x in XS[:3]:
        carry, y = cell.step(params, carry, x)
        peer_carry, want = peer(peer_carry, x)
        close(y, want)
    close(jax.tree.leaves(to_nnx(cell, params)), jax.tree.leaves(peer))

    # Ours -> NNX: the GRU's r and z recurrent biases fold into the input bias.
    noisy = jax.tree.map(
        lambda p: jax.random.normal(jax.random.key(5), p.shape),
        jax.eval_shape(lambda key: ours.init(key, F), jax.random.key(6)),
    )
    if kind == "gru":
        noisy = noisy._replace(recurrent_bias=noisy.recurrent_bias.at[2 * H :].set(0))
    _, want = ours.step(noisy, carry, XS[0])
    close(to_nnx(ours, noisy)(nnx_carry(carry), XS[0])[1], want)


def test_to_nnx_refuses_what_nnx_cells_cannot_compute():
    cell = rj.gru(H)
    params = cell.init(jax.random.key(0), F)
    params = params._replace(recurrent_bias=params.recurrent_bias.at[-1].set(1.0))
    with pytest.raises(ValueError, match="recurrent bias of n"):
        to_nnx(cell, params)
    shapes = jax.eval_shape(lambda key: rj.mgu(H).init(key, F), jax.random.key(0))
    with pytest.raises(ValueError, match="the mgu cell"):
        to_nnx(rj.mgu(H), shapes)


# --- Linen's cells -----------------------------------------------------------------------------


def linen_variables(module, seed=0):
    """``module``'s variables with every parameter drawn anew (Linen initialises biases to
    zero, which would hide a misplaced bias)."""
    carry = module.initialize_carry(jax.random.key(0), (B, F))
    shapes = jax.eval_shape(module.init, jax.random.key(1), carry, XS[0])
    leaves, tree = jax.tree.flatten(shapes)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    drawn = [
        jax.random.uniform(k, leaf.shape, leaf.dtype, -0.7, 0.7)
        for k, leaf in zip(keys, leaves, strict=True)
    ]
    return jax.tree.unflatten(tree, drawn)


LINEN = {
    "lstm": (lambda: nn.LSTMCell(H), rj.lstm(H)),
    "optimized_lstm": (lambda: nn.OptimizedLSTMCell(H), rj.lstm(H)),
    "gru": (lambda: nn.GRUCell(H), rj.gru(H)),
    "simple": (lambda: nn.SimpleCell(H), rj.simple(H)),
    "simple_relu_residual": (
        lambda: nn.SimpleCell(H, activation_fn=nn.relu, residual=True),
        rj.simple(H, activation="relu"),
    ),
}


@pytest.mark.parametrize("kind", list(LINEN))
def test_linen_cells_map_to_ours_and_back_step_by_step(kind):
    make, ours = LINEN[kind]
    module = make()
    variables = linen_variables(module)
    cell, params = from_linen(module, variables)
    h0 = jax.random.normal(jax.random.key(4), (B, H))
    flax_carry = (-h0, h0) if "lstm" in kind else h0  # (c, h): c and h differ, so a swap shows
    carry = carry_from_flax(flax_carry)
    for x in XS[:3]:
        carry, y = cell.step(params, carry, x)
        flax_carry, want = module.apply(variables, flax_carry, x)
        close(y, want)
        close(carry_to_flax(carry), flax_carry)

    # Ours -> Linen, with every bias nonzero (the GRU's r and z recurrent biases fold in).
    noisy = jax.tree.map(
        lambda p: jax.random.normal(jax.random.key(5), p.shape),
        jax.eval_shape(lambda key: ours.init(key, F), jax.random.key(6)),
    )
    back, back_variables = to_linen(ours, noisy, optimized=kind == "optimized_lstm")
    assert type(back) is (type(module) if "residual" not in kind else nn.SimpleCell)
    start = carry_from_flax((-h0, h0) if "lstm" in kind else h0)
    want_carry, want = ours.step(noisy, start, XS[0])
    got_carry, got = back.apply(back_variables, carry_to_flax(start), XS[0])
    close(got, want)
    close(got_carry, carry_to_flax(want_carry))
    if "residual" not in kind:  # the round trip gives Linen's variables back
        close(to_linen(cell, params)[1], variables)


def test_from_linen_reads_a_cell_inside_nn_rnn_and_sizes_from_the_parameters():
    """The Flax seq2seq example builds its decoder as LSTMCell(vocab_size) fed a carry of the
    encoder's size: Linen reads the size from the carry, and so does the conversion."""
    rnn = nn.RNN(nn.LSTMCell(3))  # features=3 is not the size it runs at
    xs = X_BTF
    carry = (jnp.zeros((B, H)), jnp.ones((B, H)))
    variables = rnn.init(jax.random.key(0), xs, initial_carry=carry)
    cell, params = from_linen(rnn.cell, variables["params"]["cell"])
    want_carry, want = rnn.apply(variables, xs, initial_carry=carry, return_carry=True)
    got_carry, got = rj.scan(cell, params, XS, initial_state=carry_from_flax(carry), backend=REF)
    close(got.swapaxes(0, 1), want)
    close(got_carry, carry_from_flax(want_carry))
    with pytest.raises(ValueError, match=r"variables\['params'\]\[<the RNN's name>\]\['cell'\]"):
        from_linen(rnn.cell, variables)


def test_linen_conversions_refuse_what_they_cannot_compute_exactly():
    module = nn.GRUCell(H, dtype=jnp.bfloat16)
    with pytest.raises(ValueError, match="dtype=bfloat16 over float32 parameters"):
        from_linen(module, linen_variables(module))
    with pytest.raises(TypeError, match="not a subclass"):
        from_linen(type("Mine", (nn.GRUCell,), {})(H), {})
    refusals = {
        "declares none": rj.gru(H, reset_after=False),
        "has a projection": rj.lstm(2 * H, proj_size=H),
    }
    for words, cell in refusals.items():
        shapes = jax.eval_shape(lambda key, cell=cell: cell.init(key, F), jax.random.key(0))
        with pytest.raises(ValueError, match=words):
            to_linen(cell, shapes)
    low = rj.lstm(H, dtype=jnp.bfloat16)
    with pytest.raises(ValueError, match="float32"):
        to_linen(low, low.init(jax.random.key(0), F))
    state = rj.LSTMState(h=jnp.ones(H), c=jnp.zeros(H))
    with pytest.raises(TypeError, match="already an rnn_jax LSTMState"):
        carry_from_flax(state)
