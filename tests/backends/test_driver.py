"""``rj.scan``: padding and reversal semantics against a plain Python loop, every backend
against the reference, jit and vmap invariance, and errors in words."""

from __future__ import annotations

import re
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scan_helpers

import rnn_jax as rj

T, B, F, H = 5, 4, 3, 4
LENGTH = np.array([5, 0, 2, 4])  # full, empty, short, one short of full

CELLS = {
    "simple": rj.simple(H),
    "lstm": rj.lstm(H, proj_size=2, peephole=True),
    "gru": rj.gru(H),
    "gru_reset_before": rj.gru(H, reset_after=False),
    "mgu": rj.mgu(H),
    "indrnn": rj.indrnn(H, activation="tanh"),
}


def normal(shape, seed, dtype=jnp.float32):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


def problem(name, batch=(B,), steps=T, seed=0):
    """``(cell, params, xs, h0)`` with random values everywhere (NumPy draws: no compiles)."""
    cell = CELLS[name]
    shapes = jax.eval_shape(lambda key: cell.init(key, F), jax.random.key(0))
    rng = np.random.default_rng(seed)
    draw = lambda s: jnp.asarray(0.5 * rng.standard_normal(s.shape), s.dtype)
    params = jax.tree.map(draw, shapes)
    h0 = jax.tree.map(draw, jax.eval_shape(lambda p: cell.initial_state(p, batch), params))
    return cell, params, normal((steps, *batch, F), seed + 1), h0


# Module-level jitted runners, keyed by static names, so tests sharing a case share its compile.
@partial(jax.jit, static_argnames=("name", "backend"))
def both_directions(params, xs, h0, length, *, name, backend):
    """``{reverse: (final, ys)}`` for both directions."""
    return scan_helpers.both_directions(CELLS[name], params, xs, h0, length, backend)


@partial(jax.jit, static_argnames=("name", "backend"))
def value_and_grads(params, xs, h0, length, weights, *, name, backend):
    """A loss over both directions' outputs and final states, and its gradients."""

    def loss(params, xs, h0):
        runs = both_directions(params, xs, h0, length, name=name, backend=backend)
        return sum(
            jnp.sum(ys * weights * (1.0 + reverse))
            + sum(jnp.sum(jnp.sin(c)) for c in jax.tree.leaves(final))
            for reverse, (final, ys) in runs.items()
        )

    return jax.value_and_grad(loss, argnums=(0, 1, 2))(params, xs, h0)


_STEPS = {}


def python_loop(cell, params, xs, h0, length, reverse):
    """The meaning of ``rj.scan`` with lengths, one sequence and one step at a time."""
    step = _STEPS.setdefault(id(cell), jax.jit(cell.step))
    _, y_shape = jax.eval_shape(step, params, jax.tree.map(lambda c: c[0], h0), xs[0, 0])
    finals, outputs = [], []
    for b in range(xs.shape[1]):
        carry = jax.tree.map(lambda c, b=b: c[b], h0)
        ys = np.zeros((xs.shape[0], *y_shape.shape), np.float32)
        steps = range(int(length[b]))
        for t in reversed(steps) if reverse else steps:
            carry, ys[t] = step(params, carry, xs[t, b])
        finals.append(carry)
        outputs.append(ys)
    return jax.tree.map(lambda *c: jnp.stack(c), *finals), np.stack(outputs, axis=1)


def assert_trees_close(got, want, tol=1e-5):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=tol, atol=tol), got, want)


@pytest.mark.parametrize("name", sorted(CELLS))
def test_lengths_and_reverse_mean_a_loop_over_the_valid_prefix(name):
    """The reference backend, against a Python loop over each sequence's valid steps."""
    cell, params, xs, h0 = problem(name)
    got = both_directions(params, xs, h0, jnp.asarray(LENGTH), name=name, backend="reference")
    for reverse, (final, ys) in got.items():
        want_final, want_ys = python_loop(cell, params, xs, h0, LENGTH, reverse)
        assert_trees_close(final, want_final)
        np.testing.assert_allclose(ys, want_ys, rtol=1e-5, atol=1e-5)
        # past each length the outputs are exact zeros; an empty sequence keeps its initial state
        for b, n in enumerate(LENGTH):
            assert not np.asarray(ys[n:, b]).any()
        empty = jax.tree.map(lambda c: c[1], final)
        assert_trees_close(empty, jax.tree.map(lambda c: c[1], h0), 0)


