"""Degenerate shapes are ordinary inputs: no steps, no sequences, no valid step, one step.

``rj.scan`` answers a problem without steps (``T = 0``) or without sequences
(``B = 0``) by the reference loop, after the chosen backend's ``supports``;
one step and sequences of length 0 reach the kernels. Every case compares the
outputs, the final carry and the gradients (parameters, inputs, initial
state) with the reference backend's, on every backend that runs on a CPU,
pallas in interpret mode and cuDNN's reference implementation; ``vmap`` and
``newton_scan`` likewise. Cells cannot have zero input features: ``init``
refuses ``input_size=0`` in words.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scan_helpers
from hypothesis import given, settings
from hypothesis import strategies as st

import rnn_jax as rj
from rnn_jax.backends import Cudnn

H, F = 3, 2
# Each backend runs the first of these it supports: gated kernels the GRU, linear-recurrence
# ones the minGRU, cuDNN the LSTM.
CELLS = {"gru": rj.gru(H), "min_gru": rj.min_gru(H), "lstm": rj.lstm(H)}
# Every registered backend but the reference, as a CPU runs it (pallas: in interpret mode).
ON_A_CPU = {"cudnn": Cudnn(implementation="reference")}
BACKENDS = [ON_A_CPU.get(name, name) for name in rj.backends.names() if name != "reference"]


class Case(NamedTuple):
    """One scan's arrays (``length`` and ``resets`` None where not given)."""

    params: Any
    h0: Any
    xs: jax.Array
    length: jax.Array | None
    resets: jax.Array | None


def case(cell, steps, batch, *, length=None, resets=None, seed=0) -> Case:
    """A `Case` of ``steps`` steps and batch shape ``batch``, with random values."""
    rng = np.random.default_rng(seed)
    draw = lambda a, scale: jnp.asarray(rng.normal(0, scale, a.shape), a.dtype)
    params = jax.tree.map(lambda a: draw(a, 0.5), cell.init(jax.random.key(seed), F))
    h0 = jax.tree.map(lambda c: draw(c, 1.0), cell.initial_state(params, batch))
    xs = jnp.asarray(rng.normal(0, 1, (steps, *batch, F)), jnp.float32)
    length = None if length is None else jnp.asarray(length, jnp.int32)
    resets = None if resets is None else jnp.asarray(resets, bool)
    return Case(params, h0, xs, length, resets)


def value_and_grads(cell, backend, case: Case, reverse: bool):
    """The outputs and final carry, and the gradients of a loss over all of them with respect
    to the parameters, the inputs and the initial state."""

    def loss(params, xs, h0):
        final, ys = rj.scan(
            cell,
            params,
            xs,
            initial_state=h0,
            length=case.length,
            resets=case.resets,
            reverse=reverse,
            backend=backend,
        )
        total = sum(jnp.sum(jnp.sin(leaf)) for leaf in jax.tree.leaves((final, ys)))
        return total, (final, ys)

    grad = jax.grad(loss, argnums=(0, 1, 2), has_aux=True)
    grads, outputs = grad(case.params, case.xs, case.h0)
    return outputs, grads


def assert_equal_to_the_reference(cell, backend, cases, tol=1e-5):
    """``cases``: ``(Case, reverse)`` pairs, compiled together (one program per backend);
    those ``backend`` refuses (cuDNN: resets) are left out."""
    cases = [(c, r) for c, r in cases if not refused(backend, cell, c, r)]
    reverses = [reverse for _, reverse in cases]

    @jax.jit
    def both(arrays):
        return [
            (value_and_grads(cell, backend, c, r), value_and_grads(cell, "reference", c, r))
            for c, r in zip(arrays, reverses, strict=True)
        ]

    for got, want in both([c for c, _ in cases]):
        chex.assert_trees_all_equal_shapes_and_dtypes(got, want)
        chex.assert_trees_all_close(got, want, rtol=tol, atol=tol)


def refused(backend, cell, case: Case, reverse: bool) -> bool:
    kwargs = {"length": case.length, "resets": case.resets, "reverse": reverse}
    return scan_helpers.refusal(backend, cell, case.params, case.xs, **kwargs) is not None


def cell_for(backend):
    """The first of `CELLS` that ``backend`` runs; the test skips where it runs none here (a
    backend whose library is missing refuses every cell)."""
    reasons = []
    for cell in CELLS.values():
        probe = case(cell, 2, (2,))
        reason = scan_helpers.refusal(backend, cell, probe.params, probe.xs)
        if reason is None:
            return cell
        reasons.append(reason)
    pytest.skip("; ".join(reasons))


def no_work_cases(cell):
    """Problems without steps or without sequences: the driver's reference answers them."""
    return [
        (case(cell, 0, (2,), length=[0, 0], resets=np.zeros((0, 2))), True),
        (case(cell, 3, (0,), length=np.zeros(0), resets=np.ones((3, 0))), False),
        (case(cell, 0, (2, 0)), True),
        (case(cell, 0, ()), False),
    ]


