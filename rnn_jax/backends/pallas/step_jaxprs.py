"""One head's step of a cell with `Gates`, traced once as the jaxprs the fused kernel runs.

The kernel evaluates these on lane tiles (`rnn_jax.backends.pallas.lanes`)
for one batch tile of rows, so they are traced for a symbolic number of rows
(`lanes.ROWS`, which marks the batch axis):

- ``fed_back``: carry leaves -> ``fed [ROWS, R]``, the state that
  multiplies the recurrent block;
- ``combine``: used parameters, carry, projected input, ``hu [ROWS, G*H]``
  -> new carry leaves, output leaves;
- ``combine_vjp``: the same arguments and the cotangents of the new carry
  and the outputs -> cotangents of the used parameters (summed over the
  rows), the carry, the projected input and ``hu``;
- ``fed_back_vjp``: carry, ``d fed`` -> the carry's cotangent.

Parameters ``combine`` never reads are left out (they get no gradient);
the kernel receives only the ``used`` leaves.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.extend.core as jex
import jax.numpy as jnp

from rnn_jax.backends.jaxprs import leaves_read
from rnn_jax.backends.pallas.lanes import ROWS, feature_sizes
from rnn_jax.cells.capabilities import Gates


class Leaf(NamedTuple):
    """One array of a pytree, as the kernel sees it: its shape after the leading axes."""

    tail: tuple[int, ...]
    dtype: Any


def _leaves(tree, lead: int) -> tuple[Leaf, ...]:
    return tuple(Leaf(tuple(x.shape[lead:]), jnp.dtype(x.dtype)) for x in jax.tree.leaves(tree))


class StepJaxprs(NamedTuple):
    fed_back: jex.ClosedJaxpr
    combine: jex.ClosedJaxpr
    combine_vjp: jex.ClosedJaxpr
    fed_back_vjp: jex.ClosedJaxpr
    used: tuple[bool, ...]  # per head-parameter leaf: read by combine
    params: tuple[Leaf, ...]  # the used leaves, per head
    carry: tuple[Leaf, ...]
    xp: tuple[Leaf, ...]
    y: tuple[Leaf, ...]
    weights: Leaf  # the recurrent block [R, G*H]
    carry_tree: Any
    y_tree: Any

    def feature_sizes(self) -> list[int]:
        """Every feature size the step's arrays have (what the lane tiles must divide)."""
        jaxprs = (self.fed_back, self.combine, self.combine_vjp, self.fed_back_vjp)
        return feature_sizes(*jaxprs) + list(self.weights.tail)


def _rows(leaf: Leaf) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct((ROWS, *leaf.tail), leaf.dtype)


def trace_step(gates: Gates, weights, head_params, xp, carry) -> StepJaxprs:
    """The jaxprs of one head's step.

    ``weights [NH, R, G*H]``, ``head_params`` leaves ``[NH, ...]``, ``xp``
    leaves ``[NH, T, B, ...]``, ``carry`` leaves ``[NH, B, ...]`` (arrays or
    shape structs; only shapes and dtypes are read).
    """
    hp_leaves, hp_tree = jax.tree.flatten(head_params)
    carry_tree, xp_tree = jax.tree.structure(carry), jax.tree.structure(xp)
    carry_leaves, xp_leaves = _leaves(carry, 2), _leaves(xp, 3)
    rows = lambda leaves, tree: tree.unflatten([_rows(x) for x in leaves])  # noqa: E731
    one_head = [jax.ShapeDtypeStruct(x.shape[1:], x.dtype) for x in hp_leaves]
    carry_rows, xp_rows = rows(carry_leaves, carry_tree), rows(xp_leaves, xp_tree)
    w = jax.ShapeDtypeStruct(weights.shape[1:], weights.dtype)
    fed = jax.eval_shape(gates.fed_back, carry_rows)
    hu = jax.ShapeDtypeStruct((ROWS, w.shape[1]), jnp.float32)
    if fed.shape != (ROWS, w.shape[0]):
        raise ValueError(f"fed_back must return [batch, {w.shape[0]}]; got {fed.shape[1:]}")
    used = leaves_read(
        lambda p, *a: gates.combine(hp_tree.unflatten(p), *a), one_head, carry_rows, xp_rows, hu
    )
    used_specs = [s for s, u in zip(one_head, used, strict=True) if u]

    def with_unused(used_values):
        # Leaves combine never reads: scalars, so no array enters the kernel for them.
        values = iter(used_values)
        leaves = [
            next(values) if u else jnp.zeros((), s.dtype)
            for s, u in zip(one_head, used, strict=True)
        ]
        return hp_tree.unflatten(leaves)

    def combine(params, carry, xp, hu):
        return gates.combine(with_unused(params), carry, xp, hu)

    def combine_vjp(params, carry, xp, hu, d_carry, d_y):
        _, vjp = jax.vjp(combine, params, carry, xp, hu)
        return vjp((d_carry, d_y))

    def fed_back_vjp(carry, d_fed):
        return jax.vjp(gates.fed_back, carry)[1](d_fed)[0]

    new_carry, y = jax.eval_shape(combine, used_specs, carry_rows, xp_rows, hu)
    if jax.tree.structure(new_carry) != carry_tree:
        raise ValueError(
            f"combine must return a carry of the structure {carry_tree}; "
            f"got {jax.tree.structure(new_carry)}"
        )
    return StepJaxprs(
        fed_back=jax.make_jaxpr(gates.fed_back)(carry_rows),
        combine=jax.make_jaxpr(combine)(used_specs, carry_rows, xp_rows, hu),
        combine_vjp=jax.make_jaxpr(combine_vjp)(used_specs, carry_rows, xp_rows, hu, new_carry, y),
        fed_back_vjp=jax.make_jaxpr(fed_back_vjp)(carry_rows, fed),
        used=used,
        params=tuple(Leaf(s.shape, jnp.dtype(s.dtype)) for s in used_specs),
        carry=carry_leaves,
        xp=xp_leaves,
        y=_leaves(y, 1),
        weights=Leaf(tuple(w.shape), jnp.dtype(w.dtype)),
        carry_tree=carry_tree,
        y_tree=jax.tree.structure(y),
    )
