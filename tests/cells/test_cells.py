"""Cells: each step against its equations written out in NumPy, fast paths, shapes, gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import rnn_jax as rj

F, H, P = 3, 4, 2

CELLS = {
    "simple_tanh": lambda **kw: rj.simple(H, **kw),
    "simple_relu": lambda **kw: rj.simple(H, activation="relu", **kw),
    "lstm": lambda **kw: rj.lstm(H, **kw),
    "lstm_peephole": lambda **kw: rj.lstm(H, peephole=True, **kw),
    "lstm_proj": lambda **kw: rj.lstm(H, proj_size=P, **kw),
    "lstm_layer_norm": lambda **kw: rj.lstm(H, layer_norm=True, **kw),
    "lstm_all": lambda **kw: rj.lstm(H, peephole=True, proj_size=P, layer_norm=True, **kw),
    "gru": lambda **kw: rj.gru(H, **kw),
    "gru_reset_before": lambda **kw: rj.gru(H, reset_after=False, **kw),
    "mgu": lambda **kw: rj.mgu(H, **kw),
    "indrnn": lambda **kw: rj.indrnn(H, **kw),
    "indrnn_bounded": lambda **kw: rj.indrnn(H, recurrent_max_abs=0.8, recurrent_min_abs=0.3, **kw),
}


def normal_like(tree, seed, scale=1.0):
    """``tree`` (arrays or shape structs) with every leaf drawn from N(0, scale²) by NumPy.

    NumPy draws cost no compilation, which keeps these many small cases fast.
    """
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda leaf: jnp.asarray(scale * rng.standard_normal(leaf.shape), leaf.dtype), tree
    )


def random_params(cell, seed, input_size=F):
    """Params shaped as ``cell.init``'s, every leaf N(0, 0.5²), so no term hides at zero."""
    shapes = jax.eval_shape(lambda key: cell.init(key, input_size), jax.random.key(0))
    return normal_like(shapes, seed, 0.5)


def random_carry(cell, params, seed, batch_shape):
    return normal_like(jax.eval_shape(lambda p: cell.initial_state(p, batch_shape), params), seed)


# --- the equations, in float64 NumPy -----------------------------------------------------------


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def layer_norm(x, norm, eps=1e-5):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * norm.scale + norm.offset


def np_tree(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def numpy_step(name, p, carry, x):
    """``(carry, y)`` of one step from the papers' equations."""
    if name.startswith("simple"):
        act = np.tanh if name == "simple_tanh" else (lambda v: np.maximum(v, 0.0))
        h = act(x @ p.kernel + carry @ p.recurrent_kernel + p.bias)
        return h, h
    if name.startswith("lstm"):
        h, c = carry.h, carry.c
        xw, hu = x @ p.kernel, h @ p.recurrent_kernel
        if p.input_norm is not None:
            xw, hu = layer_norm(xw, p.input_norm), layer_norm(hu, p.recurrent_norm)
        i, f, g, o = np.split(xw + p.bias + hu, 4, axis=-1)
        if p.peephole is not None:
            i, f = i + p.peephole[0] * c, f + p.peephole[1] * c
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        if p.peephole is not None:
            o = o + p.peephole[2] * c
        h = sigmoid(o) * np.tanh(layer_norm(c, p.cell_norm) if p.cell_norm is not None else c)
        if p.projection is not None:
            h = h @ p.projection
        return rj.LSTMState(h, c), h
    if name.startswith("gru"):
        h = carry
        xr, xz, xn = np.split(x @ p.kernel + p.bias, 3, axis=-1)
        ur, uz, un = np.split(p.recurrent_kernel, 3, axis=-1)
        if name == "gru":
            br, bz, bn = np.split(p.recurrent_bias, 3)
            r, z = sigmoid(xr + h @ ur + br), sigmoid(xz + h @ uz + bz)
            n = np.tanh(xn + r * (h @ un + bn))
        else:
            r, z = sigmoid(xr + h @ ur), sigmoid(xz + h @ uz)
            n = np.tanh(xn + (r * h) @ un)
        h = (1 - z) * n + z * h
        return h, h
    if name == "mgu":
        h = carry
        xf, xn = np.split(x @ p.kernel + p.bias, 2, axis=-1)
        uf, un = np.split(p.recurrent_kernel, 2, axis=-1)
        f = sigmoid(xf + h @ uf)
        n = np.tanh(xn + (f * h) @ un)
        h = (1 - f) * h + f * n
        return h, h
    if name.startswith("indrnn"):
        u = p.recurrent_weight
        if name == "indrnn_bounded":
            u = np.sign(u) * np.clip(np.abs(u), 0.3, 0.8)
        h = np.maximum(x @ p.kernel + u * carry + p.bias, 0.0)
        return h, h
    raise AssertionError(name)


def assert_close(got, want, tol=1e-5):
    jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=tol, atol=tol), got, want)
    assert jax.tree.structure(got) == jax.tree.structure(want)


