"""The ``sequential`` backend: a tuned ``lax.scan`` with a custom backward pass.

For a cell with `Gates` (``simple``, ``lstm``, ``gru``), time is cut into
chunks of ``chunk`` steps (``chunk = T``: one chunk):

- the carry-free input projection is one ``[chunk * batch, F] @ [F, G*H]``
  matmul per chunk (``cell.project``), outside the step loop, which keeps only
  the one fused recurrent matmul ``fed_back(carry) @ kernel`` and ``combine``;
- the ``custom_vjp`` runs the reverse sweep with one ``[batch, G*H] @ [G*H, R]``
  matmul per step, and forms the weight gradients after the sweep over each
  chunk as matmuls over all its ``chunk * batch`` rows: the recurrent kernel's
  as ``fed_back(carries)^T @ d(pre-activations)``, the input kernel's (and
  the inputs') through the VJP of ``project``. Autodiff of the loop would form
  ``T`` small outer products instead;
- ``combine``'s own parameters (biases after the matmul, peepholes, layer
  norms, projections) accumulate in the reverse sweep; parameters that
  ``project`` or ``combine`` do not read (found from their jaxprs) are skipped;
- what the forward pass keeps for the backward one (``residuals``):
  ``"store"``, ``combine``'s VJP residuals (the gate activations: no
  activation evaluated twice, most memory); ``"recompute"``, the carries and
  the recurrent pre-activations (``combine`` re-run per step, the projection
  per chunk); ``"carries"``, the carries only (the pre-activations of a chunk
  re-formed by one matmul over its rows). Carry leaves that are the step's
  output (an LSTM's or GRU's ``h``) are never stored: the outputs hold them;
- where ``combine`` reads ``xp`` and the pre-activation only through their
  sum (LSTM, Elman; `reads_only_sum`), the two share one cotangent, and
  ``"recompute"`` stores the sum, so the backward pass forms no projection;
- ``weight_grads``: each chunk's share of the weight gradients right after
  its reverse sweep (``"per_chunk"``), or one matmul over all ``T * batch``
  rows once every chunk is swept (``"after_sweep"``: small batches make
  small per-chunk matmuls, at the price of keeping all steps' cotangents);
- low-precision (bf16/fp16) parameters run both recurrent matmuls in that
  precision with float32 accumulation, while the carry stays float32.

Why chunks: on a CPU, XLA allocates a program's temporaries as one block, and
a block above glibc's largest heap allocation (32 MiB) is mapped afresh, and
page-faulted, on every call (measured: 8,200 faults, about 25 ms, per call of
an LSTM forward at B32 T128 H256 with one chunk). Full-length
``[T, batch, G*H]`` buffers for the projection and its gradient often cross
that line; chunks keep them small and in cache, and the matmuls still see
``chunk * batch`` rows (``chunk=0`` is one chunk: one matmul over all ``T *
batch`` rows, as DESIGN.md sketches). The measured best ``chunk``, ``unroll``
and ``residuals`` per platform and shape live in the packaged dispatch table
(see `rnn_jax.backends.auto`); ``python benchmarks/cpu_suite.py --sweep`` measures
them.

Lengths and ``reverse`` follow the reference exactly (see `masking.scan_steps`):
a step past a sequence's length passes the carry (and its cotangent) through.
Cells without `Gates` run the hoisted ``lax.scan`` (projection outside the
loop, ``recur`` inside) under JAX's autodiff; cells without a projection split
run the reference loop.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.extend.core import Literal

from rnn_jax.backends import auto
from rnn_jax.backends.masking import keep_where, scan_steps, zero_where_not
from rnn_jax.backends.reference import run as run_reference
from rnn_jax.backends.registry import Backend, register_backend

RESIDUALS = ("store", "recompute", "carries")
WEIGHT_GRADS = ("per_chunk", "after_sweep")


class Plan(NamedTuple):
    """Static choices of one run."""

    reverse: bool
    unroll: int | bool
    chunk: int
    residuals: str
    pipeline: bool
    weight_grads: str

    def scan(self, f, init, xs, *, reverse):
        """The step loop: `pipelined_scan` or a plain ``lax.scan``."""
        loop = pipelined_scan if self.pipeline else jax.lax.scan
        return loop(f, init, xs, reverse=reverse, unroll=self.unroll)


# ----------------------------------------------------------------------------- helpers


def is_low_precision(dtype) -> bool:
    """True for floating dtypes narrower than float32 (bf16, fp16, fp8)."""
    return jnp.issubdtype(dtype, jnp.floating) and jnp.finfo(dtype).bits < 32


def matmul(a: jax.Array, b: jax.Array, out_dtype) -> jax.Array:
    """``a @ b`` in ``b``'s precision when that is low (float32 accumulation), else as given."""
    if is_low_precision(b.dtype):
        return jnp.matmul(a.astype(b.dtype), b, preferred_element_type=out_dtype)
    return jnp.matmul(a, b)


