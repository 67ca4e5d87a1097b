"""Helpers the scan tests share: both directions of a scan, a loss over them, and the
question whether a backend supports a case.

On ``sys.path`` through ``pythonpath = ["tests"]`` in pyproject.toml.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_jax as rj
from rnn_jax import _driver
from rnn_jax.backends.problem import describe


def problem_of(cell, params, xs, **kwargs):
    """The `Problem` ``rj.scan`` makes of these arguments, as shapes."""
    return describe(cell, params, xs, **kwargs)


def refusal(backend, cell, params, xs, **kwargs) -> str | None:
    """The reason ``backend`` (a name or a Backend) gives for not running this case, or None
    (``kwargs`` as `problem_of` takes them)."""
    problem = problem_of(cell, params, xs, **kwargs)
    chosen = _driver.resolve(backend)
    if chosen == "auto":
        return None
    return rj.backends.contract.refusal(chosen, cell, problem)


def inner_jaxprs(eqn):
    """The jaxprs inside a jaxpr equation: those in its params (for ``rnn_scan``, the
    primitive ``rj.scan`` binds, the backend's program)."""
    yield from jax.extend.core.jaxprs_in_params(eqn.params)


def skip_unless_supported(backend, cell, params, xs, **kwargs) -> None:
    """Skips the calling test when ``backend`` says it cannot run this case."""
    reason = refusal(backend, cell, params, xs, **kwargs)
    if reason is not None:
        pytest.skip(reason)


def both_directions(cell, params, xs, h0, length, backend) -> dict[bool, tuple[Any, jax.Array]]:
    """``{reverse: (final, ys)}`` of ``rj.scan`` forwards and reversed."""
    return {
        reverse: rj.scan(
            cell, params, xs, initial_state=h0, length=length, reverse=reverse, backend=backend
        )
        for reverse in (False, True)
    }


def value_and_grads_both_ways(
    cell, backend, params, xs, h0, length, final_loss: Callable[[Any], jax.Array]
):
    """``((loss, runs), grads)``: a loss of both directions' outputs and final carries, and its
    gradients with respect to ``params``, ``xs`` and ``h0``.

    Each output is weighted by ``cos`` of its flat index (shifted per direction), so no two
    steps or units weigh alike; ``final_loss(final)`` adds the final carry's part.
    """

    def loss(params, xs, h0):
        runs = both_directions(cell, params, xs, h0, length, backend)
        total = 0.0
        for reverse, (final, ys) in runs.items():
            weights = jnp.cos(jnp.arange(ys.size, dtype=ys.dtype) + reverse).reshape(ys.shape)
            total += jnp.sum(ys * weights) + final_loss(final)
        return total, runs

    return jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(params, xs, h0)


def value_and_grads(cell, backend, params, xs, h0, **kwargs):
    """``((loss, (final, ys)), grads)`` of one jitted ``rj.scan`` (``kwargs``: ``length``,
    ``reverse``, ``resets``, ``mask``), the gradients with respect to ``params``, ``xs`` and
    ``h0``.

    The loss weighs each output by ``cos`` of its flat index and adds ``sin`` of every final
    carry leaf, so the gradients depend on every output and on the whole carry.
    """

    def loss(params, xs, h0):
        final, ys = rj.scan(cell, params, xs, initial_state=h0, backend=backend, **kwargs)
        weights = jnp.cos(jnp.arange(ys.size, dtype=ys.dtype)).reshape(ys.shape)
        total = jnp.sum(ys * weights) + sum(jnp.sum(jnp.sin(c)) for c in jax.tree.leaves(final))
        return total, (final, ys)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(params, xs, h0)


def random_case(cell, steps: int, batch: int, features: int, seed: int = 0):
    """``(params, xs [steps, batch, features], carry)`` drawn at random (scale 0.5; complex
    leaves get an imaginary part too), so every parameter and every carry leaf matters."""
    rng = np.random.default_rng(seed)

    def random(s):
        value = rng.standard_normal(s.shape)
        if jnp.issubdtype(s.dtype, jnp.complexfloating):
            value = value + 1j * rng.standard_normal(s.shape)
        return jnp.asarray(0.5 * value, s.dtype)

    shapes = jax.eval_shape(partial(cell.init, input_size=features), jax.random.key(0))
    params = jax.tree.map(random, shapes)
    carry = jax.eval_shape(lambda p: cell.initial_state(p, (batch,)), params)
    xs = jnp.asarray(rng.standard_normal((steps, batch, features)), jnp.float32)
    return params, xs, jax.tree.map(random, carry)