def kernel_cases(cell):
    """Degenerate problems the kernels see: one step, and sequences without a valid step."""
    resets = [[0, 1], [1, 0], [0, 1]]
    return [
        (case(cell, 1, (2,), length=[1, 0], seed=1), False),
        (case(cell, 3, (2,), length=[0, 0], resets=resets, seed=2), True),
    ]


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: getattr(b, "name", b))
def test_no_steps_and_no_sequences_give_the_references_answer(backend):
    cell = cell_for(backend)
    assert_equal_to_the_reference(cell, backend, no_work_cases(cell), tol=0)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: getattr(b, "name", b))
def test_one_step_and_no_valid_step_give_the_references_answer(backend):
    cell = cell_for(backend)
    assert_equal_to_the_reference(cell, backend, kernel_cases(cell))


def test_no_steps_pass_the_initial_state_and_its_gradient_on_exactly():
    cell = CELLS["lstm"]
    empty = case(cell, 0, (2, 3), length=np.zeros((2, 3)))
    (final, ys), (d_params, d_xs, d_h0) = value_and_grads(cell, "sequential", empty, False)
    assert ys.shape == (0, 2, 3, H) and d_xs.shape == (0, 2, 3, F)
    chex.assert_trees_all_equal(final, empty.h0)
    chex.assert_trees_all_equal(d_h0, jax.tree.map(jnp.cos, empty.h0))
    assert not any(np.asarray(leaf).any() for leaf in jax.tree.leaves(d_params))


def test_a_refusal_does_not_depend_on_the_shapes():
    cell = CELLS["gru"]
    empty = case(cell, 0, (0,))
    with pytest.raises(ValueError, match="parallel backend cannot run the gru cell"):
        rj.scan(cell, empty.params, empty.xs, backend="parallel")


@pytest.mark.parametrize("backend", ["sequential", "parallel"])
def test_vmap_over_no_sequences_and_over_sequences_without_steps(backend):
    cell = CELLS["gru" if backend == "sequential" else "min_gru"]
    params = case(cell, 4, (2,)).params

    def run(backend, xs):  # batch-major: [T, F] per sequence
        return rj.scan(cell, params, xs, backend=backend)

    for xs in (jnp.ones((0, 4, F)), jnp.ones((3, 0, F)), jnp.ones((0, 0, F))):
        got = jax.vmap(partial(run, backend))(xs)
        want = jax.vmap(partial(run, "reference"))(xs)
        chex.assert_trees_all_equal_shapes_and_dtypes(got, want)
        chex.assert_trees_all_equal(got, want)


def test_vmap_with_mapped_parameters_and_no_steps():
    cell = CELLS["gru"]
    params = jax.vmap(lambda key: cell.init(key, F))(jax.random.split(jax.random.key(0), 3))

    def run(backend, params):
        return rj.scan(cell, params, jnp.ones((0, 2, F)), backend=backend)

    got = jax.vmap(partial(run, "sequential"))(params)
    chex.assert_trees_all_equal(got, jax.vmap(partial(run, "reference"))(params))
    assert got[1].shape == (3, 0, 2, H)


def test_newton_scan_without_steps_or_sequences_reports_no_iteration():
    cell = CELLS["gru"]
    for c, reverse in no_work_cases(cell)[:2]:
        kwargs = {"initial_state": c.h0, "length": c.length, "resets": c.resets, "reverse": reverse}
        carry, ys, info = rj.newton_scan(cell, c.params, c.xs, **kwargs)
        want = rj.scan(cell, c.params, c.xs, backend="reference", **kwargs)
        chex.assert_trees_all_equal((carry, ys), want)
        assert int(info.iterations) == 0 and bool(info.converged)


@pytest.mark.parametrize("name", ["lstm", "gru", "simple", "min_gru", "mgu", "indrnn", "lru"])
def test_a_cell_without_inputs_is_refused_at_init(name):
    with pytest.raises(ValueError, match="input_size must be a positive int; got 0"):
        getattr(rj, name)(H).init(jax.random.key(0), 0)


@settings(max_examples=6, deadline=None)
@given(
    steps=st.integers(0, 3),
    batch=st.sampled_from([(), (0,), (2,), (2, 0), (0, 3)]),
    reverse=st.booleans(),
    seed=st.integers(0, 2**16),
    data=st.data(),
)
def test_small_shapes_with_zeros_equal_the_reference(steps, batch, reverse, seed, data):
    """The default backend over drawn shapes, lengths in ``[0, T]`` included."""
    rng = np.random.default_rng(seed)
    length = rng.integers(0, steps + 1, batch) if data.draw(st.booleans(), "lengths") else None
    cell = CELLS["lstm"]
    drawn = case(cell, steps, batch, length=length, seed=seed % 7)
    assert_equal_to_the_reference(cell, "auto", [(drawn, reverse)])