def rows_product(a: jax.Array, b: jax.Array, dtype) -> jax.Array:
    """``a^T @ b`` over all leading axes (``[..., R]``, ``[..., G]`` to ``[R, G]``) in ``dtype``.

    One matmul over every row (step and batch element); low-precision
    ``dtype`` multiplies in that precision with float32 accumulation.
    """
    a = a.reshape(-1, a.shape[-1])
    b = b.reshape(-1, b.shape[-1])
    if is_low_precision(dtype):
        a, b = a.astype(dtype), b.astype(dtype)
    product = jax.lax.dot_general(
        a, b, (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32
    )
    return product.astype(dtype)


def read_leaves(fn, params, *args) -> tuple[list, callable]:
    """``(leaves, rebuild)``: the inexact leaves of ``params`` that ``fn(params, *args)`` reads.

    Found from ``fn``'s jaxpr (``args`` may be arrays or shape structs);
    ``rebuild(leaves)`` puts (possibly traced) replacements back into ``params``.
    """
    leaves, treedef = jax.tree.flatten(params)
    jaxpr = jax.make_jaxpr(lambda ls, *a: fn(treedef.unflatten(ls), *a))(leaves, *args).jaxpr
    read = {id(v) for eqn in jaxpr.eqns for v in eqn.invars if not isinstance(v, Literal)}
    read |= {id(v) for v in jaxpr.outvars if not isinstance(v, Literal)}
    picked = [
        i
        for i, (leaf, var) in enumerate(zip(leaves, jaxpr.invars, strict=False))
        if id(var) in read and jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)
    ]

    def rebuild(replacements):
        full = list(leaves)
        for i, leaf in zip(picked, replacements, strict=True):
            full[i] = leaf
        return treedef.unflatten(full)

    return [leaves[i] for i in picked], rebuild


def add_trees(a, b):
    return jax.tree.map(jnp.add, a, b)


def shapes(tree, drop_leading: int = 0):
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[drop_leading:], a.dtype), tree)


def pipelined_scan(f, init, xs, *, reverse: bool = False, unroll: int | bool = 1):
    """``lax.scan(f, init, xs, reverse=reverse, unroll=unroll)``, reading ``xs`` a step ahead.

    Each iteration takes its slice of ``xs`` from the loop carry and loads the
    next one into it. Same values as ``lax.scan``; the difference is for XLA
    on CPU, which otherwise fuses the slicing into the step's elementwise
    kernels and then emits them several times slower (measured: 14 ms against
    4 ms for an LSTM's gate arithmetic over 128 steps of ``[32, 1024]``).
    """
    steps = jax.tree.leaves(xs)[0].shape[0]
    start, stop = (steps - 1, 0) if reverse else (0, steps - 1)

    def at(t):
        return jax.tree.map(lambda x: jax.lax.dynamic_index_in_dim(x, t, keepdims=False), xs)

    def body(carry, t):
        inner, current = carry
        upcoming = at(jnp.maximum(t - 1, 0) if reverse else jnp.minimum(t + 1, stop))
        inner, y = f(inner, current)
        return (inner, upcoming), y

    (final, _), ys = jax.lax.scan(
        body, (init, at(start)), jnp.arange(steps), reverse=reverse, unroll=unroll
    )
    return final, ys


