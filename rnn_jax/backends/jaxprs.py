"""What a cell's functions read and return, decided from their jaxprs (shapes only, no run).

Kernels use these facts to skip work: parameters a function never reads get
no gradient, a ``combine`` that reads only ``xp + hu`` shares one cotangent
for both, and carry leaves that *are* the step's output need not be stored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.extend.core import Literal


class Reads(NamedTuple):
    """The inexact leaves of a pytree that a function reads, and how to put them back.

    ``leaves``: those leaves; ``rebuild(replacements)``: the pytree with the
    read leaves replaced (by traced values, say) and the others as they were.
    """

    leaves: list
    rebuild: Callable[[list], Any]


def _read_vars(jaxpr) -> set[int]:
    read = {id(v) for eqn in jaxpr.eqns for v in eqn.invars if not isinstance(v, Literal)}
    return read | {id(v) for v in jaxpr.outvars if not isinstance(v, Literal)}


def leaves_read(fn: Callable, tree: Any, *args: Any) -> tuple[bool, ...]:
    """Per leaf of ``tree``: whether ``fn(tree, *args)`` reads it (``args``: arrays or shape
    structs).

    Example:
        >>> leaves_read(lambda p, x: x * p["a"], {"a": 2.0, "b": 3.0}, 1.0)
        (True, False)
    """
    leaves, treedef = jax.tree.flatten(tree)
    jaxpr = jax.make_jaxpr(lambda ls, *a: fn(treedef.unflatten(ls), *a))(leaves, *args).jaxpr
    read = _read_vars(jaxpr)
    return tuple(id(var) in read for var in jaxpr.invars[: len(leaves)])


def parameters_read(fn: Callable, params: Any, *args: Any) -> Reads:
    """The inexact leaves of ``params`` that ``fn(params, *args)`` reads.

    Example:
        >>> reads = parameters_read(lambda p, x: x * p["a"], {"a": 2.0, "b": 3.0}, 1.0)
        >>> reads.leaves
        [2.0]
    """
    leaves, treedef = jax.tree.flatten(params)
    read = leaves_read(fn, params, *args)
    picked = [
        i
        for i, (leaf, is_read) in enumerate(zip(leaves, read, strict=True))
        if is_read and jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)
    ]

    def rebuild(replacements):
        full = list(leaves)
        for i, leaf in zip(picked, replacements, strict=True):
            full[i] = leaf
        return treedef.unflatten(full)

    return Reads([leaves[i] for i in picked], rebuild)


def reads_only_sum(combine: Callable, params, carry, xp, hu) -> bool:
    """True when ``combine(params, carry, xp, hu)`` reads ``xp`` and ``hu`` only as ``xp + hu``.

    The arguments are arrays or shape structs. Decided from the jaxpr: one
    ``add`` of the two, and no other use of either.
    """
    if not (isinstance(xp, jax.ShapeDtypeStruct) and isinstance(hu, jax.ShapeDtypeStruct)):
        return False
    if (xp.shape, xp.dtype) != (hu.shape, hu.dtype):
        return False
    jaxpr = jax.make_jaxpr(combine)(params, carry, xp, hu).jaxpr
    pair = {id(jaxpr.invars[-2]), id(jaxpr.invars[-1])}
    readers = [eqn for eqn in jaxpr.eqns if {id(v) for v in eqn.invars} & pair]
    returned = {id(v) for v in jaxpr.outvars} & pair
    return (
        len(readers) == 1
        and readers[0].primitive.name == "add"
        and {id(v) for v in readers[0].invars} == pair
        and not returned
    )


def outputs_fed_back(step: Callable, *args: Any) -> tuple[bool, ...]:
    """Per leaf of the new carry of ``step(*args) -> (carry, y)``: whether it is ``y`` itself.

    Such a leaf (an LSTM's or GRU's ``h``) need not be stored for a backward
    pass: the outputs hold it. Decided from the jaxpr (the same variable).
    """
    closed = jax.make_jaxpr(step)(*args)
    carry_shape = jax.eval_shape(lambda *a: step(*a)[0], *args)
    count = len(jax.tree.leaves(carry_shape))
    outvars = closed.jaxpr.outvars
    carry_vars, y_vars = outvars[:count], outvars[count:]
    if len(y_vars) != 1:
        return (False,) * count
    return tuple(v is y_vars[0] and not isinstance(v, Literal) for v in carry_vars)