@pytest.mark.parametrize("name", sorted(CELLS))
def test_step_follows_the_equations(name):
    cell = CELLS[name]()
    params = random_params(cell, 0)
    carry = random_carry(cell, params, 1, (5,))
    x = normal_like(jax.ShapeDtypeStruct((5, F), jnp.float32), 3)
    got_carry, got_y = jax.jit(cell.step)(params, carry, x)
    want_carry, want_y = numpy_step(name, np_tree(params), np_tree(carry), np.asarray(x, float))
    np.testing.assert_allclose(got_y, want_y, rtol=1e-5, atol=1e-5)
    assert_close(got_carry, jax.tree.map(jnp.asarray, want_carry))
    assert jax.tree.structure(got_carry) == jax.tree.structure(cell.initial_state(params, (5,)))


@pytest.mark.parametrize("name", sorted(CELLS))
def test_fast_paths_and_batch_axes(name):
    """``recur(project(x))``, the ``Gates`` split and per-example vmaps all equal ``step``."""
    cell = CELLS[name]()
    params = random_params(cell, 0)
    carry = random_carry(cell, params, 1, (2, 3))
    x = normal_like(jax.ShapeDtypeStruct((2, 3, F), jnp.float32), 3)
    assert cell.input_size(params) == F
    assert cell.project is not None and cell.recur is not None

    @jax.jit
    def ways(params, carry, x):
        step = cell.step(params, carry, x)
        xp = cell.project(params, x)
        out = {
            "step": step,
            "recur": cell.recur(params, carry, xp),
            # one example at a time, over both batch axes
            "vmap": jax.vmap(jax.vmap(lambda c, v: cell.step(params, c, v)))(carry, x),
            # the projection of a whole sequence at once
            "project_all": cell.project(params, jnp.stack([x, -x])),
            "project_each": jnp.stack([xp, cell.project(params, -x)]),
        }
        if cell.gates is not None:
            hu = cell.gates.fed_back(carry) @ cell.gates.kernel(params)
            out["gates"] = cell.gates.combine(params, carry, xp, hu)
        return out

    out = ways(params, carry, x)
    jax.tree.map(np.testing.assert_array_equal, out["recur"], out["step"])
    assert_close(out["vmap"], out["step"], 1e-6)
    assert_close(out["project_all"], out["project_each"], 1e-6)
    if cell.gates is not None:
        assert_close(out["gates"], out["step"], 1e-6)
    zeros = cell.initial_state(params, batch_shape=(2, 3))
    assert jax.tree.structure(zeros) == jax.tree.structure(carry)
    for leaf in jax.tree.leaves(zeros):
        assert leaf.shape[:2] == (2, 3) and leaf.dtype == jnp.float32
        assert not leaf.any()


def test_gates_split_where_there_is_one_recurrent_matmul():
    with_gates = {"simple_tanh", "simple_relu", "lstm", "lstm_peephole", "lstm_proj"}
    with_gates |= {"lstm_layer_norm", "lstm_all", "gru"}
    for name, make in CELLS.items():
        assert (make().gates is not None) == (name in with_gates), name


@pytest.mark.parametrize("name", sorted(CELLS))
def test_check_grads(name):
    """Finite differences (float64) agree with jax's derivatives through a padded scan."""
    with jax.enable_x64(True):
        cell = CELLS[name](dtype=jnp.float64)
        params = random_params(cell, 0)
        xs = normal_like(jax.ShapeDtypeStruct((3, 2, F), jnp.float64), 3)
        h0 = random_carry(cell, params, 2, (2,))
        length = jnp.array([3, 2])

        @jax.jit
        def loss(params, xs, h0):
            final, ys = rj.scan(
                cell, params, xs, initial_state=h0, length=length, backend="reference"
            )
            return jnp.sum(ys * jnp.cos(ys)) + sum(jnp.sum(leaf) for leaf in jax.tree.leaves(final))

        # a small eps keeps the differences off relu's kink (a preactivation here is 4e-4)
        check_grads(loss, (params, xs, h0), order=1, modes=("rev", "fwd"), eps=1e-6)


# --- parameter layout and initialisation ------------------------------------------------------


def test_keras_and_torch_parameter_counts():
    def count(cell, input_size):  # shapes only: nothing is computed
        shapes = jax.eval_shape(lambda key: cell.init(key, input_size), jax.random.key(0))
        return rj.count_params(shapes)

    assert count(rj.lstm(128), 64) == 98_816  # Keras LSTM(128)
    assert count(rj.gru(128), 64) == 74_496  # Keras GRU, reset_after
    assert count(rj.gru(128, reset_after=False), 64) == 74_112
    assert count(rj.simple(32), 32) == 2_080  # Keras SimpleRNN(32)
    # PyTorch LSTM(64, 128, proj_size=32) has 54,272 with its two biases; one of them here
    assert count(rj.lstm(128, proj_size=32), 64) == 54_272 - 512


