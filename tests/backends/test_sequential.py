"""The ``sequential`` backend against the plain ``lax.scan`` reference: values and gradients
for every cell, with lengths and reverse, in every residual mode and chunking, bf16 with a
float32 carry, and the structure of its backward pass (weight gradients as chunk-wide matmuls).
"""

from __future__ import annotations

import itertools
from functools import partial

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scan_helpers

import rnn_jax as rj
from rnn_jax.backends import Sequential
from rnn_jax.backends.jaxprs import parameters_read, reads_only_sum
from rnn_jax.backends.residuals import previous_steps
from rnn_jax.backends.sequential import pipelined_scan

T, B, F, H = 7, 3, 4, 5
LENGTH = np.array([7, 0, 3])  # full, empty, short

GATED = {
    "lstm": rj.lstm(H),
    "gru": rj.gru(H),
    "simple": rj.simple(H),
    "lstm_peephole_proj_ln": rj.lstm(H, peephole=True, proj_size=3, layer_norm=True),
}
UNGATED = {
    "gru_reset_before": rj.gru(H, reset_after=False),
    "mgu": rj.mgu(H),
    "indrnn": rj.indrnn(H, activation="tanh"),
}
# Every residual mode meets every chunking (7 steps: 1 chunk, 3 chunks with padding, 7 chunks)
# across the cases, rolled (with and without the pipelined loop) and unrolled, with the weight
# gradients per chunk or after the sweep, without running the whole product.
CONFIGS = [
    {"residuals": r, "chunk": c, "unroll": u, "pipeline": p, "weight_grads": w}
    for (r, c), u, p, w in zip(
        itertools.product(("store", "recompute", "carries"), (0, 3, 1)),
        itertools.cycle((1, True, 2, True)),
        itertools.cycle((True, True, False)),
        itertools.cycle(("per_chunk", "after_sweep")),
        strict=False,
    )
]


def problem(cell, seed=0, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda key: cell.init(key, F), jax.random.key(0))
    draw = lambda s: jnp.asarray(0.5 * rng.standard_normal(s.shape), dtype)
    params = jax.tree.map(draw, shapes)
    h0 = jax.tree.map(
        lambda s: jnp.asarray(0.5 * rng.standard_normal(s.shape), s.dtype),
        jax.eval_shape(lambda p: cell.initial_state(p, (B,)), params),
    )
    xs = jnp.asarray(rng.standard_normal((T, B, F)), dtype)
    return params, xs, h0


def value_and_grads(cell, backend, params, xs, h0, length, reverse):
    """Outputs and the gradients of a loss on all of them w.r.t. params, inputs and carry."""

    def loss(params, xs, h0):
        final, ys = rj.scan(
            cell, params, xs, initial_state=h0, length=length, reverse=reverse, backend=backend
        )
        out = jax.tree.leaves((final, ys))
        return sum(jnp.sum(jnp.sin(o.astype(jnp.float32) * 1.3)) for o in out), (final, ys)

    grad = jax.grad(loss, argnums=(0, 1, 2), has_aux=True)
    return jax.jit(grad)(params, xs, h0)


def assert_matches_reference(cell, backend, length, reverse, tol=5e-5):
    params, xs, h0 = problem(cell)
    got_grads, got = value_and_grads(cell, backend, params, xs, h0, length, reverse)
    want_grads, want = value_and_grads(cell, "reference", params, xs, h0, length, reverse)
    chex.assert_trees_all_close(got, want, rtol=tol, atol=tol)
    chex.assert_trees_all_close(got_grads, want_grads, rtol=tol, atol=tol)


CASES = [
    case
    for case in itertools.product(GATED, (False, True), (False, True))
    if not case[0].startswith("lstm_peephole") or case[1] == case[2]  # the slowest to compile
]


@pytest.mark.parametrize(("name", "lengths", "reverse"), CASES)
def test_gated_cells_match_reference(name, lengths, reverse):
    config = CONFIGS[CASES.index((name, lengths, reverse)) % len(CONFIGS)]
    length = jnp.asarray(LENGTH) if lengths else None
    assert_matches_reference(GATED[name], Sequential(**config), length, reverse)


def test_default_settings_match_reference():
    assert_matches_reference(GATED["lstm"], "sequential", jnp.asarray(LENGTH), True)


@pytest.mark.parametrize("name", sorted(UNGATED))
def test_cells_without_gates_fall_back_and_match(name):
    assert_matches_reference(UNGATED[name], "sequential", jnp.asarray(LENGTH), False)