def reads_only_sum(combine, *args) -> bool:
    """True when ``combine(params, carry, xp, hu)`` reads ``xp`` and ``hu`` only as ``xp + hu``.

    ``args`` are the four arguments (arrays or shape structs). Decided from the
    jaxpr: one ``add`` of the two, and no other use of either.
    """
    xp, hu = args[2], args[3]
    if not (isinstance(xp, jax.ShapeDtypeStruct) and isinstance(hu, jax.ShapeDtypeStruct)):
        return False
    if (xp.shape, xp.dtype) != (hu.shape, hu.dtype):
        return False
    jaxpr = jax.make_jaxpr(combine)(*args).jaxpr
    xp_var, hu_var = jaxpr.invars[-2], jaxpr.invars[-1]
    readers = [eqn for eqn in jaxpr.eqns if {id(v) for v in eqn.invars} & {id(xp_var), id(hu_var)}]
    returned = {id(v) for v in jaxpr.outvars} & {id(xp_var), id(hu_var)}
    return (
        len(readers) == 1
        and readers[0].primitive.name == "add"
        and {id(v) for v in readers[0].invars} == {id(xp_var), id(hu_var)}
        and not returned
    )


def is_primal(leaf) -> bool:
    return isinstance(leaf, jax.custom_derivatives.CustomVJPPrimal)


def instantiate(cotangent, like):
    """A cotangent with symbolic zeros (``symbolic_zeros=True``) replaced by real ones."""
    return jax.tree.map(
        lambda ct, x: (
            jnp.zeros(x.shape, x.dtype)
            if isinstance(ct, jax.custom_derivatives.SymbolicZero)
            else ct
        ),
        cotangent,
        like,
        is_leaf=lambda leaf: isinstance(leaf, jax.custom_derivatives.SymbolicZero),
    )


def valid_steps(length, steps: int, batch_shape) -> jax.Array | None:
    """``[T, *batch]`` bools: step ``t`` of a sequence of length ``L`` counts when ``t < L``."""
    if length is None:
        return None
    t = jnp.arange(steps).reshape((steps,) + (1,) * len(batch_shape))
    return t < length


# ----------------------------------------------------------------------------- the kernel


def previous_steps(ys, first, reverse: bool):
    """Per chunk and step, the output of the step before in scan order.

    ``ys: [n, K, ...]`` (``n`` chunks of ``K`` steps); the step before the very
    first one gets ``first [...]``.
    """
    if reverse:
        after = jnp.concatenate([ys[1:, :1], first[None, None]], axis=0)
        return jnp.concatenate([ys[:, 1:], after], axis=1)
    before = jnp.concatenate([first[None, None], ys[:-1, -1:]], axis=0)
    return jnp.concatenate([before, ys[:, :-1]], axis=1)


