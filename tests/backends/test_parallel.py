"""The ``parallel`` backend equals the reference scan for every linear-recurrence cell.

Values and gradients, with lengths, reversal and initial states, for each scan
method (associative, chunked, log space); finite and equal at T = 65,536 in log
space; refusals in words; and ``auto`` never picking a parallel backend where
recorded measurements show it slower.
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scan_helpers
from scan_helpers import value_and_grads_both_ways

import rnn_jax as rj
from rnn_jax.backends import auto, linear_solve

T, B, F, H = 13, 4, 3, 5
LENGTH = np.array([13, 0, 6, 12])  # full, empty, short, one short of full
CELLS = {name: getattr(rj, name)(H) for name in ("min_gru", "min_lstm", "lru", "rg_lru")}
BACKENDS = {
    "default": rj.backends.Parallel(),
    "associative": rj.backends.Parallel(method="associative"),
    "chunked": rj.backends.Parallel(method="chunked", chunk=4),  # 13 steps: a padded chunk
    "log": rj.backends.Parallel(log_space=True),
}
CASES = [
    (cell, method)
    for cell in CELLS
    for method in ("associative", "chunked", "log")
    if method != "log" or CELLS[cell].linear.log_coefficients is not None
]
RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def problem(name, batch=(B,), steps=T, seed=0):
    """``(cell, params, xs, h0)``: random parameters and a nonzero initial state of either sign."""
    cell = CELLS[name]
    params = cell.init(jax.random.key(seed), F)
    rng = np.random.default_rng(seed)
    xs = jnp.asarray(rng.standard_normal((steps, *batch, F)), jnp.float32)
    h0 = cell.initial_state(params, batch)
    noise = rng.standard_normal(h0.shape) + (1j * rng.standard_normal(h0.shape) if
                                             jnp.iscomplexobj(h0) else 0)  # fmt: skip
    return cell, params, xs, (0.5 * noise).astype(h0.dtype)


@partial(jax.jit, static_argnames=("name", "method"))
def value_and_grads(params, xs, h0, length, *, name, method):
    """Both directions' final carries and outputs, and the gradients of a loss of them with
    respect to params, xs and h0."""
    final_loss = lambda final: jnp.sum(jnp.abs(jnp.sin(final)))
    backend = BACKENDS.get(method, method)
    return value_and_grads_both_ways(CELLS[name], backend, params, xs, h0, length, final_loss)


def assert_trees_close(got, want, tol=2e-5):
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        scale = max(1.0, float(jnp.max(jnp.abs(w)))) if w.size else 1.0
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol * scale)


@pytest.mark.parametrize("name, method", CASES)
def test_parallel_equals_the_reference_with_lengths_and_initial_state(name, method):
    cell, params, xs, h0 = problem(name)
    length = jnp.asarray(LENGTH)
    want = value_and_grads(params, xs, h0, length, name=name, method="reference")
    got = value_and_grads(params, xs, h0, length, name=name, method=method)
    assert_trees_close(got, want)
    (_, runs), _ = got
    for final, ys in runs.values():
        assert not bool(jnp.any(ys[LENGTH[2] :, 2])) and not bool(jnp.any(ys[:, 1]))
        np.testing.assert_array_equal(final[1], h0[1])  # an empty sequence keeps its state


@pytest.mark.parametrize("name", CELLS)
def test_parallel_without_lengths_and_default_state(name):
    """Two batch axes, no lengths, zeros to start: the registered default configuration."""
    cell, params, xs, _ = problem(name, batch=(2, 3), steps=33)
    run = jax.jit(
        lambda xs, backend: {
            reverse: rj.scan(cell, params, xs, reverse=reverse, backend=backend)
            for reverse in (False, True)
        },
        static_argnums=1,
    )
    assert_trees_close(run(xs, "parallel"), run(xs, "reference"))


def test_one_sequence_and_vmap_over_sequences():
    cell, params, xs, h0 = problem("rg_lru")
    length = jnp.asarray(LENGTH)
    want = rj.scan(cell, params, xs, initial_state=h0, length=length, backend="reference")
    one = lambda x, h, n: rj.scan(cell, params, x, initial_state=h, length=n, backend="parallel")
    got = jax.vmap(one, in_axes=(1, 0, 0), out_axes=(0, 1))(xs, h0, length)
    assert_trees_close(got, want)
    final, ys = rj.scan(cell, params, xs[:, 0], initial_state=h0[0], backend="parallel")
    assert final.shape == (H,) and ys.shape == (T, H)


def test_log_space_is_finite_and_equal_over_65536_steps():
    steps = 65_536
    cell = rj.min_gru(4)
    params = cell.init(jax.random.key(0), 2)
    xs = 3.0 * jax.random.normal(jax.random.key(1), (steps, 1, 2))
    h0 = jnp.array([[0.5, -2.0, 0.0, 3.0]])
    run = jax.jit(
        lambda xs, h0, backend: rj.scan(cell, params, xs, initial_state=h0, backend=backend),
        static_argnums=2,
    )
    want = run(xs, h0, "sequential")
    got = run(xs, h0, BACKENDS["log"])
    for leaf in jax.tree.leaves(got):
        assert bool(jnp.all(jnp.isfinite(leaf)))
    assert_trees_close(got, want, 1e-5)
    # the range is real: the product of a over the sequence underflows float32 many times over
    log_a, _ = cell.linear.log_coefficients(params, xs)
    assert float(jnp.sum(log_a[:, 0, 0])) < -1000


def test_linear_solvers_match_a_loop():
    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.uniform(0, 1, (29, 2, 3)), jnp.float32)
    b = jnp.asarray(rng.standard_normal((29, 2, 3)), jnp.float32)
    h0 = jnp.asarray(rng.standard_normal((2, 3)), jnp.float32)
    mats = jnp.asarray(0.4 * rng.standard_normal((29, 2, 3, 3)), jnp.float32)

    @jax.jit
    def solvers(a, b, h0, mats):
        return {
            reverse: [
                *(linear_solve.chunked(a, b, h0, reverse=reverse, chunk=c) for c in (1, 64)),
                linear_solve.associative(a, b, h0, reverse=reverse),
                linear_solve.full(mats, b, h0, reverse=reverse),
            ]
            for reverse in (False, True)
        }

    got = solvers(a, b, h0, mats)
    a, b, h0, mats = (np.asarray(v, np.float64) for v in (a, b, h0, mats))
    for reverse in (False, True):
        h, hm, want, want_m = h0, h0, [None] * 29, [None] * 29
        for t in range(28, -1, -1) if reverse else range(29):
            h = a[t] * h + b[t]
            hm = np.einsum("...ij,...j->...i", mats[t], hm) + b[t]
            want[t], want_m[t] = h, hm
        for result, expected in zip(got[reverse], [want] * 3 + [want_m], strict=True):
            np.testing.assert_allclose(result, np.stack(expected), rtol=1e-5, atol=1e-5)


def test_log_space_masked_steps_have_finite_gradients():
    grad = jax.grad(lambda x, y: linear_solve.logaddexp(x, y), argnums=(0, 1))
    assert [float(g) for g in grad(-jnp.inf, -jnp.inf)] == [0.0, 0.0]
    assert [float(g) for g in grad(0.0, -jnp.inf)] == [1.0, 0.0]


def test_cells_without_a_linear_form_are_refused_in_words():
    cell = rj.gru(4)
    params = cell.init(jax.random.key(0), 3)
    with pytest.raises(ValueError) as info:
        rj.scan(cell, params, jnp.ones((5, 3)), backend="parallel")
    message = str(info.value)
    assert "gru" in message and "parallel" in message
    assert "newton" in message and "sequential" in message
    lru_cell, lru_params, xs, _ = problem("lru")
    with pytest.raises(ValueError, match="lru cell exactly: log_space=True needs positive"):
        rj.scan(lru_cell, lru_params, xs, backend=BACKENDS["log"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"method": "tree"}, "method must be one of"),
        ({"chunk": 0}, "chunk must be a positive int"),
        ({"method": "chunked", "log_space": True}, "log_space=True scans associatively"),
    ],
)
def test_bad_options_are_refused_in_words(kwargs, message):
    with pytest.raises(ValueError, match=message):
        rj.backends.Parallel(**kwargs)


def test_zero_steps():
    cell, params, _, h0 = problem("lru")
    final, ys = rj.scan(cell, params, jnp.ones((0, B, F)), initial_state=h0, backend="parallel")
    np.testing.assert_array_equal(final, h0)
    assert ys.shape == (0, B, F)


def slower_than_sequential(entry, mode):
    """The parallel-in-time backends a dispatch-table entry shows slower than ``sequential``
    in ``mode``'s medians (``auto`` decides a training problem by the forward+backward
    ones, inference by the forward ones)."""
    times = entry.get(mode) or {}
    if "sequential" not in times:
        return set()
    return {b for b in ("parallel", "newton") if times.get(b, 0.0) > times["sequential"]}


@pytest.mark.skipif(not RESULTS.exists(), reason="no recorded results")
def test_auto_never_picks_a_parallel_backend_recorded_as_slower():
    """At every shape recorded for this platform where ``parallel`` or ``newton`` measured
    slower than ``sequential``, ``auto`` picks neither: by the table built from all
    results now, and by the packaged table."""
    sys.path.insert(0, str(RESULTS.parent))
    import common
    import dispatch_table

    platform = jax.default_backend()
    built = dispatch_table.build(common.load_results(RESULTS))
    for entry in built["backends"].get(platform, []):
        if not hasattr(rj, entry["cell"]):
            continue
        cell = getattr(rj, entry["cell"])(entry["H"])
        params = jax.eval_shape(partial(cell.init, input_size=entry["I"]), jax.random.key(0))
        xs = jax.ShapeDtypeStruct((entry["T"], entry["B"], entry["I"]), jnp.dtype(entry["dtype"]))
        for mode in ("forward", "forward_backward"):
            slower = slower_than_sequential(entry, mode)
            problem = scan_helpers.problem_of(cell, params, xs, gradient=mode == "forward_backward")
            for table in (built, None):
                chosen = auto.choose(cell, problem, table=table, platform=platform)
                assert chosen.name not in slower, (entry, mode, chosen.name)