def test_bf16_params_keep_a_float32_carry_and_match_the_reference():
    cell = rj.lstm(16)
    params = cell.init(jax.random.key(0), 8)
    params = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
    xs = jax.random.normal(jax.random.key(1), (6, 4, 8), jnp.bfloat16)

    def run(backend):
        def loss(params):
            final, ys = rj.scan(cell, params, xs, backend=backend)
            return jnp.sum(ys**2) + jnp.sum(final.c), (final, ys)

        return jax.jit(jax.grad(loss, has_aux=True))(params)

    got_grads, (final, ys) = run("sequential")
    want_grads, (want_final, want_ys) = run("reference")
    assert final.c.dtype == jnp.float32 and ys.dtype == jnp.float32
    # bf16 rounds h to 8 bits before the recurrent matmul (the reference multiplies in f32).
    chex.assert_trees_all_close((final, ys), (want_final, want_ys), atol=3e-2, rtol=3e-2)
    for got, want in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads), strict=True):
        assert got.dtype == jnp.bfloat16
        got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
        assert np.linalg.norm(got - want) <= 3e-2 * np.linalg.norm(want)


def test_gradients_only_of_what_is_used():
    """Symbolic zeros: a loss on the final carry only, params only (inputs not differentiated)."""
    cell = GATED["gru"]
    params, xs, h0 = problem(cell)

    def grads(backend):
        loss = lambda p: jnp.sum(
            rj.scan(cell, p, xs, initial_state=h0, backend=backend, length=jnp.asarray(LENGTH))[0]
            ** 2
        )
        return jax.jit(jax.grad(loss))(params)

    chex.assert_trees_all_close(
        grads(Sequential(chunk=3)), grads("reference"), rtol=5e-5, atol=5e-5
    )


def test_batch_major_through_vmap():
    cell = GATED["lstm"]
    params, xs, h0 = problem(cell)
    xs_btf = jnp.swapaxes(xs, 0, 1)

    def loss(params, backend):
        run = lambda x: rj.scan(cell, params, x, backend=backend)[1]
        return jnp.sum(jnp.tanh(jax.vmap(run)(xs_btf)))

    got = jax.jit(jax.grad(partial(loss, backend="sequential")))(params)
    want = jax.jit(jax.grad(partial(loss, backend="reference")))(params)
    chex.assert_trees_all_close(got, want, rtol=5e-5, atol=5e-5)


def sub_jaxprs(value):
    if isinstance(value, jax.extend.core.ClosedJaxpr):
        yield value.jaxpr
    elif isinstance(value, jax.extend.core.Jaxpr):
        yield value
    elif isinstance(value, tuple | list):
        for item in value:
            yield from sub_jaxprs(item)


