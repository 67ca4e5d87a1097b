"""The ``rnn_scan`` primitive: a whole scan as one operation that JAX's transformations see.

``rj.scan`` binds one ``rnn_scan`` per call. Its rules make the kernel behind
it compose with every transformation:

- ``jit`` / lowering: the backend's program, traced when the scan is called
  (closed-over values of the cell, such as a dropout mask, become operands).
- ``vmap``: the mapped axis is folded into the batch axis before the backend
  is chosen, so ``jax.vmap`` over sequences runs the batched kernel with the
  settings tuned for the real batch (and ``auto`` sees it). Where that cannot
  be exact (the parameters or the cell's closed-over values are mapped too)
  the program is batched by JAX's own rules.
- reverse mode: the backend's program under ``jax.vjp`` (its custom backward
  pass, if it has one) stored as residuals of a linear ``rnn_scan_tangent``
  whose transpose is that pullback. Where the cell closes over a value being
  differentiated, the reference loop is differentiated instead (a custom
  backward pass knows only its explicit inputs).
- forward mode (``jax.jvp``, ``jax.jacfwd``): ``rnn_scan_tangent`` evaluated
  forwards is the JVP of the plain ``lax.scan`` reference, which every
  backend equals, so forward mode works whatever the backend.

Derivatives of order two: where the scan's operands are themselves being
differentiated when its derivative is formed (``jax.hessian``, ``jax.grad`` of
``jax.grad``), the reference loop is differentiated, to any order. Where a
``jit`` lies between the two derivatives, the backend's backward pass is
differentiated: ``sequential``'s and ``checkpointed``'s can be, the ``onednn``
kernels refuse in words (use ``backend="reference"`` there).

JAX names used: the primitives are ``jax.extend.core.Primitive``; their rules
go into the registries of ``jax.interpreters.ad``, ``batching`` and ``mlir``
(``primitive_jvps``, ``primitive_transposes``, ``primitive_batchers``,
``register_lowering``, ``lower_fun``, ``Zero``), and jaxprs are evaluated with
``jax.core.eval_jaxpr`` (``ShapedArray``, ``Tracer`` likewise): public
spellings in JAX 0.10 and 0.11 that ``jax.extend`` has no counterpart for.
``tests/backends/test_deprecations.py`` fails when JAX warns of anything we use.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import jax
import jax.extend as jex
import jax.numpy as jnp
from jax.interpreters import ad, batching, mlir

scan_p = jex.core.Primitive("rnn_scan")
scan_p.multiple_results = True
tangent_p = jex.core.Primitive("rnn_scan_tangent")
tangent_p.multiple_results = True


class Program:
    """A function traced once to a jaxpr, its closed-over tracers read from operands.

    ``fun(*args)`` is traced for ``args``; every value it closed over that is
    a tracer (of the caller's ``jit``, ``grad`` or ``vmap``) becomes an extra
    operand: ``slots`` pairs each such constant with its operand index in
    ``operands``, the list the primitive is bound with (``args``, then the
    hoisted values of every program that shares them). Hashed by identity.
    """

    def __init__(self, fun: Callable, args: Sequence[Any], operands: list[Any]):
        closed = jax.make_jaxpr(fun)(*args)
        self.jaxpr = closed.jaxpr
        self.out_avals = tuple(closed.out_avals)
        self.consts = list(closed.consts)
        self.slots = []
        for index, const in enumerate(closed.consts):
            if isinstance(const, jax.core.Tracer):
                found = next((i for i, x in enumerate(operands) if x is const), None)
                if found is None:
                    operands.append(const)
                    found = len(operands) - 1
                self.slots.append((index, found))
                self.consts[index] = None
        self.arity = len(args)

    @property
    def closes_over_tracers(self) -> bool:
        return bool(self.slots)

    def __call__(self, operands: Sequence[Any]) -> list[Any]:
        consts = list(self.consts)
        for index, operand in self.slots:
            consts[index] = operands[operand]
        return jax.core.eval_jaxpr(self.jaxpr, consts, *operands[: self.arity])


def bind(
    make: Callable[..., tuple[Callable, Callable]],
    args: Sequence[Any],
    batch_in: tuple[int | None, ...],
    batch_out: tuple[int, ...],
) -> list[Any]:
    """Binds ``rnn_scan`` for ``args``; returns its flat outputs.

    ``make(gradient=...) -> (solve, reference)``: the backend's function and
    the reference one, both ``(*args) -> flat outputs``, closing over nothing
    traced of their own (so they can be traced again: for folded shapes, and
    with ``gradient=True`` for the settings tuned for training). ``batch_in`` is each
    argument's batch axis (None: shared by every sequence, e.g. a parameter),
    ``batch_out`` each output's; ``vmap`` folds its axis into these.
    """
    solve, reference = make(gradient=False)
    operands = list(args)
    program = Program(solve, args, operands)
    oracle = Program(reference, args, operands)
    return scan_p.bind(
        *operands,
        program=program,
        oracle=oracle,
        make=make,
        batch_in=batch_in,
        batch_out=batch_out,
        # The backend's jaxpr as a parameter, where jit looks for the meshes a computation
        # runs on (a shard_map inside the sharded backend); hidden in ``program`` alone, the
        # computation would be compiled for one device.
        jaxpr=program.jaxpr,
    )


def _eager(primitive, *operands, **params):
    return jax.jit(partial(primitive.bind, **params))(*operands)


def _shaped(avals):
    return [jax.core.ShapedArray(a.shape, a.dtype) for a in avals]


# ----------------------------------------------------------------------------- rnn_scan


def _scan_abstract(*operands, program, **_):
    return _shaped(program.out_avals)


def _scan_lowering(*operands, program, **_):
    return program(operands)


def _fold(x, dim: int | None, axis: int, size: int):
    """``x`` with the mapped axis ``dim`` merged into its batch axis ``axis`` (mapped first)."""
    if dim is None:
        x = jnp.expand_dims(x, axis)
        x = jnp.broadcast_to(x, x.shape[:axis] + (size,) + x.shape[axis + 1 :])
    else:
        x = jnp.moveaxis(x, dim, axis)
    # sizes spelled out: a mapped axis or batch of size 0 leaves nothing to infer -1 from
    folded = x.shape[axis] * x.shape[axis + 1]
    return x.reshape(x.shape[:axis] + (folded,) + x.shape[axis + 2 :])


def _unfold(y, axis: int, size: int, batch: int):
    return y.reshape(y.shape[:axis] + (size, batch) + y.shape[axis + 1 :])


def _batch(operands, dims, batch_in) -> int:
    """The batch size of one mapped element (every scan has ``xs``, whose axis 1 it is)."""
    return next(
        [n for i, n in enumerate(x.shape) if i != dim][axis]
        for x, dim, axis in zip(operands, dims, batch_in, strict=True)
        if axis is not None
    )


def _scan_batching(operands, dims, *, program, oracle, make, batch_in, batch_out, jaxpr):
    del jaxpr  # program's own
    size = next(x.shape[d] for x, d in zip(operands, dims, strict=True) if d is not None)
    arity = program.arity
    shared_mapped = any(
        d is not None and axis is None for d, axis in zip(dims[:arity], batch_in, strict=True)
    )
    if shared_mapped or program.closes_over_tracers or oracle.closes_over_tracers:
        # Parameters (or closed-over values) differ per mapped element: one batch cannot
        # share them, so JAX batches the traced program itself.
        outs = jax.vmap(lambda *ops: program(ops), in_axes=dims)(*operands)
        return outs, [0] * len(outs)
    folded = [
        x if axis is None else _fold(x, d, axis, size)
        for x, d, axis in zip(operands[:arity], dims[:arity], batch_in, strict=True)
    ]
    outs = bind(make, folded, batch_in, batch_out)
    batch = _batch(operands[:arity], dims[:arity], batch_in)
    unfolded = [_unfold(y, axis, size, batch) for y, axis in zip(outs, batch_out, strict=True)]
    return unfolded, list(batch_out)


# The tracers of forward mode and of linearisation (what jax.grad runs); JAX exports the
# first only (jax.interpreters.ad.JVPTracer), so both are known by their class names.
DIFFERENTIATING_TRACERS = ("JVPTracer", "LinearizeTracer")


def differentiated_outside(values) -> bool:
    """Whether a differentiation outside this one traces any of ``values``."""
    return any(
        isinstance(v, jax.core.Tracer) and type(v).__name__ in DIFFERENTIATING_TRACERS
        for v in values
    )


def _scan_jvp(primals, tangents, *, program, oracle, make, batch_in, batch_out, jaxpr):
    del jaxpr  # program's own
    moving = tuple(type(t) is not ad.Zero for t in tangents)
    # A backend's custom backward pass differentiates with respect to its explicit inputs;
    # where the cell closes over a value being differentiated (say, an encoder's memory),
    # the reference loop, which JAX differentiates whole, gives those gradients too. So it
    # does where this derivative will be differentiated again (a backward pass may have no
    # derivative of its own: an FFI kernel's has none).
    if any(moving[program.arity :]) or differentiated_outside(primals):
        chosen = oracle
    elif program.closes_over_tracers:
        chosen = program  # traced once, with the closure; never traced again
    else:  # the backend's program with the settings tuned for training
        chosen = Program(make(gradient=True)[0], primals, list(primals))

    def differentiable(*values):
        it = iter(values)
        full = [next(it) if m else p for p, m in zip(primals, moving, strict=True)]
        return chosen(full)

    outs, pullback = jax.vjp(
        differentiable, *[p for p, m in zip(primals, moving, strict=True) if m]
    )
    residuals, residual_tree = jax.tree.flatten(pullback)
    tangents_out = tangent_p.bind(
        *residuals,
        *primals,
        *[t for t in tangents if type(t) is not ad.Zero],
        oracle=oracle,
        residual_tree=residual_tree,
        residual_count=len(residuals),
        moving=moving,
        out_avals=tuple(_shaped(program.out_avals)),
    )
    return outs, tangents_out


scan_p.def_impl(partial(_eager, scan_p))
scan_p.def_abstract_eval(_scan_abstract)
mlir.register_lowering(scan_p, mlir.lower_fun(_scan_lowering, multiple_results=True))
batching.primitive_batchers[scan_p] = _scan_batching
ad.primitive_jvps[scan_p] = _scan_jvp


# ----------------------------------------------------------------------------- rnn_scan_tangent
# Operands: the pullback's residuals, the scan's operands, the tangents of the moving ones.


def _split(operands, residual_count, moving):
    residuals = operands[:residual_count]
    primals = operands[residual_count : residual_count + len(moving)]
    tangents = operands[residual_count + len(moving) :]
    return residuals, primals, tangents


def _tangent_forward(*operands, oracle, residual_tree, residual_count, moving, out_avals):
    """Forward mode: the JVP of the reference, which every backend equals."""
    del residual_tree, out_avals
    _, primals, tangents = _split(operands, residual_count, moving)

    def reference(*values):
        it = iter(values)
        return oracle([next(it) if m else p for p, m in zip(primals, moving, strict=True)])

    moving_primals = [p for p, m in zip(primals, moving, strict=True) if m]
    return jax.jvp(reference, tuple(moving_primals), tuple(tangents))[1]


def _tangent_abstract(*operands, out_avals, **_):
    return list(out_avals)


def _tangent_transpose(
    cotangents, *operands, oracle, residual_tree, residual_count, moving, out_avals
):
    del oracle
    residuals = operands[:residual_count]
    pullback = jax.tree.unflatten(residual_tree, residuals)
    cotangents = [
        jnp.zeros(a.shape, a.dtype) if type(c) is ad.Zero else c
        for c, a in zip(cotangents, out_avals, strict=True)
    ]
    grads = pullback(cotangents)
    return [None] * (residual_count + len(moving)) + list(grads)


def _tangent_batching(operands, dims, **params):
    outs = jax.vmap(partial(_tangent_forward, **params), in_axes=dims)(*operands)
    return outs, [0] * len(outs)


tangent_p.def_impl(partial(_eager, tangent_p))
tangent_p.def_abstract_eval(_tangent_abstract)
mlir.register_lowering(tangent_p, mlir.lower_fun(_tangent_forward, multiple_results=True))
batching.primitive_batchers[tangent_p] = _tangent_batching
ad.primitive_transposes[tangent_p] = _tangent_transpose
