"""Property tests of the padding contract, on every backend that runs on a CPU.

Shapes are fixed per case and hypothesis draws the values (lengths, inputs,
padding, initial states), so each backend compiles once and every example
after the first only runs.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import scan_helpers
from hypothesis import given
from hypothesis import strategies as st

import rnn_jax as rj

T, B, F, H, EXTRA = 6, 3, 2, 3, 2
CELLS = {"lstm": rj.lstm(H), "gru": rj.gru(H)}


def with_padding(xs, length, padding):
    """``xs`` whose steps past each length are replaced by ``padding``."""
    valid = (jnp.arange(xs.shape[0])[:, None] < length[None])[..., None]
    return jnp.where(valid, xs, padding)


@partial(jax.jit, static_argnames=("name", "backend"))
def runs(params, xs, padding, extra, h0, length, *, name, backend):
    """Each direction over: ``xs``; ``xs`` with other padding; ``xs`` padded longer; and the
    forward scan of each sequence's reversed valid prefix."""
    cell = CELLS[name]
    scan = lambda xs, reverse: rj.scan(
        cell, params, xs, initial_state=h0, length=length, reverse=reverse, backend=backend
    )
    out = {}
    for reverse in (False, True):
        out["reverse" if reverse else "forward"] = {
            "plain": scan(xs, reverse),
            "repadded": scan(with_padding(xs, length, padding), reverse),
            "longer": scan(jnp.concatenate([xs, extra]), reverse),
        }
    final, ys = scan(rj.flip_valid(xs, length), False)
    out["flipped"] = (final, rj.flip_valid(ys, length))
    return out


def draw_problem(name, seed, length):
    rng = np.random.default_rng(seed)
    cell = CELLS[name]
    shapes = jax.eval_shape(lambda key: cell.init(key, F), jax.random.key(0))
    params = jax.tree.map(lambda s: jnp.asarray(rng.normal(0, 0.7, s.shape), s.dtype), shapes)
    carry = jax.eval_shape(lambda p: cell.initial_state(p, (B,)), params)
    h0 = jax.tree.map(lambda s: jnp.asarray(rng.normal(0, 1, s.shape), s.dtype), carry)
    xs = jnp.asarray(rng.normal(0, 1, (T, B, F)), jnp.float32)
    padding = jnp.asarray(rng.normal(0, 100, (T, B, F)), jnp.float32)  # wild values
    extra = jnp.asarray(rng.normal(0, 100, (EXTRA, B, F)), jnp.float32)
    return params, xs, padding, extra, h0, jnp.asarray(length, jnp.int32)


def outcomes(backend, seed, length):
    """``[(runs, length)]`` for each cell this backend is tested with here: both on the core
    backends, the GRU on the others (their own modules test every cell)."""
    names = sorted(CELLS) if backend in ("reference", "sequential") else ["gru"]
    results = []
    for name in names:
        problem = draw_problem(name, seed, length)
        params, xs = problem[0], problem[1]
        scan_helpers.skip_unless_supported(backend, CELLS[name], params, xs, length=problem[-1])
        out = runs(*problem, name=name, backend=backend)
        # and what the backend computes is what the reference computes
        reference = runs(*problem, name=name, backend="reference")
        for direction in ("forward", "reverse"):
            close(out[direction]["plain"], reference[direction]["plain"])
        results.append((out, np.asarray(length)))
    return results


def close(a, b, tol=1e-5):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=tol, atol=tol), a, b)


cases = {
    "seed": st.integers(0, 2**32 - 1),
    "length": st.lists(st.integers(0, T), min_size=B, max_size=B),
}


@given(**cases)
def test_padding_never_changes_valid_outputs_or_the_final_state(cpu_backend, seed, length):
    for out, _ in outcomes(cpu_backend, seed, length):
        check_padding(out)


def check_padding(out):
    for direction in ("forward", "reverse"):
        final, ys = out[direction]["plain"]
        for other in ("repadded", "longer"):
            other_final, other_ys = out[direction][other]
            close(other_final, final)
            np.testing.assert_allclose(other_ys[:T], ys, rtol=1e-5, atol=1e-5)
        assert not np.asarray(out[direction]["longer"][1][T:]).any()


@given(**cases)
def test_reverse_equals_flipping_each_valid_prefix(cpu_backend, seed, length):
    for out, _ in outcomes(cpu_backend, seed, length):
        close(out["flipped"], out["reverse"]["plain"])


@given(**cases)
def test_outputs_past_a_length_are_exactly_zero(cpu_backend, seed, length):
    for out, lengths in outcomes(cpu_backend, seed, length):
        check_zeros(out, lengths)


def check_zeros(out, length):
    for direction in ("forward", "reverse"):
        for variant in ("plain", "repadded", "longer"):
            ys = np.asarray(out[direction][variant][1])
            past = np.arange(ys.shape[0])[:, None] >= length
            assert (ys[past] == 0.0).all()
            # and a step inside a length has some nonzero output
            assert np.abs(ys[~past]).sum(axis=-1).all()


@given(
    length=st.lists(st.integers(0, T), min_size=B, max_size=B),
    seed=st.integers(0, 2**32 - 1),
)
def test_flip_valid_is_an_involution_that_keeps_the_padding(length, seed):
    xs = np.random.default_rng(seed).normal(size=(T, B, 2)).astype(np.float32)
    length = np.asarray(length)
    flipped = np.asarray(rj.flip_valid(xs, jnp.asarray(length)))
    for b, n in enumerate(length):
        np.testing.assert_array_equal(flipped[:n, b], xs[:n, b][::-1])
        np.testing.assert_array_equal(flipped[n:, b], xs[n:, b])
    np.testing.assert_array_equal(rj.flip_valid(flipped, jnp.asarray(length)), xs)
    np.testing.assert_array_equal(rj.flip_valid(xs, None), xs[::-1])