def dot_shapes(jaxpr) -> list[tuple[tuple, tuple]]:
    """``(lhs shape, rhs shape)`` of every dot_general in a jaxpr, sub-jaxprs included."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            found.append((tuple(eqn.invars[0].aval.shape), tuple(eqn.invars[1].aval.shape)))
        for value in eqn.params.values():
            for sub in sub_jaxprs(value):
                found += dot_shapes(sub)
    return found


def test_recurrent_kernel_gradient_is_one_matmul_over_all_rows():
    """chunk=0: the backward pass forms d(kernel) from all T*B rows at once, not per step."""
    steps, batch, hidden = 16, 3, 8
    cell = rj.lstm(hidden)
    params = cell.init(jax.random.key(0), F)
    xs = jnp.ones((steps, batch, F))
    loss = lambda p: jnp.sum(rj.scan(cell, p, xs, backend=Sequential(chunk=0))[1])
    dots = dot_shapes(jax.make_jaxpr(jax.grad(loss))(params).jaxpr)
    rows = steps * batch
    # The fed-back states [T*B, H] against the pre-activations' cotangents [T*B, 4H].
    assert ((rows, hidden), (rows, 4 * hidden)) in dots
    # No [H, B] x [B, 4H] outer products, as autodiff of the loop would make.
    assert not [d for d in dots if d[0][-1] == batch or d[0] == (hidden, batch)]


def test_explicit_unroll_and_bad_settings():
    cell = GATED["simple"]
    params, xs, h0 = problem(cell)
    want = rj.scan(cell, params, xs, initial_state=h0, backend="reference")
    got = rj.scan(cell, params, xs, initial_state=h0, backend="sequential", unroll=3)
    chex.assert_trees_all_close(got, want, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="residuals"):
        Sequential(residuals="everything")
    with pytest.raises(ValueError, match="chunk"):
        Sequential(chunk=-1)
    with pytest.raises(ValueError, match="weight_grads must be one of"):
        Sequential(weight_grads="later")
    with pytest.raises(TypeError, match="pipeline must be a bool or None; got 'yes'"):
        Sequential(pipeline="yes")


def test_pipelined_scan_is_lax_scan():
    xs = {"a": jnp.arange(10.0), "b": jnp.arange(20.0).reshape(10, 2)}
    f = lambda c, x: (c * 0.5 + x["a"], c + x["b"].sum())
    for reverse in (False, True):
        want = jax.lax.scan(f, 1.0, xs, reverse=reverse)
        got = pipelined_scan(f, 1.0, xs, reverse=reverse, unroll=3)
        chex.assert_trees_all_close(got, want)


def test_previous_steps_in_scan_order():
    ys = jnp.arange(6.0).reshape(3, 2)  # 3 chunks of 2 steps: 0 1 | 2 3 | 4 5
    first = jnp.asarray(-1.0)
    np.testing.assert_array_equal(previous_steps(ys, first, False), [[-1, 0], [1, 2], [3, 4]])
    np.testing.assert_array_equal(previous_steps(ys, first, True), [[1, 2], [3, 4], [5, -1]])


def test_parameters_read_finds_what_a_function_reads():
    params = {"used": jnp.ones(3), "unused": jnp.ones(2), "int": jnp.ones(3, jnp.int32)}
    fn = lambda p, x: p["used"] * x + p["int"]
    leaves, rebuild = parameters_read(fn, params, jnp.ones(3))
    assert len(leaves) == 1 and leaves[0].shape == (3,)
    assert rebuild([jnp.zeros(3)])["used"].sum() == 0


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        (rj.lstm(H), True),
        (rj.simple(H), True),
        (rj.lstm(H, peephole=True), True),
        (rj.lstm(H, layer_norm=True), False),  # hu is normalised before the sum
        (rj.gru(H), False),  # hu's candidate part is gated by r
    ],
)
def test_reads_only_sum_from_the_jaxpr(cell, expected):
    params, xs, h0 = problem(cell)
    xp = jax.eval_shape(cell.project, params, xs[0])
    hu = jax.eval_shape(lambda h, k: cell.gates.fed_back(h) @ k, h0, cell.gates.kernel(params))
    assert reads_only_sum(cell.gates.combine, params, h0, xp, hu) is expected


def scan_unrolls(fn, *args) -> list[tuple[int, int]]:
    """``(unroll, length)`` of every ``scan`` in ``fn``'s jaxpr, nested ones included."""
    found = []

    def visit(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "scan":
                found.append((int(eqn.params["unroll"]), eqn.params["length"]))
            for sub in scan_helpers.inner_jaxprs(eqn):
                visit(sub)

    visit(jax.make_jaxpr(fn)(*args).jaxpr)
    return found


def test_a_tuned_whole_chunk_unroll_never_unrolls_a_cell_without_gates(monkeypatch):
    from rnn_jax.backends import auto

    row = {"cell": "gru", "dtype": "float32", "B": B, "T": T, "I": F, "H": H}
    settings = {"unroll": True, "chunk": 4, "residuals": "recompute", "pipeline": False}
    table = {"sequential": {"cpu": [{**row, **settings}]}}
    monkeypatch.setattr(auto, "packaged_table", lambda: table)
    run = lambda cell, **kw: lambda xs: rj.scan(cell, problem(cell)[0], xs, **kw)
    xs = problem(GATED["gru"])[1]
    # the gated kernel unrolls each chunk of 4 whole (7 steps: 2 chunks)
    assert scan_unrolls(run(GATED["gru"], backend="sequential"), xs) == [(1, 2), (4, 4)]
    # a cell without gates borrows that sweep but has no chunks: its loop stays rolled
    assert scan_unrolls(run(UNGATED["mgu"], backend="sequential"), xs) == [(1, T)]
    # and the caller's own unroll still wins
    assert scan_unrolls(run(UNGATED["mgu"], backend="sequential", unroll=3), xs) == [(3, T)]


def forward_loop_inputs(cell, params, xs) -> list[tuple[int, ...]]:
    """The shapes of the per-step inputs of ``sequential``'s step loop (one chunk, rolled)."""
    backend = Sequential(chunk=0, unroll=1, pipeline=False)
    jaxpr = jax.make_jaxpr(lambda xs: rj.scan(cell, params, xs, backend=backend))(xs).jaxpr
    loops = []

    def visit(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "scan" and eqn.params["length"] == T:
                start = eqn.params["num_consts"] + eqn.params["num_carry"]
                loops.append([tuple(v.aval.shape) for v in eqn.invars[start:]])
            for sub in scan_helpers.inner_jaxprs(eqn):
                visit(sub)

    visit(jaxpr)
    (inputs,) = loops
    return inputs


def test_the_forward_loop_reads_a_grus_gate_blocks():
    """GRU's `Gates` declare 3 blocks: its step loop reads 3 arrays [T, B, H], not one [T, B, 3H];
    a block count that does not divide the width, or 1, leaves one array; values unchanged."""
    cell = GATED["gru"]
    params, xs, h0 = problem(cell)
    assert forward_loop_inputs(cell, params, xs) == [(T, B, H)] * 3
    for blocks in (1, 4):
        whole = cell._replace(gates=cell.gates._replace(blocks=blocks))
        assert forward_loop_inputs(whole, params, xs) == [(T, B, 3 * H)]
    backend = Sequential(chunk=3, unroll=1, pipeline=True)
    got = rj.scan(cell, params, xs, initial_state=h0, backend=backend)
    want = rj.scan(whole, params, xs, initial_state=h0, backend=backend)
    chex.assert_trees_all_close(got, want, rtol=1e-6, atol=1e-6)