def check_against_the_reference(backend, name):
    """Values and gradients on ``backend`` equal the reference's (other backends: their own
    test modules, and the padding properties in test_properties.py)."""
    _, params, xs, h0 = problem(name)
    length = jnp.asarray(LENGTH)
    weights = normal((T, B, 2 if name == "lstm" else H), 7)
    args = (params, xs, h0, length, weights)
    scan_helpers.skip_unless_supported(backend, CELLS[name], params, xs, length=length)
    got = value_and_grads(*args, name=name, backend=backend)
    assert_trees_close(got, value_and_grads(*args, name=name, backend="reference"))
    # the padding receives no gradient
    d_xs = got[1][1]
    for b, n in enumerate(LENGTH):
        assert not np.asarray(d_xs[n:, b]).any()


# one cell per code path of the sequential backend: a Gates split with an array carry, with
# an LSTMState carry (peepholes, projection), with a recurrent bias; a plain recur
@pytest.mark.parametrize("name", ["simple", "lstm", "gru", "gru_reset_before"])
def test_sequential_values_and_gradients_match_the_reference(name):
    check_against_the_reference("sequential", name)


def test_jit_equals_eager(core_backend):
    name = "lstm"
    cell, params, xs, h0 = problem(name)
    length = jnp.asarray(LENGTH)
    jitted = both_directions(params, xs, h0, length, name=name, backend=core_backend)
    for reverse in (False, True):
        kwargs = {"initial_state": h0, "length": length, "reverse": reverse}
        eager = rj.scan(cell, params, xs, backend=core_backend, **kwargs)
        assert_trees_close(jitted[reverse], eager, 1e-6)


def test_vmap_over_batch_major_sequences_equals_the_batched_call(cpu_backend):
    """``jax.vmap`` of a call on one ``[T, F]`` sequence over ``xs [B, T, F]``, lengths per
    sequence, computes what the time-major batched call computes."""
    backend = cpu_backend
    name = "gru"
    _, params, xs, h0 = problem(name)
    length = jnp.asarray(LENGTH)
    scan_helpers.skip_unless_supported(backend, CELLS[name], params, xs, length=length)
    want = both_directions(params, xs, h0, length, name=name, backend=backend)
    one = lambda x_tf, h, n: both_directions(params, x_tf, h, n, name=name, backend=backend)
    got = jax.jit(jax.vmap(one))(xs.swapaxes(0, 1), h0, length)
    for reverse in (False, True):
        assert_trees_close(got[reverse][0], want[reverse][0], 1e-6)
        np.testing.assert_allclose(
            got[reverse][1].swapaxes(0, 1), want[reverse][1], rtol=1e-6, atol=1e-6
        )


def test_without_length_every_step_counts():
    name = "lstm"
    cell, params, xs, h0 = problem(name)
    full = both_directions(params, xs, h0, jnp.full((B,), T), name=name, backend="reference")
    plain = both_directions(params, xs, h0, None, name=name, backend="reference")
    assert_trees_close(plain, full, 1e-6)
    assert_trees_close(plain[True], python_loop(cell, params, xs, h0, [T] * B, reverse=True))


def test_default_initial_state_is_zeros():
    name = "lstm"
    cell, params, xs, _ = problem(name)
    zeros = cell.initial_state(params, (B,))
    scan = jax.jit(lambda params, xs, h0: rj.scan(cell, params, xs, initial_state=h0))
    assert_trees_close(scan(params, xs, None), scan(params, xs, zeros), 0)


