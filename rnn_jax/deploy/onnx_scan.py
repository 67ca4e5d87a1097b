"""``rnn_scan`` for jax2onnx: the reference loop over ``cell.step``, an ONNX ``Loop``.

jax2onnx converts a jaxpr primitive by primitive through its plugin registry;
``rnn_scan`` is not a JAX primitive it knows, so this module registers one
(`RnnScanPlugin`). It lowers the scan's *reference* program, ``lax.scan`` over
the cell's step with the valid-step mask and restarts of `rnn_jax.backends.masking`,
which every backend equals: one ``Loop`` whose body is one step, whatever ``T``.
jax2onnx has no reversed ``scan``; a reversed one becomes the forward scan of
the inputs flipped in time, its outputs flipped back (`forward_scans`), which is
the same computation step for step.

Importing this module imports jax2onnx.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax2onnx.converter.lowering_dispatch import lower_jaxpr_with_plugins
from jax2onnx.plugins.plugin_system import (
    PLUGIN_REGISTRY,
    PrimitiveLeafPlugin,
    register_primitive,
)


def forward_scans(jaxpr: Any, consts: list[Any], args: list[Any]) -> list[Any]:
    """Evaluates ``jaxpr`` as ``jax.core.eval_jaxpr`` does, each reversed ``scan`` in it (at
    any depth of scans) run forwards over its inputs flipped in time."""
    env: dict[Any, Any] = {}

    def read(var):
        return var.val if isinstance(var, jax.extend.core.Literal) else env[var]

    env.update(zip(jaxpr.constvars, consts, strict=True))
    env.update(zip(jaxpr.invars, args, strict=True))
    for eqn in jaxpr.eqns:
        values = [read(v) for v in eqn.invars]
        if eqn.primitive.name == "scan":
            outs = scan_forwards(eqn.params, values)
        else:
            outs = eqn.primitive.bind(*values, **eqn.primitive.get_bind_params(eqn.params))
            outs = outs if eqn.primitive.multiple_results else [outs]
        env.update(zip(eqn.outvars, outs, strict=True))
    return [read(v) for v in jaxpr.outvars]


def scan_forwards(params: dict[str, Any], values: list[Any]) -> list[Any]:
    """The outputs of the ``scan`` equation with ``params`` on ``values``, run forwards."""
    consts = values[: params["num_consts"]]
    carry = values[params["num_consts"] : params["num_consts"] + params["num_carry"]]
    xs = values[params["num_consts"] + params["num_carry"] :]
    body, reverse = params["jaxpr"], params["reverse"]

    def flip(arrays):
        return [jnp.flip(x, 0) for x in arrays] if reverse else list(arrays)

    def step(carry, x):
        outs = forward_scans(body.jaxpr, body.consts, [*consts, *carry, *x])
        return outs[: len(carry)], outs[len(carry) :]

    # lax.scan takes no symbolic length; the inputs carry it where there are any
    length = None if xs else params["length"]
    carry, ys = jax.lax.scan(step, carry, flip(xs), length=length)
    return [*carry, *flip(ys)]


@register_primitive(
    jaxpr_primitive="rnn_scan",
    jax_doc="rnn_jax.scan: the reference loop over cell.step",
    onnx=[{"component": "Loop", "doc": "https://onnx.ai/onnx/operators/onnx__Loop.html"}],
    since="rnn_jax 0.1.0",
    context="primitives.rnn_jax",
    component="rnn_scan",
)
class RnnScanPlugin(PrimitiveLeafPlugin):
    """Inlines the reference program of an ``rnn_scan`` equation, reversed scans made forward."""

    def lower(self, ctx: Any, eqn: Any) -> None:
        oracle = eqn.params["oracle"]  # the reference program, read from the scan's operands
        specs = [jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype) for v in eqn.invars]
        traced = jax.make_jaxpr(lambda *operands: oracle(operands))(*specs)
        closed = jax.make_jaxpr(
            lambda *operands: forward_scans(traced.jaxpr, traced.consts, list(operands))
        )(*specs)
        inner = closed.jaxpr
        for var, value in zip(inner.constvars, closed.consts, strict=True):
            ctx.bind_const_for_var(var, np.asarray(value))
        for outer, var in zip(eqn.invars, inner.invars, strict=True):
            ctx.bind_value_for_var(var, ctx.get_value_for_var(outer))
        lower_jaxpr_with_plugins(ctx=ctx, jaxpr=inner, registry=PLUGIN_REGISTRY, source="rnn_scan")
        for outer, var in zip(eqn.outvars, inner.outvars, strict=True):
            ctx.bind_value_for_var(outer, ctx.get_value_for_var(var))