def gated_scan(cell, plan: Plan, params, carry0, xs, length):
    """``(final_carry, ys)`` of a cell with `Gates`, with the chunked custom backward pass."""
    gates = cell.gates
    steps, batch_shape = xs.shape[0], xs.shape[1:-1]
    size = max(1, min(plan.chunk, steps))
    count = -(-steps // size)
    padding = count * size - steps
    if padding:
        xs = jnp.concatenate([xs, jnp.zeros((padding, *xs.shape[1:]), xs.dtype)])
        if length is None:
            length = jnp.full(batch_shape, steps, jnp.int32)
    valid = valid_steps(length, count * size, batch_shape)
    xs = xs.reshape(count, size, *xs.shape[1:])
    valid = None if valid is None else valid.reshape(count, size, *batch_shape)

    kernel = gates.kernel(params)
    out_dtype = jax.tree.leaves(carry0)[0].dtype
    xp_shape = jax.eval_shape(cell.project, params, shapes(xs, 2))
    hu_shape = jax.eval_shape(lambda c, k: matmul(gates.fed_back(c), k, out_dtype), carry0, kernel)
    c_used, c_rebuild = read_leaves(gates.combine, params, carry0, xp_shape, hu_shape)
    # combine(xp + hu) (LSTM, Elman): "recompute" stores the sum, so the backward pass needs
    # no projection, and one cotangent serves both.
    summed = reads_only_sum(gates.combine, params, carry0, xp_shape, hu_shape)
    p_used, p_rebuild = read_leaves(cell.project, params, shapes(xs, 1))
    carry_leaves, carry_def = jax.tree.flatten(carry0)
    # Carry leaves that ARE the step's output (an LSTM's h, a GRU's h): the backward pass
    # reads them from the outputs of the step before instead of storing them twice.
    tied = [False] * len(carry_leaves)

    def combine(c_used, carry, xp_t, hu):
        return gates.combine(c_rebuild(c_used), carry, xp_t, hu)

    def project(p_used, x_chunk):
        # On rows [steps * batch, F]: a plain 2-D matmul, whose transposes (the weight
        # gradient) XLA runs as fast as the forward; a 3-D operand costs a transposing copy.
        lead = x_chunk.shape[:-1]
        xp = cell.project(p_rebuild(p_used), x_chunk.reshape(-1, x_chunk.shape[-1]))
        return jax.tree.map(lambda a: a.reshape(*lead, *a.shape[1:]), xp)

    def run_forward(p_used, c_used, kernel, carry0, xs, valid, store):
        def step(carry, inputs):
            xp_t, valid_t = inputs
            fb = gates.fed_back(carry)
            hu = matmul(fb, kernel, out_dtype)
            if store == "store":
                (new, y), pullback = jax.vjp(combine, c_used, carry, xp_t, hu)
                saved = (fb, pullback)
            else:
                new, y = combine(c_used, carry, xp_t, hu)
                tied[:] = [leaf is y for leaf in jax.tree.leaves(new)]
                untied = [c for c, t in zip(jax.tree.leaves(carry), tied, strict=True) if not t]
                pre = xp_t + hu if summed else hu
                saved = {None: None, "recompute": (untied, pre), "carries": (untied, None)}[store]
            if valid_t is not None:
                new = keep_where(valid_t, new, carry)
                y = zero_where_not(valid_t, y)
            return new, (y, saved)

        def chunk(carry, inputs):
            x_chunk, valid_chunk = inputs
            xp = project(p_used, x_chunk)
            return plan.scan(step, carry, (xp, valid_chunk), reverse=plan.reverse)

        final, (ys, saved) = jax.lax.scan(chunk, carry0, (xs, valid), reverse=plan.reverse)
        return final, ys, saved

    def carries_in(saved_untied, ys_before, valid_before, carry0):
        """The carries entering each step of the chunks, from stored and output leaves."""
        untied = iter(saved_untied)
        leaves = []
        for is_tied, leaf0 in zip(tied, jax.tree.leaves(carry0), strict=True):
            if not is_tied:
                leaves.append(next(untied))
                continue
            # A step after an invalid one (only the first valid step of a reversed scan)
            # starts from the initial carry.
            leaves.append(
                ys_before if valid_before is None else keep_where(valid_before, ys_before, leaf0)
            )
        return jax.tree.unflatten(carry_def, leaves)

    @jax.custom_vjp
    def recurrence(p_used, c_used, kernel, carry0, xs, valid):
        final, ys, _ = run_forward(p_used, c_used, kernel, carry0, xs, valid, None)
        return final, ys

    def fwd(*primals):
        # symbolic_zeros: each argument leaf says whether it is differentiated at all.
        values = [jax.tree.map(lambda a: a.value, p, is_leaf=is_primal) for p in primals]
        xs_perturbed = any(a.perturbed for a in jax.tree.leaves(primals[4], is_leaf=is_primal))
        p_used, c_used, kernel, carry0, xs, valid = values
        final, ys, saved = run_forward(p_used, c_used, kernel, carry0, xs, valid, plan.residuals)
        return (final, ys), (p_used, c_used, kernel, carry0, xs, valid, saved, ys, xs_perturbed)

    def bwd(res, cts):
        p_used, c_used, kernel, carry0, xs, valid, saved, ys, xs_perturbed = res
        d_final, d_ys = instantiate(cts[0], carry0), instantiate(cts[1], ys)
        _, fb_pullback = jax.vjp(gates.fed_back, carry0)  # fed_back is linear in the carry
        kernel_t = kernel.T
        store = plan.residuals == "store"
        if not store and any(tied):
            first = jax.tree.leaves(carry0)[tied.index(True)]
            ys_before = previous_steps(ys, first.astype(ys.dtype), plan.reverse)
            valid_before = None
            if valid is not None:
                valid_before = previous_steps(valid, jnp.ones(batch_shape, bool), plan.reverse)
        else:
            ys_before, valid_before = None, None

        def step(acc, inputs):
            d_carry, d_c = acc
            d_y, xp_t, valid_t, saved_t = inputs
            d_out = (d_carry, d_y)
            if valid_t is not None:
                d_out = zero_where_not(valid_t, d_out)
            if store:
                pullback = saved_t[1]
            else:
                carry, hu = saved_t
                if xp_t is None:  # hu holds xp + hu
                    xp_t, hu = hu, jnp.zeros_like(hu)
                _, pullback = jax.vjp(combine, c_used, carry, xp_t, hu)
            dc_t, d_prev, d_xp, d_hu = pullback(d_out)
            (d_fed,) = fb_pullback(matmul(d_hu, kernel_t, out_dtype))
            d_prev = add_trees(d_prev, d_fed)
            if valid_t is not None:
                d_prev = keep_where(valid_t, d_prev, d_carry)
            return (d_prev, add_trees(d_c, dc_t)), (None if summed else d_xp, d_hu)

        def chunk(acc, inputs):
            d_carry, d_c, d_kernel, d_p = acc
            d_y, x_chunk, valid_chunk, saved_chunk, ys_chunk, valid_before_chunk = inputs
            xp, project_pullback = jax.vjp(project, p_used, x_chunk)
            if store:
                fb = saved_chunk[0]
                per_step = saved_chunk
            else:
                carry = carries_in(saved_chunk[0], ys_chunk, valid_before_chunk, carry0)
                fb = gates.fed_back(carry)
                hu = saved_chunk[1]
                if hu is None:  # "carries": all steps' pre-activations in one matmul
                    hu = matmul(fb, kernel, out_dtype)
                per_step = (carry, hu)
            xp_in = None if summed and plan.residuals == "recompute" else xp
            (d_carry, d_c), (d_xp, d_hu) = plan.scan(
                step, (d_carry, d_c), (d_y, xp_in, valid_chunk, per_step), reverse=not plan.reverse
            )
            d_xp = d_hu if summed else d_xp
            d_xp = jax.tree.map(lambda d, x: d.astype(x.dtype), d_xp, xp)
            if after_sweep:  # the weight gradients wait for every chunk's cotangents
                return (d_carry, d_c, d_kernel, d_p), (None if summed else d_xp, d_hu)
            d_kernel = d_kernel + rows_product(fb, d_hu, kernel.dtype)
            dp_chunk, d_x = project_pullback(d_xp)
            if not xs_perturbed:  # then the inputs' gradient (a matmul per chunk) is never formed
                d_x = None
            return (d_carry, d_c, d_kernel, add_trees(d_p, dp_chunk)), d_x

        def weight_gradients(d_xp, d_hu):
            """Both weight gradients (and the inputs'), each one matmul over all T * B rows."""
            d_xp = d_hu if summed else d_xp  # (summed: xp and hu share one dtype)
            fb = (
                saved[0]
                if store
                else gates.fed_back(carries_in(saved[0], ys_before, valid_before, carry0))
            )
            _, project_pullback = jax.vjp(project, p_used, xs)
            d_p, d_xs = project_pullback(d_xp)
            return rows_product(fb, d_hu, kernel.dtype), d_p, d_xs

        after_sweep = plan.weight_grads == "after_sweep"
        zeros = partial(jax.tree.map, jnp.zeros_like)
        (d_carry0, d_c, d_kernel, d_p), per_chunk = jax.lax.scan(
            chunk,
            (d_final, zeros(c_used), zeros(kernel), zeros(p_used)),
            (d_ys, xs, valid, saved, ys_before, valid_before),
            reverse=not plan.reverse,
        )
        if after_sweep:
            d_kernel, d_p, d_xs = weight_gradients(*per_chunk)
            d_xs = d_xs if xs_perturbed else None
        else:
            d_xs = per_chunk
        return d_p, d_c, d_kernel, d_carry0, d_xs, None

    recurrence.defvjp(fwd, bwd, symbolic_zeros=True)
    final, ys = recurrence(p_used, c_used, kernel, carry0, xs, valid)
    ys = jax.tree.map(lambda y: y.reshape(count * size, *y.shape[2:])[:steps], ys)
    return final, ys


# ----------------------------------------------------------------------------- the backend


def run(
    cell,
    params,
    xs,
    *,
    initial_state,
    length,
    reverse,
    unroll,
    configured=None,
):
    if cell.project is None or cell.recur is None:
        return run_reference(
            cell,
            params,
            xs,
            initial_state=initial_state,
            length=length,
            reverse=reverse,
            unroll=unroll,
        )
    explicit = {k: v for k, v in (configured or {}).items() if v is not None}
    if "unroll" not in explicit and (unroll is True or unroll != 1):
        explicit["unroll"] = unroll  # the caller's own unroll; 1 (the default) means tuned
    if cell.gates is None:
        # The sweeps tune the gated kernel, whose unroll=True means one whole chunk; here
        # it would unroll the whole sequence. So only the caller's unroll applies.
        return scan_steps(
            partial(cell.recur, params),
            initial_state,
            cell.project(params, xs),
            length=length,
            reverse=reverse,
            unroll=explicit.get("unroll", 1),
        )
    settings = {**auto.tuned_sequential(cell, xs), **explicit}
    plan = Plan(
        reverse=reverse,
        unroll=settings["unroll"],
        chunk=settings["chunk"] or xs.shape[0],
        residuals=settings["residuals"],
        pipeline=settings["pipeline"],
        weight_grads=settings["weight_grads"],
    )
    return gated_scan(cell, plan, params, initial_state, xs, length)


def sequential(
    *,
    unroll: int | bool | None = None,
    chunk: int | None = None,
    residuals: str | None = None,
    pipeline: bool | None = None,
    weight_grads: str | None = None,
) -> Backend:
    """The ``sequential`` backend, configured; None takes the measured default.

    Args:
        unroll: steps per loop iteration, overriding the driver's ``unroll``
            (whose default 1 means the tuned value).
        chunk: steps per chunk (the projection and the weight-gradient matmuls
            run over ``chunk * batch`` rows); ``0`` means one chunk of all steps.
        residuals: ``"store"`` (gate activations), ``"recompute"`` (carries and
            pre-activations; ``combine`` re-run) or ``"carries"`` (carries only).
        pipeline: read each step's inputs one iteration ahead (`pipelined_scan`).
        weight_grads: ``"per_chunk"`` (each chunk's share of the weight gradients
            right after its reverse sweep, over ``chunk * batch`` rows) or
            ``"after_sweep"`` (one matmul over all ``T * batch`` rows once every
            chunk is swept; the cotangents of all steps are kept for it).

    Example:
        >>> carry, ys = rj.scan(cell, params, xs, backend=sequential(chunk=0))
    """
    if residuals is not None and residuals not in RESIDUALS:
        raise ValueError(f"residuals must be one of {RESIDUALS}; got {residuals!r}")
    if weight_grads is not None and weight_grads not in WEIGHT_GRADS:
        raise ValueError(f"weight_grads must be one of {WEIGHT_GRADS}; got {weight_grads!r}")
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 0):
        raise ValueError(f"chunk must be a non-negative int or None; got {chunk!r}")
    if pipeline is not None and not isinstance(pipeline, bool):
        raise ValueError(f"pipeline must be a bool or None; got {pipeline!r}")
    configured = {
        "unroll": unroll,
        "chunk": chunk,
        "residuals": residuals,
        "pipeline": pipeline,
        "weight_grads": weight_grads,
    }
    return Backend("sequential", partial(run, configured=configured))


register_backend(sequential())
