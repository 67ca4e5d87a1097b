"""``rj.explain_auto``: what ``backend="auto"`` would run for a scan, and why."""

from __future__ import annotations

from typing import Any

import jax

from rnn_jax._driver import check_cell, checked
from rnn_jax.backends import auto
from rnn_jax.backends.problem import Operands, make_problem


def explain_auto(
    cell,
    params: Any,
    xs: Any,
    *,
    initial_state: Any = None,
    length: Any = None,
    mask: Any = None,
    resets: Any = None,
    reverse: bool = False,
    time_major: bool = True,
    gradient: bool = True,
    budget: auto.Budget | None = None,
) -> auto.Choice:
    """The backend ``rj.scan(..., backend="auto")`` runs for these arguments, with the
    medians, memory estimates and budget behind the choice (`rnn_jax.backends.auto.Choice`).

    The arguments are ``rj.scan``'s (arrays or ``jax.ShapeDtypeStruct``\\ s: only shapes and
    dtypes count, nothing is computed); ``gradient``: whether a backward pass follows
    (training), which the choice depends on. ``budget`` overrides the memory budget
    (`rnn_jax.backends.auto.memory_budget`).

    Example:
        >>> cell = rj.lstm(64)
        >>> params = cell.init(jax.random.key(0), 32)
        >>> xs = jax.ShapeDtypeStruct((100_000, 8, 32), jnp.float32)
        >>> choice = rj.explain_auto(cell, params, xs)
        >>> choice.backend.name in rj.backend_names()
        True
        >>> print(choice)  # doctest: +SKIP
    """
    cell = check_cell(cell)
    found = []

    def look(params, xs, initial_state, length, mask, resets):
        operands = Operands(params, xs, initial_state, length, mask, resets)
        flat = checked(cell, operands, time_major).flat
        problem = make_problem(cell, flat, reverse=reverse, unroll=None, gradient=gradient)
        found.append(auto.explain(cell, problem, budget=budget))

    jax.eval_shape(look, params, xs, initial_state, length, mask, resets)
    return found[0]