def test_batch_shapes_unbatched_and_several_axes():
    cell, params, xs, h0 = problem("gru", batch=(2, 3))
    length = jnp.asarray([[5, 0, 2], [1, 4, 3]])
    scan = jax.jit(
        lambda xs, h0, length: rj.scan(cell, params, xs, initial_state=h0, length=length)
    )
    final, ys = scan(xs, h0, length)
    assert ys.shape == (T, 2, 3, H) and final.shape == (2, 3, H)
    flat_final, flat_ys = scan(xs.reshape(T, 6, F), h0.reshape(6, H), length.reshape(6))
    np.testing.assert_allclose(ys.reshape(T, 6, H), flat_ys, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(final.reshape(6, H), flat_final, rtol=1e-6, atol=1e-6)
    # one sequence with no batch axis: xs [T, F], carry [H], length a scalar
    one_final, one_ys = scan(xs[:, 1, 2], h0[1, 2], 3)
    np.testing.assert_allclose(one_ys, ys[:, 1, 2], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(one_final, final[1, 2], rtol=1e-6, atol=1e-6)


def test_batch_major_data_is_one_keyword_away():
    cell, params, xs, h0 = problem("gru", batch=(2, 3))
    length = jnp.asarray([[5, 0, 2], [1, 4, 3]])
    rng = np.random.default_rng(3)
    mask = jnp.asarray(rng.random((T, 2, 3)) < 0.8)
    resets = jnp.asarray(rng.random((T, 2, 3)) < 0.3)
    options = dict(initial_state=h0, length=length, reverse=True, backend="sequential")
    want_final, want_ys = rj.scan(cell, params, xs, mask=mask, resets=resets, **options)
    batch_major = lambda x: jnp.moveaxis(x, 0, -1 if x.ndim == 3 else -2)
    final, ys = rj.scan(
        cell,
        params,
        batch_major(xs),
        mask=batch_major(mask),
        resets=batch_major(resets),
        time_major=False,
        **options,
    )
    assert ys.shape == (2, 3, T, H)
    np.testing.assert_allclose(ys, batch_major(want_ys), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(final, want_final, rtol=1e-6, atol=1e-6)
    raises_in_words(
        ValueError,
        r"mask must have shape \[\*batch, T\] = \(2, 3, 5\) \(time_major=False",
        lambda: rj.scan(cell, params, batch_major(xs), mask=mask, time_major=False),
    )


def test_unroll_and_backend_objects_change_nothing():
    cell, params, xs, h0 = problem("simple")
    length = jnp.asarray(LENGTH)

    @partial(jax.jit, static_argnames=("unroll", "backend"))
    def scan(params, xs, h0, length, unroll=1, backend="reference"):
        return rj.scan(
            cell, params, xs, initial_state=h0, length=length, unroll=unroll, backend=backend
        )

    want = scan(params, xs, h0, length)
    assert_trees_close(scan(params, xs, h0, length, unroll=True), want, 1e-6)
    reference = rj.backends.get("reference")
    assert_trees_close(scan(params, xs, h0, length, backend=reference), want, 0)
    assert_trees_close(scan(params, xs, h0, length, backend="auto"), want)


def test_traced_lengths_are_accepted_under_jit():
    name = "simple"
    cell, params, xs, h0 = problem(name)
    got = both_directions(params, xs, h0, jnp.asarray(LENGTH), name=name, backend="reference")
    final, ys = python_loop(cell, params, xs, h0, LENGTH, reverse=False)
    np.testing.assert_allclose(got[False][1], ys, rtol=1e-5, atol=1e-5)


def test_backends_are_registered_and_named():
    names = rj.backends.names()
    assert {"reference", "sequential"} <= set(names) and names == sorted(names)
    assert rj.backends.get("sequential").name == "sequential"


# --- errors in words --------------------------------------------------------------------------


def raises_in_words(error_type, pattern, call):
    """``call()`` raises ``error_type`` whose message matches ``pattern`` and is no XLA dump."""
    with pytest.raises(error_type) as info:
        call()
    message = str(info.value)
    assert re.search(pattern, message), message
    assert len(message) < 500 and "Traceback" not in message and "HLO" not in message, message
    return message


LSTM = rj.lstm(4)
LSTM_PARAMS = rj.LSTMParams(jnp.zeros((3, 16)), jnp.zeros((4, 16)), jnp.zeros(16))
XS = jnp.ones((5, 2, 3))


@pytest.mark.parametrize(
    "error_type, pattern, kwargs",
    [
        (
            ValueError,
            r"^xs must have 3 features \(the lstm cell's input size\) in its last axis; "
            r"got shape \(5, 2, 7\)$",
            {"xs": jnp.ones((5, 2, 7))},
        ),
        (
            ValueError,
            r"^xs must have shape \[T, \*batch, features\] \(rank >= 2 for the lstm cell\); "
            r"got shape \(3,\)$",
            {"xs": jnp.ones((3,))},
        ),
        (
            TypeError,
            r"^xs must be a floating array; got dtype int32$",
            {"xs": jnp.ones((5, 2, 3), int)},
        ),
        (TypeError, r"^xs must be an array .*; got list$", {"xs": [[1.0, 2.0, 3.0]]}),
        (
            ValueError,
            r"^length must lie in \[0, 5\] \(T = xs.shape\[0\]\); got values from 2 to 6$",
            {"length": jnp.array([2, 6])},
        ),
        (
            ValueError,
            r"^length must lie in \[0, 5\] \(T = xs.shape\[0\]\); got values from -1 to 3$",
            {"length": np.array([3, -1])},
        ),
        (
            ValueError,
            r"^length must have the batch shape \(2,\) of xs; got shape \(3,\)$",
            {"length": jnp.array([1, 2, 3])},
        ),
        (
            TypeError,
            r"^length must be an integer array; got dtype float32$",
            {"length": jnp.array([1.0, 2.0])},
        ),
        (
            ValueError,
            r"^initial_state must have the structure of the lstm cell's carry .*LSTMState.*; got",
            {"initial_state": jnp.zeros((2, 4))},
        ),
        (
            ValueError,
            r"^initial_state must have the structure .*; got PyTreeDef\(\(\*, \*\)\)$",
            {"initial_state": (jnp.zeros((2, 4)), jnp.zeros((2, 4)))},
        ),
        (
            ValueError,
            r"^initial_state\.c must have shape \(2, 4\) for batch shape \(2,\); got \(3, 4\)$",
            {"initial_state": rj.LSTMState(jnp.zeros((2, 4)), jnp.zeros((3, 4)))},
        ),
        (
            TypeError,
            r"^initial_state\.h must have dtype float32; got int32$",
            {"initial_state": rj.LSTMState(jnp.zeros((2, 4), int), jnp.zeros((2, 4)))},
        ),
        (
            ValueError,
            r"^backend must be 'auto', a Backend or one of \[.*'reference'.*\]; got 'fast'$",
            {"backend": "fast"},
        ),
    ],
    ids=[
        "input_size",
        "rank",
        "int_xs",
        "list_xs",
        "length_above_T",
        "length_below_0",
        "length_shape",
        "float_length",
        "state_structure",
        "state_tuple",
        "state_shape",
        "state_dtype",
        "backend",
    ],
)
def test_bad_arguments_are_named_in_words(error_type, pattern, kwargs):
    kwargs = {"xs": XS, **kwargs}
    xs = kwargs.pop("xs")
    raises_in_words(error_type, pattern, lambda: rj.scan(LSTM, LSTM_PARAMS, xs, **kwargs))


def test_errors_come_at_trace_time_under_jit():
    raises_in_words(
        ValueError,
        r"^xs must have 3 features",
        lambda: jax.jit(lambda xs: rj.scan(LSTM, LSTM_PARAMS, xs))(jnp.ones((5, 2, 2))),
    )
    length = jnp.array([9, 1])  # concrete, closed over
    raises_in_words(
        ValueError,
        r"^length must lie in \[0, 5\]",
        lambda: jax.jit(lambda xs: rj.scan(LSTM, LSTM_PARAMS, xs, length=length))(XS),
    )


def test_a_non_cell_is_named():
    raises_in_words(
        TypeError,
        r"^cell must be an rnn_jax Cell \(e\.g\. rj\.lstm\(64\)\); got function$",
        lambda: rj.scan(lambda p, c, x: (c, x), LSTM_PARAMS, XS),
    )
