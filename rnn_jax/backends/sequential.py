"""The ``sequential`` backend: a tuned ``lax.scan`` with a custom backward pass.

For a cell with `Gates` (``simple``, ``lstm``, ``gru``, the multi-head cells),
time is cut into chunks of ``chunk`` steps (``chunk = T``: one chunk):

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
- what the forward pass keeps for the backward one (``residuals``, a policy
  type each: `rnn_jax.backends.residuals`): ``"store"``, ``combine``'s VJP
  residuals (the gate activations: no activation evaluated twice, most
  memory); ``"recompute"``, the carries and the recurrent pre-activations
  (``combine`` re-run per step, the projection per chunk); ``"carries"``, the
  carries only (the pre-activations of a chunk re-formed by one matmul over
  its rows). Carry leaves that are the step's output (an LSTM's or GRU's
  ``h``) are never stored where the valid steps are a prefix: the outputs
  hold them;
- where ``combine`` reads ``xp`` and the pre-activation only through their
  sum (LSTM, Elman; `rnn_jax.backends.jaxprs.reads_only_sum`), the two share
  one cotangent, and ``"recompute"`` stores the sum, so the backward pass
  forms no projection;
- ``weight_grads``: each chunk's share of the weight gradients right after
  its reverse sweep (``"per_chunk"``), or one matmul over all ``T * batch``
  rows once every chunk is swept (``"after_sweep"``: small batches make
  small per-chunk matmuls, at the price of keeping all steps' cotangents);
- the forward step reads its projected input as the gate blocks ``combine``
  cuts it into (``Gates.blocks``, see `Layout`);
- low-precision (bf16/fp16) parameters run both recurrent matmuls in that
  precision with float32 accumulation, while the carry stays float32.

Why chunks: on a CPU, XLA allocates a program's temporaries as one block, and
a block above glibc's largest heap allocation (32 MiB) is mapped afresh, and
page-faulted, on every call (measured: 8,200 faults, about 25 ms, per call of
an LSTM forward at B32 T128 H256 with one chunk). Full-length
``[T, batch, G*H]`` buffers for the projection and its gradient often cross
that line; chunks keep them small and in cache, and the matmuls still see
``chunk * batch`` rows (``chunk=0`` is one chunk: one matmul over all ``T *
batch`` rows). The measured best ``chunk``, ``unroll`` and ``residuals`` per
platform and shape live in the packaged dispatch table (see
`rnn_jax.backends.auto`); ``python benchmarks/cpu_suite.py --sweep`` measures
them.

Valid steps and restarts follow the reference exactly (`rnn_jax.backends.masking`):
a step that does not count passes the carry (and its cotangent) through, and
at a restart the carry's cotangent goes to the restart state. Cells without
`Gates` run the hoisted ``lax.scan`` (projection outside the loop, ``recur``
inside) under JAX's autodiff; cells without a projection split run the
reference loop.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import partial
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp

from rnn_jax import _validate
from rnn_jax.backends import auto
from rnn_jax.backends.contract import Backend, Problem
from rnn_jax.backends.jaxprs import Reads, outputs_fed_back, parameters_read, reads_only_sum
from rnn_jax.backends.masking import (
    keep_where,
    pad_steps,
    restarted,
    scan_steps,
    zero_where_not,
)
from rnn_jax.backends.numerics import matmul, rows_product
from rnn_jax.backends.reference import reference_scan
from rnn_jax.backends.residuals import POLICIES, Residuals

WEIGHT_GRADS = ("per_chunk", "after_sweep")


class Plan(NamedTuple):
    """Static choices of one run: ``residuals`` is the policy (`Residuals`) for what the
    forward sweep keeps; ``after_sweep``: the weight gradients wait for the whole sweep."""

    reverse: bool
    unroll: int | bool
    chunk: int
    residuals: Residuals
    pipeline: bool
    after_sweep: bool

    def loop(self, f, init, xs, *, reverse):
        """The step loop: `pipelined_scan` or a plain ``lax.scan``."""
        scan = pipelined_scan if self.pipeline else jax.lax.scan
        return scan(f, init, xs, reverse=reverse, unroll=self.unroll)


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


def add_trees(a, b):
    return jax.tree.map(jnp.add, a, b)


def zeros_like_tree(tree):
    return jax.tree.map(jnp.zeros_like, tree)


def shapes(tree, drop_leading: int = 0):
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[drop_leading:], a.dtype), tree)


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


# ----------------------------------------------------------------------------- what a run knows


class Layout(NamedTuple):
    """What a run learns about the cell before it runs, from shapes and jaxprs only.

    - ``gates``, ``project_cell``: the cell's `Gates` and ``project``.
    - ``combine_reads`` / ``project_reads``: the parameters each reads.
    - ``summed``: ``combine`` reads ``xp`` and the pre-activation only as their sum.
    - ``tied``: per carry leaf, whether it is the step's output (and need not
      be stored, the valid steps being a prefix).
    - ``carry_tree``: the carry's structure; ``out_dtype``: the carry's dtype,
      in which the recurrent matmuls accumulate.
    - ``blocks``: the gate blocks ``combine`` cuts ``xp`` into (``Gates.blocks``;
      1 where ``xp`` is not one array of the pre-activation's shape). The
      forward sweep carries a chunk's projected inputs through its step loop
      as those blocks (`split`) and joins each step's again for ``combine``
      (`join`): XLA's CPU loops emit a fused kernel that reads a step's slice
      of one array at several column offsets several times slower than one
      that reads separate arrays (``python benchmarks/gate_blocks.py``).
    """

    gates: Any
    project_cell: Any
    combine_reads: Reads
    project_reads: Reads
    summed: bool
    tied: tuple[bool, ...]
    carry_tree: Any
    out_dtype: Any
    blocks: int

    def split(self, a):
        """``a [..., G*H]`` as a tuple of its gate blocks (``a`` itself with one block)."""
        return a if self.blocks == 1 else tuple(jnp.split(a, self.blocks, axis=-1))

    def join(self, a):
        """The inverse of `split`."""
        return a if self.blocks == 1 else jnp.concatenate(a, axis=-1)

    def combine(self, c_used, carry, xp_t, hu):
        return self.gates.combine(self.combine_reads.rebuild(c_used), carry, xp_t, hu)

    def project(self, p_used, x_chunk):
        """``project`` on rows ``[steps * batch, F]``: a plain 2-D matmul, whose transposes
        (the weight gradient) XLA runs as fast as the forward; a 3-D operand costs a
        transposing copy."""
        lead = x_chunk.shape[:-1]
        xp = self.project_cell(
            self.project_reads.rebuild(p_used), x_chunk.reshape(-1, x_chunk.shape[-1])
        )
        return jax.tree.map(lambda a: a.reshape(*lead, *a.shape[1:]), xp)


def analyse(cell, params, problem: Problem) -> Layout:
    """The `Layout` of ``cell`` for ``problem`` (nothing runs)."""
    gates, carry0 = cell.gates, problem.initial_state
    out_dtype = jax.tree.leaves(carry0)[0].dtype
    kernel = jax.eval_shape(gates.kernel, params)
    xp = jax.eval_shape(cell.project, params, shapes(problem.xs, 1))
    hu = jax.eval_shape(lambda c, k: matmul(gates.fed_back(c), k, out_dtype), carry0, kernel)
    prefix = problem.valid is None or problem.length is not None
    tied = outputs_fed_back(gates.combine, params, carry0, xp, hu)
    one_array = isinstance(xp, jax.ShapeDtypeStruct) and xp.shape == hu.shape
    blocks = gates.blocks if one_array and hu.shape[-1] % gates.blocks == 0 else 1
    return Layout(
        gates=gates,
        project_cell=cell.project,
        combine_reads=parameters_read(gates.combine, params, carry0, xp, hu),
        project_reads=parameters_read(cell.project, params, shapes(problem.xs, 1)),
        summed=reads_only_sum(gates.combine, params, carry0, xp, hu),
        tied=tied if prefix else (False,) * len(tied),
        carry_tree=jax.tree.structure(carry0),
        out_dtype=out_dtype,
        blocks=blocks,
    )


class Chunks(NamedTuple):
    """The per-step inputs of a run, ``[n, K, ...]``: ``n`` chunks of ``K`` steps."""

    xs: jax.Array
    valid: jax.Array | None
    starts: jax.Array | None


def chunked(problem: Problem, size: int) -> Chunks:
    def split(x):
        return None if x is None else x.reshape(-1, size, *x.shape[1:])

    return Chunks(split(problem.xs), split(problem.valid), split(problem.starts))


# ----------------------------------------------------------------------------- forward sweep


def forward_step(layout: Layout, residuals, c_used, kernel, restart, carry, inputs):
    """One step: ``(carry, (y, kept))``; ``kept`` is what the `Residuals` policy
    ``residuals`` keeps (None, for inference: nothing)."""
    xp_t, valid_t, start_t = inputs
    xp_t = layout.join(xp_t)
    carry = restarted(start_t, restart, carry)
    fed = layout.gates.fed_back(carry)
    hu = matmul(fed, kernel, layout.out_dtype)
    if residuals is None:
        (new, y), kept = layout.combine(c_used, carry, xp_t, hu), None
    else:
        (new, y), kept = residuals.keep(layout, c_used, carry, xp_t, fed, hu)
    if valid_t is not None:
        new = keep_where(valid_t, new, carry)
        y = zero_where_not(valid_t, y)
    return new, (y, kept)


def forward_sweep(layout, plan, residuals, p_used, c_used, kernel, carry0, restart, chunks):
    """``(final_carry, ys [n, K, ...], kept)`` over every chunk."""
    step = partial(forward_step, layout, residuals, c_used, kernel, restart)

    def chunk(carry, inputs):
        x_chunk, valid_chunk, starts_chunk = inputs
        xp = layout.split(layout.project(p_used, x_chunk))
        return plan.loop(step, carry, (xp, valid_chunk, starts_chunk), reverse=plan.reverse)

    # The chunk loops read their chunk an iteration ahead. Otherwise XLA CPU fuses each
    # chunk's slices of the inputs (and, backward, of the cotangent d_ys) into dozens of
    # the chunk's elementwise kernels, which it then emits several times slower. Measured
    # on an MSE loss, LSTM B32 T128 H256 forward+backward: 1.47-1.54x PyTorch's time
    # with plain lax.scan loops, 1.18-1.26x pipelined.
    final, (ys, kept) = pipelined_scan(chunk, carry0, chunks, reverse=plan.reverse)
    return final, ys, kept


# ----------------------------------------------------------------------------- backward sweep


class Saved(NamedTuple):
    """What the backward pass reads besides the cotangents (the forward's residuals);
    ``saved``: what the policy kept of every step, ``[n, K, ...]``."""

    p_used: list
    c_used: list
    kernel: jax.Array
    carry0: Any
    restart: Any
    chunks: Chunks
    saved: Any
    ys: Any
    xs_perturbed: bool


def backward_step(layout: Layout, c_used, kernel_t, fed_pullback, acc, inputs):
    """One step of the reverse sweep: cotangents of the carry entering the step."""
    d_carry, d_c, d_restart = acc
    d_y, valid_t, start_t, point = inputs
    d_out = (d_carry, d_y)
    if valid_t is not None:
        d_out = zero_where_not(valid_t, d_out)
    dc_t, d_prev, d_xp, d_hu = point.pullback_of(layout, c_used)(d_out)
    (d_fed,) = fed_pullback(matmul(d_hu, kernel_t, layout.out_dtype))
    d_prev = add_trees(d_prev, d_fed)
    if valid_t is not None:
        d_prev = keep_where(valid_t, d_prev, d_carry)
    if start_t is not None:  # the carry entering a start was the restart state
        d_restart = add_trees(d_restart, zero_where_not(start_t, d_prev))
        d_prev = zero_where_not(~start_t, d_prev)
    d_xp = None if layout.summed else d_xp
    return (d_prev, add_trees(d_c, dc_t), d_restart), (d_xp, d_hu)


def backward_sweep(layout: Layout, plan: Plan, res: Saved, d_final, d_ys):
    """The cotangents of every input of the recurrence (see `recurrence`)."""
    _, fed_pullback = jax.vjp(layout.gates.fed_back, res.carry0)  # linear in the carry
    kernel_t = res.kernel.T
    step = partial(backward_step, layout, res.c_used, kernel_t, fed_pullback)
    entering = plan.residuals.entering(layout, res, plan.reverse)

    def chunk(acc, inputs):
        d_carry, d_c, d_restart, d_kernel, d_p = acc
        d_y, x_chunk, valid_chunk, kept_chunk, entering_chunk = inputs
        xp, project_pullback = jax.vjp(layout.project, res.p_used, x_chunk)
        fed, points = plan.residuals.points(layout, res, kept_chunk, xp, entering_chunk)
        (d_carry, d_c, d_restart), (d_xp, d_hu) = plan.loop(
            step,
            (d_carry, d_c, d_restart),
            (d_y, valid_chunk, entering_chunk.starts, points),
            reverse=not plan.reverse,
        )
        d_xp = d_hu if layout.summed else d_xp
        d_xp = jax.tree.map(lambda d, x: d.astype(x.dtype), d_xp, xp)
        acc = (d_carry, d_c, d_restart, d_kernel, d_p)
        if plan.after_sweep:  # the weight gradients wait for every chunk's cotangents
            return acc, (d_xp, d_hu)
        d_kernel = d_kernel + rows_product(fed, d_hu, res.kernel.dtype)
        dp_chunk, d_x = project_pullback(d_xp)
        acc = (d_carry, d_c, d_restart, d_kernel, add_trees(d_p, dp_chunk))
        return acc, (d_x if res.xs_perturbed else None)

    chunks = res.chunks
    start = (
        d_final,
        zeros_like_tree(res.c_used),
        zeros_like_tree(res.restart),
        jnp.zeros_like(res.kernel),
        zeros_like_tree(res.p_used),
    )
    # Pipelined like the forward chunk loop (see forward_sweep).
    (d_carry0, d_c, d_restart, d_kernel, d_p), per_chunk = pipelined_scan(
        chunk,
        start,
        (d_ys, chunks.xs, chunks.valid, res.saved, entering),
        reverse=not plan.reverse,
    )
    if plan.after_sweep:
        d_kernel, d_p, d_xs = weight_gradients(layout, plan, res, entering, *per_chunk)
    else:
        d_xs = per_chunk
    d_xs = d_xs if res.xs_perturbed else None
    return d_p, d_c, d_kernel, d_carry0, d_restart, d_xs


def weight_gradients(layout, plan, res: Saved, entering, d_xp, d_hu):
    """Both weight gradients (and the inputs'), each one matmul over all ``T * B`` rows."""
    d_xp = d_hu if layout.summed else d_xp  # (summed: xp and hu share one dtype)
    fed = plan.residuals.fed_of_all(layout, res, entering)
    _, project_pullback = jax.vjp(layout.project, res.p_used, res.chunks.xs)
    d_p, d_xs = project_pullback(d_xp)
    return rows_product(fed, d_hu, res.kernel.dtype), d_p, d_xs


# ----------------------------------------------------------------------------- the recurrence


def recurrence(layout: Layout, plan: Plan):
    """``(p_used, c_used, kernel, carry0, restart, chunks) -> (final, ys)`` with the custom
    backward pass."""

    @jax.custom_vjp
    def run(p_used, c_used, kernel, carry0, restart, chunks):
        final, ys, _ = forward_sweep(
            layout, plan, None, p_used, c_used, kernel, carry0, restart, chunks
        )
        return final, ys

    def fwd(*primals):
        # symbolic_zeros: each argument leaf says whether it is differentiated at all.
        values = [jax.tree.map(lambda a: a.value, p, is_leaf=is_primal) for p in primals]
        xs_perturbed = any(a.perturbed for a in jax.tree.leaves(primals[5].xs, is_leaf=is_primal))
        p_used, c_used, kernel, carry0, restart, chunks = values
        final, ys, saved = forward_sweep(
            layout, plan, plan.residuals, p_used, c_used, kernel, carry0, restart, chunks
        )
        res = Saved(p_used, c_used, kernel, carry0, restart, chunks, saved, ys, xs_perturbed)
        return (final, ys), res

    def bwd(res: Saved, cotangents):
        d_final, d_ys = instantiate(cotangents[0], res.carry0), instantiate(cotangents[1], res.ys)
        d_p, d_c, d_kernel, d_carry0, d_restart, d_xs = backward_sweep(
            layout, plan, res, d_final, d_ys
        )
        d_chunks = Chunks(d_xs, None, None)
        return d_p, d_c, d_kernel, d_carry0, d_restart, d_chunks

    run.defvjp(fwd, bwd, symbolic_zeros=True)
    return run


def gated_scan(cell, plan: Plan, params, problem: Problem):
    """``(final_carry, ys)`` of a cell with `Gates`, with the chunked custom backward pass."""
    steps = problem.steps
    size = max(1, min(plan.chunk, steps))
    padded = pad_steps(problem, size)
    layout = analyse(cell, params, padded)
    restart = padded.restart_state
    if restart is None:  # no restarts: zeros stand in (never read), so one signature serves
        restart = zeros_like_tree(padded.initial_state)
    run = recurrence(layout, plan)
    final, ys = run(
        layout.project_reads.leaves,
        layout.combine_reads.leaves,
        cell.gates.kernel(params),
        padded.initial_state,
        restart,
        chunked(padded, size),
    )
    ys = jax.tree.map(lambda y: y.reshape(-1, *y.shape[2:])[:steps], ys)
    return final, ys


# ----------------------------------------------------------------------------- the backend


def plan_for(cell, problem: Problem, configured: dict[str, Any]) -> Plan:
    """The `Plan` of a run: the configured options over the caller's ``unroll`` over the
    measured settings for this shape and mode (inference or training)."""
    explicit = {k: v for k, v in configured.items() if v is not None}
    if "unroll" not in explicit and problem.unroll is not None:
        explicit["unroll"] = problem.unroll
    settings = {**auto.tuned_sequential(cell, problem), **explicit}
    return Plan(
        reverse=problem.reverse,
        unroll=settings["unroll"],
        chunk=settings["chunk"] or problem.steps,
        residuals=POLICIES[settings["residuals"]],
        pipeline=settings["pipeline"],
        after_sweep=settings["weight_grads"] == "after_sweep",
    )


def hoisted_scan(cell, params, problem: Problem, unroll: int | bool | None):
    """A cell without `Gates`: the projection of every step at once, ``recur`` in the loop."""
    return scan_steps(
        partial(cell.recur, params),
        problem.initial_state,
        cell.project(params, problem.xs),
        valid=problem.valid,
        starts=problem.starts,
        restart_state=problem.restart_state,
        reverse=problem.reverse,
        unroll=unroll or problem.unroll or 1,
    )


@dataclass(frozen=True)
class Sequential(Backend):
    """The ``sequential`` backend; an option left None takes the measured value.

    Args:
        unroll: steps per loop iteration, overriding ``rj.scan``'s ``unroll``.
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
        >>> cell = rj.gru(8)
        >>> params = cell.init(jax.random.key(0), 4)
        >>> backend = rj.backends.Sequential(chunk=0, residuals="store")
        >>> carry, ys = rj.scan(cell, params, jnp.ones((10, 2, 4)), backend=backend)
    """

    name = "sequential"
    unroll: int | bool | None = None
    chunk: int | None = None
    residuals: Literal["store", "recompute", "carries"] | None = None
    pipeline: bool | None = None
    weight_grads: Literal["per_chunk", "after_sweep"] | None = None

    def __post_init__(self):
        _validate.unroll(self.unroll)
        _validate.optional_non_negative_int("chunk", self.chunk)
        if self.residuals is not None:
            _validate.one_of("residuals", self.residuals, tuple(POLICIES))
        if self.weight_grads is not None:
            _validate.one_of("weight_grads", self.weight_grads, WEIGHT_GRADS)
        _validate.optional_bool("pipeline", self.pipeline)

    def run(self, cell, params, problem: Problem):
        if cell.project is None or cell.recur is None:
            return reference_scan(cell, params, problem)
        if cell.gates is None:
            # The sweeps tune the gated kernel, whose unroll=True means one whole chunk;
            # here it would unroll the whole sequence. So only the caller's unroll applies.
            return hoisted_scan(cell, params, problem, self.unroll)
        configured = {field.name: getattr(self, field.name) for field in fields(self)}
        return gated_scan(cell, plan_for(cell, problem, configured), params, problem)
