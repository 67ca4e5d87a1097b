"""Resets and masks: every backend against a plain per-segment loop, values and gradients,
forward and reverse, with lengths and with holes; streams fed chunk by chunk; errors in words."""

from __future__ import annotations

import re
from functools import cache

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scan_helpers

import rnn_jax as rj

T, B, F, H = 7, 4, 2, 3
LENGTH = np.array([7, 5, 0, 3])
RESETS = np.zeros((T, B), bool)
RESETS[[0, 3, 6], 0] = True  # a reset at the first and the last step, and one between
RESETS[[2, 4], 1] = True
RESETS[[1], 2] = True  # a sequence of length 0: its resets count for nothing
RESETS[[2, 3], 3] = True  # the last valid step starts a segment; a reset in the padding
HOLES = np.ones((T, B), bool)
HOLES[[1, 4], 0] = False
HOLES[[0, 2, 3], 1] = False  # a reset on a masked step (t=2) counts for nothing
HOLES[:, 2] = False

CELLS = {
    "lstm": rj.lstm(H),
    "gru": rj.gru(H),
    "mgu": rj.mgu(H),  # no Gates: the hoisted loop
    "min_gru": rj.min_gru(H),  # linear: parallel and the linear-scan kernel
    "lru": rj.lru(H),  # complex carry
}
# Every backend but the reference, which the segment loop checks.
BACKENDS = {
    "sequential": "sequential",
    "sequential_chunked": rj.backends.Sequential(chunk=3, residuals="recompute"),
    "sequential_store": rj.backends.Sequential(chunk=2, residuals="store"),
    "checkpointed": rj.backends.Checkpointed(segment=3),
    "parallel": "parallel",
    "parallel_log": rj.backends.Parallel(log_space=True),
    "newton": "newton",
    "pallas": "pallas",
}


def draw(name, seed=0):
    cell = CELLS[name]
    return (cell, *scan_helpers.random_case(cell, T, B, F, seed))


def segment_loop(cell, params, xs, h0, valid, resets, reverse):
    """What ``rj.scan`` means with resets, one sequence and one step at a time: a masked step
    does nothing; a valid reset starts a segment from the cell's initial state (forward: at
    that step; reverse: the carry leaving it, toward earlier steps, is the initial state)."""
    step = jax.jit(cell.step)
    zero = jax.tree.map(lambda c: c[0], cell.initial_state(params, (1,)))
    finals, outputs = [], []
    for b in range(B):
        carry = jax.tree.map(lambda c, b=b: c[b], h0)
        order = [t for t in (reversed(range(T)) if reverse else range(T)) if valid[t, b]]
        ys = [None] * T
        for t in order:
            if not reverse and resets[t, b]:
                carry = zero
            carry, ys[t] = step(params, carry, xs[t, b])
            if reverse and resets[t, b]:
                carry = zero
        like = jnp.zeros_like(step(params, carry, xs[0, b])[1])
        outputs.append(jnp.stack([like if y is None else y for y in ys]))
        finals.append(carry)
    return jax.tree.map(lambda *c: jnp.stack(c), *finals), jnp.stack(outputs, axis=1)


def close(got, want, tol=2e-5):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=tol, atol=tol), got, want)


def weighted_loss(cell, backend, params, xs, h0, extra, reverse):
    """A loss whose cotangent depends on the outputs, and what it was computed from."""

    def loss(params, xs, h0):
        final, ys = rj.scan(
            cell, params, xs, initial_state=h0, reverse=reverse, backend=backend, **extra
        )
        weights = jnp.cos(jnp.arange(ys.size, dtype=jnp.float32)).reshape(ys.shape)
        total = jnp.sum(jnp.real(ys * weights) ** 2)
        total += sum(
            jnp.sum(jnp.real(c) * jnp.imag(c) + jnp.real(c)) for c in jax.tree.leaves(final)
        )
        return total, (final, ys)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(params, xs, h0)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("name", list(CELLS))