def test_parameter_shapes():
    def shapes(cell):  # nothing computed
        return jax.eval_shape(lambda key: cell.init(key, F), jax.random.key(0))

    p = shapes(rj.lstm(H, proj_size=P, peephole=True, layer_norm=True))
    assert p.kernel.shape == (F, 4 * H) and p.recurrent_kernel.shape == (P, 4 * H)
    assert p.bias.shape == (4 * H,) and p.projection.shape == (H, P)
    assert p.peephole.shape == (3, H) and p.cell_norm.scale.shape == (H,)
    assert p.input_norm.scale.shape == p.recurrent_norm.offset.shape == (4 * H,)
    plain = shapes(rj.lstm(H))
    assert plain.peephole is None and plain.projection is None and plain.input_norm is None
    g = shapes(rj.gru(H))
    assert g.kernel.shape == (F, 3 * H) and g.recurrent_bias.shape == (3 * H,)
    assert shapes(rj.gru(H, reset_after=False)).recurrent_bias is None
    assert shapes(rj.mgu(H)).recurrent_kernel.shape == (H, 2 * H)
    assert shapes(rj.indrnn(H)).recurrent_weight.shape == (H,)


def test_lstm_forget_bias_and_orthogonal_gate_blocks():
    p = jax.jit(rj.lstm(H, forget_bias=1.5).init, static_argnums=1)(jax.random.key(0), F)
    np.testing.assert_array_equal(p.bias[H : 2 * H], 1.5)
    np.testing.assert_array_equal(p.bias[:H], 0.0)
    for block in jnp.split(p.recurrent_kernel, 4, axis=1):
        np.testing.assert_allclose(block.T @ block, jnp.eye(H), atol=1e-5)


def test_initial_state_structure_and_dtype():
    params = jax.eval_shape(lambda key: rj.lstm(H, proj_size=P).init(key, F), jax.random.key(0))
    state = rj.lstm(H, proj_size=P).initial_state(params, (7,))
    assert isinstance(state, rj.LSTMState)
    assert state.h.shape == (7, P) and state.c.shape == (7, H)
    # low-precision parameters keep a float32 state
    cell = rj.gru(H, dtype=jnp.bfloat16)
    params = jax.jit(cell.init, static_argnums=1)(jax.random.key(0), F)
    assert params.kernel.dtype == jnp.bfloat16
    assert cell.initial_state(params, ()).dtype == jnp.float32
    assert cell.initial_state(params, ()).shape == (H,)


def test_indrnn_bounds_the_recurrent_weight_in_the_step():
    cell = rj.indrnn(1, activation="identity", recurrent_max_abs=0.5, recurrent_min_abs=0.1)
    params = rj.IndRNNParams(jnp.zeros((1, 1)), jnp.array([3.0]), jnp.zeros((1,)))
    _, y = cell.step(params, jnp.array([2.0]), jnp.zeros((1,)))
    assert float(y[0]) == pytest.approx(1.0)  # 0.5 * 2, not 3 * 2
    params = params._replace(recurrent_weight=jnp.array([-0.01]))
    _, y = cell.step(params, jnp.array([2.0]), jnp.zeros((1,)))
    assert float(y[0]) == pytest.approx(-0.2)  # sign kept, magnitude raised to 0.1


def test_names_and_configs_describe_the_cell():
    cell = rj.lstm(8, proj_size=3, peephole=True)
    assert cell.name == "lstm"
    assert cell.config["hidden_size"] == 8 and cell.config["proj_size"] == 3
    assert cell.config["peephole"] is True and cell.config["layer_norm"] is False
    assert rj.gru(8, reset_after=False).config["reset_after"] is False
    assert rj.simple(8, activation="relu").config == {"hidden_size": 8, "activation": "relu"}
    assert [rj.mgu(2).name, rj.indrnn(2).name, rj.simple(2).name] == ["mgu", "indrnn", "simple"]


def test_callable_activation():
    cell = rj.simple(H, activation=jnp.sin)
    params = random_params(cell, 0)
    x = jnp.ones((F,))
    _, y = cell.step(params, jnp.zeros((H,)), x)
    np.testing.assert_allclose(y, jnp.sin(x @ params.kernel + params.bias), rtol=1e-6)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: rj.lstm(0), r"hidden_size must be a positive int; got 0"),
        (lambda: rj.lstm(4, proj_size=4), r"proj_size must be smaller than hidden_size=4; got 4"),
        (lambda: rj.lstm(4, proj_size=-1), r"proj_size must be a positive int or None; got -1"),
        (lambda: rj.simple(4, activation="swish2"), r"activation must be .* got 'swish2'"),
        (lambda: rj.gru(4, gate_activation="nope"), r"gate_activation must be .* got 'nope'"),
        (
            lambda: rj.indrnn(4, recurrent_max_abs=0.1, recurrent_min_abs=0.2),
            r"recurrent_max_abs must exceed recurrent_min_abs",
        ),
        (lambda: rj.mgu(4).init(jax.random.key(0), 0), r"input_size must be a positive int"),
    ],
)
def test_bad_hyperparameters_are_named(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_a_size_of_another_type_is_a_type_error_that_names_it():
    with pytest.raises(TypeError, match=r"hidden_size must be a positive int; got 2.5 \(float\)"):
        rj.gru(2.5)
