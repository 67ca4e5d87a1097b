"""Un-jitted calls compile once: a second identical eager ``rj.scan`` (or ``layer.apply``, or
a model's) traces and compiles nothing, counted by JAX's own compilation events."""

from __future__ import annotations

import collections
import contextlib

import chex
import jax
import jax.numpy as jnp
import pytest

import rnn_jax as rj
from rnn_jax import _driver

TRACE = "/jax/core/compile/jaxpr_trace_duration"
COMPILE = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def compilations():
    """Counts JAX's trace and compile events in the block: ``{event: count}``."""
    events = collections.Counter()

    def listen(event, duration, **kwargs):
        del duration, kwargs
        events[event] += 1

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        yield events
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)


CELL = rj.gru(8)
PARAMS = CELL.init(jax.random.key(0), 4)
XS = jax.random.normal(jax.random.key(1), (6, 3, 4))


def test_a_second_identical_eager_call_compiles_nothing():
    length = jnp.array([6, 2, 0])
    first = rj.scan(CELL, PARAMS, XS, length=length, reverse=True)
    with compilations() as events:
        again = rj.scan(CELL, PARAMS, XS, length=length, reverse=True)
    assert events[TRACE] == 0 and events[COMPILE] == 0, events
    chex.assert_trees_all_equal(again, first)
    jitted = jax.jit(lambda p, x, n: rj.scan(CELL, p, x, length=n, reverse=True))
    chex.assert_trees_all_equal(again, jitted(PARAMS, XS, length))


def test_new_shapes_and_settings_compile_once_each():
    shorter, batch_major = XS[:4], jnp.swapaxes(XS, 0, 1)
    runs = [
        lambda: rj.scan(CELL, PARAMS, shorter),
        lambda: rj.scan(CELL, PARAMS, XS, backend=rj.backends.Sequential(chunk=2)),
        lambda: rj.scan(CELL, PARAMS, batch_major, time_major=False),
    ]
    for run in runs:
        with compilations() as first:
            run()
        with compilations() as second:
            run()
        assert first[COMPILE] >= 1 and second[COMPILE] == 0 and second[TRACE] == 0


def test_eager_layer_and_model_calls_compile_once():
    layer = rj.bidirectional(CELL)
    model = rj.models.classifier(CELL, 3, input_size=4)
    layer_params, model_params = layer.init(jax.random.key(2), 4), model.init(jax.random.key(3))
    length = jnp.array([6, 1, 3])
    for _ in range(2):
        with compilations() as events:
            layer.apply(layer_params, XS, length=length)
            model.apply(model_params, XS, length=length)
    assert events[COMPILE] == 0, events


def test_lengths_are_checked_on_every_eager_call():
    rj.scan(CELL, PARAMS, XS, length=jnp.array([6, 6, 6]))
    with pytest.raises(ValueError, match=r"length must lie in \[0, 6\]"):
        rj.scan(CELL, PARAMS, XS, length=jnp.array([6, 7, 6]))


def test_a_cell_that_cannot_be_hashed_is_traced_on_every_call():
    cell = CELL._replace(config={"hidden_size": 8})  # a dict: unhashable
    with pytest.raises(TypeError):
        hash(cell)
    got = rj.scan(cell, PARAMS, XS)
    with compilations() as events:
        rj.scan(cell, PARAMS, XS)
    assert events[TRACE] > 0
    chex.assert_trees_all_equal(got, rj.scan(CELL, PARAMS, XS))


def test_only_untraced_calls_with_arrays_take_the_compiled_path():
    settings = _driver.Settings(CELL, "auto", False, None, None, True)
    operands = _driver.Operands(PARAMS, XS, None, None, None, None)
    assert _driver.compiles_once(settings, operands)
    assert not _driver.compiles_once(settings, operands._replace(length=[6, 6, 6]))
    seen = []

    def note(x):
        seen.append(_driver.compiles_once(settings, operands))
        return x

    jax.jit(note)(1.0)
    jax.vmap(note)(jnp.zeros(2))
    jax.grad(note)(1.0)
    assert seen == [False, False, False]