def test_resets_with_lengths_equal_the_segment_loop(name, reverse):
    cell, params, xs, h0 = draw(name)
    valid = np.arange(T)[:, None] < LENGTH[None]
    final, ys = rj.scan(
        cell,
        params,
        xs,
        initial_state=h0,
        length=jnp.asarray(LENGTH),
        resets=jnp.asarray(RESETS),
        reverse=reverse,
        backend="reference",
    )
    close((final, ys), segment_loop(cell, params, xs, h0, valid, RESETS, reverse))


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_masks_with_holes_and_resets_equal_the_segment_loop(reverse):
    cell, params, xs, h0 = draw("gru")
    final, ys = rj.scan(
        cell,
        params,
        xs,
        initial_state=h0,
        mask=jnp.asarray(HOLES),
        resets=jnp.asarray(RESETS),
        reverse=reverse,
        backend="reference",
    )
    close((final, ys), segment_loop(cell, params, xs, h0, HOLES, RESETS, reverse))
    # a masked step outputs zeros and passes the carry through
    assert not np.asarray(ys)[~HOLES].any()


def padding(reverse):
    """Lengths and resets, and holes in the reversed cases."""
    extra = {"length": jnp.asarray(LENGTH), "resets": jnp.asarray(RESETS)}
    if reverse:
        extra["mask"] = jnp.asarray(HOLES)
    return extra


@cache  # one reference per case, which every backend's test compares with
def reference_loss(name, reverse):
    cell, params, xs, h0 = draw(name)
    return weighted_loss(cell, "reference", params, xs, h0, padding(reverse), reverse)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("name", list(CELLS))
def test_every_backend_equals_the_reference_with_resets(name, backend, reverse):
    """Values and gradients with lengths and resets (and, every other case, holes)."""
    cell, params, xs, h0 = draw(name)
    extra, chosen = padding(reverse), BACKENDS[backend]
    scan_helpers.skip_unless_supported(chosen, cell, params, xs, reverse=reverse, **extra)
    got = weighted_loss(cell, chosen, params, xs, h0, extra, reverse)
    close(got, reference_loss(name, reverse), 5e-5)


def test_no_gradient_crosses_a_boundary():
    cell, params, xs, h0 = draw("lstm")
    resets = jnp.zeros((T, B), bool).at[3].set(True)

    def after_the_boundary(xs):
        _, ys = rj.scan(cell, params, xs, initial_state=h0, resets=resets, backend="sequential")
        return jnp.sum(ys[3:] ** 2)

    d_xs = jax.grad(after_the_boundary)(xs)
    assert not np.asarray(d_xs[:3]).any() and np.asarray(d_xs[3:]).any()


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_a_stream_fed_chunk_by_chunk_equals_one_long_scan(reverse):
    """Final carry in, next chunk (from the end when reversed): one long scan, resets and all."""
    cell, params, xs, h0 = draw("gru")
    resets = jnp.asarray(RESETS)
    whole = rj.scan(cell, params, xs, initial_state=h0, resets=resets, reverse=reverse)
    carry, pieces = h0, {}
    bounds = [(0, 3), (3, 5), (5, T)]
    for start, stop in reversed(bounds) if reverse else bounds:
        carry, pieces[start] = rj.scan(
            cell,
            params,
            xs[start:stop],
            initial_state=carry,
            resets=resets[start:stop],
            reverse=reverse,
        )
    ys = jnp.concatenate([pieces[start] for start, _ in bounds])
    close((carry, ys), whole)


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        ({"resets": jnp.zeros((T, B))}, TypeError, r"^resets must be a bool array .*float32$"),
        (
            {"resets": jnp.zeros((T, B + 1), bool)},
            ValueError,
            r"^resets must have shape \[T, \*batch\] = \(7, 4\) \(from xs\); got shape \(7, 5\)$",
        ),
        (
            {"mask": jnp.zeros((T - 1, B), bool)},
            ValueError,
            r"^mask must have shape \[T, \*batch\] = \(7, 4\) \(from xs\); got shape \(6, 4\)$",
        ),
    ],
    ids=["resets_dtype", "resets_shape", "mask_shape"],
)
def test_bad_resets_and_masks_are_named(kwargs, error, pattern):
    cell, params, xs, _ = draw("gru")
    with pytest.raises(error) as info:
        rj.scan(cell, params, xs, **kwargs)
    assert re.search(pattern, str(info.value)), info.value  # the message, notes aside
