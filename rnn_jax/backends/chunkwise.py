"""The chunkwise-parallel form of a matrix memory (`rnn_jax.cells.MatrixMemory`, the mLSTM's).

The memory ``C_t = f_t C_{t-1} + i_t k_t v_t^T`` is linear in ``(C, n)`` with a
scalar decay per head, so its read-outs need the ``[dk, dv]`` state only once
per chunk of ``L`` steps, never for every step:

1. every chunk at once: what it adds to the memory by its end (``sum_s w_s
   k_s v_s^T`` with the decay ``w_s`` from step ``s`` to the chunk's end);
2. a ``lax.scan`` over the ``T / L`` chunks: the state entering each chunk;
3. every chunk at once: each step's read-out ``q_t^T C_t``, as the entering
   state decayed to ``t`` plus a causally masked ``[L, L]`` attention-like
   form over the chunk's own steps (``(q_t . k_s) w_ts``).

Everything is exact, as the step computes it: the stabiliser ``m_t = max(log
f_t + m_{t-1}, log i_t)`` of every step is the maximum of its candidates (the
entering state's ``m`` decayed to ``t``, and every earlier step's ``log i_s``
decayed to ``t``), so the states carried between chunks are the step's own
(``C`` and ``n`` times ``exp(-m)``), and no exponent is ever above 0. Cumulative
sums of ``log f`` run within a chunk only, so their rounding does not grow
with ``T``.

A `Problem`'s valid steps, restarts and direction apply as in every backend:
a step that does not count has ``f = 1, i = 0`` (the memory passes through);
a restart cuts the decay from the steps before it and enters the restart
state instead; ``reverse=True`` runs the same on the time-flipped problem.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rnn_jax.backends.contract import Problem
from rnn_jax.backends.masking import restarted
from rnn_jax.cells.capabilities import MatrixMemoryState, MemoryInputs, memory_read_out


def in_scan_order(tree, reverse: bool):
    """``tree``'s leaves ``[T, ...]`` in the order the scan visits the steps."""
    return jax.tree.map(lambda x: jnp.flip(x, axis=0), tree) if reverse else tree


def masked_inputs(inputs: MemoryInputs, valid: jax.Array | None) -> MemoryInputs:
    """Steps that do not count leave the memory as it is: ``log f = 0``, ``log i = -inf``."""
    if valid is None:
        return inputs
    keep = valid[..., None]
    return inputs._replace(
        log_f=jnp.where(keep, inputs.log_f, 0.0), log_i=jnp.where(keep, inputs.log_i, -jnp.inf)
    )


def into_chunks(inputs: MemoryInputs, starts: jax.Array, chunk: int):
    """Leaves ``[T, B, ...]`` padded with steps that change nothing, as ``[K, L, B, ...]``."""
    steps = starts.shape[0]
    padding = -steps % chunk
    fills = MemoryInputs(q=0.0, k=0.0, v=0.0, log_f=0.0, log_i=-jnp.inf)

    def split(x, fill):
        if padding:
            x = jnp.concatenate([x, jnp.full((padding, *x.shape[1:]), fill, x.dtype)])
        return x.reshape(-1, chunk, *x.shape[1:])

    return jax.tree.map(split, inputs, fills), split(starts, False)


def segments(log_f: jax.Array, starts: jax.Array):
    """Per step of each chunk (``[K, L, B, NH]``): which segment of the chunk it is in (0: the
    one the chunk's entering state starts; ``s > 0``: the one after its ``s``-th restart),
    and the log-decay since that segment's state entered."""
    chunk = log_f.shape[1]
    decay = jnp.cumsum(log_f, axis=1)
    segment = jnp.cumsum(starts, axis=1)[..., None]
    position = jnp.arange(chunk).reshape(1, chunk, 1, 1)
    last_start = jax.lax.cummax(jnp.where(starts[..., None], position, -1), axis=1)
    before = decay - log_f  # the decay up to the step before each step
    index = jnp.broadcast_to(jnp.maximum(last_start, 0), decay.shape)
    at_start = jnp.take_along_axis(before, index, axis=1)
    since_entry = decay - jnp.where(last_start >= 0, at_start, 0.0)
    return segment, decay, since_entry


def pair_weights(decay, log_i, segment):
    """``log w [K, L, L, B, NH]``: at ``[k, t, s]`` the log-weight of step ``s``'s write in
    the memory read at step ``t`` of chunk ``k``; ``-inf`` unless ``s <= t``, same segment."""
    chunk = decay.shape[1]
    causal = jnp.tril(jnp.ones((chunk, chunk), bool)).reshape(1, chunk, chunk, 1, 1)
    together = causal & (segment[:, :, None] == segment[:, None, :])
    logs = decay[:, :, None] - decay[:, None, :] + log_i[:, None, :]
    return jnp.where(together, logs, -jnp.inf)


def chunk_writes(x: MemoryInputs, pairs: jax.Array):
    """What each chunk's last segment writes by the chunk's end, stabilised by its own maximum
    ``top`` (``-inf`` when nothing is written): ``(kv [K, B, NH, dk, dv], k [K, B, NH, dk],
    top [K, B, NH])``."""
    last = pairs[:, -1]
    top = jnp.max(last, axis=1)
    weights = jnp.exp(last - jnp.where(jnp.isneginf(top), 0.0, top)[:, None])
    kv = jnp.einsum("ksbn,ksbna,ksbnc->kbnac", weights, x.k, x.v)
    return kv, jnp.einsum("ksbn,ksbna->kbna", weights, x.k), top


def decayed(state: MatrixMemoryState, decay, writes) -> MatrixMemoryState:
    """``state`` decayed by ``exp(decay)`` plus ``writes = (kv, k, top)``, re-stabilised."""
    kv, k, top = writes
    m = jnp.maximum(state.m + decay, top)
    old, new = jnp.exp(state.m + decay - m), jnp.exp(top - m)
    c = old[..., None, None] * state.c + new[..., None, None] * kv
    return MatrixMemoryState(c, old[..., None] * state.n + new[..., None] * k, m)


def read_outs(x: MemoryInputs, pairs, segment, since_entry, entering, restart, steps: int):
    """Every step's read-out ``h`` (`memory_read_out`), from the chunk's writes and the state
    entering the step's segment: ``entering`` (per chunk) for segment 0, else ``restart``
    (None: no restarts). Steps from ``steps`` on are padding."""
    first = segment == 0
    m_entry = entering.m[:, None]
    if restart is not None:
        m_entry = jnp.where(first, m_entry, restart.m[None, None])
    from_entry = m_entry + since_entry
    m = jnp.maximum(from_entry, jnp.max(pairs, axis=2))
    scores = jnp.einsum("kjbna,ksbna->kjsbn", x.q, x.k) * jnp.exp(pairs - m[:, :, None])
    read = jnp.einsum("kjsbn,ksbnc->kjbnc", scores, x.v)
    norm = jnp.sum(scores, axis=2)
    q_c = jnp.einsum("kjbna,kbnac->kjbnc", x.q, entering.c)
    q_n = jnp.einsum("kjbna,kbna->kjbn", x.q, entering.n)
    if restart is not None:
        q_c = jnp.where(first[..., None], q_c, jnp.einsum("kjbna,bnac->kjbnc", x.q, restart.c))
        q_n = jnp.where(first, q_n, jnp.einsum("kjbna,bna->kjbn", x.q, restart.n))
    weight = jnp.exp(from_entry - m)
    read = read + weight[..., None] * q_c
    norm = norm + weight * q_n
    # A padded step reads nothing (q = 0); its divisor is set to 1, since exp(-m) underflows
    # for large m, and 0 / 0 would be NaN in the gradient even for a step that is dropped.
    chunks, chunk = norm.shape[:2]
    padded = (jnp.arange(chunks * chunk) >= steps).reshape(chunks, chunk, 1, 1)
    return memory_read_out(read, jnp.where(padded, 1.0, norm), m)


def chunkwise(
    inputs: MemoryInputs, problem: Problem, *, chunk: int
) -> tuple[MatrixMemoryState, jax.Array]:
    """``(final_state, h [T, B, NH, dv])`` of a matrix memory over ``problem``'s steps.

    ``inputs``: leaves ``[T, B, NH, ...]``; ``problem.initial_state`` (and
    ``restart_state``) a `MatrixMemoryState`. ``chunk``: steps per chunk ``L``.
    """
    h0, restart = problem.initial_state, problem.restart_state
    steps, batch = problem.steps, problem.batch
    starts = problem.starts if problem.starts is not None else jnp.zeros((steps, batch), bool)
    ordered = in_scan_order((inputs, problem.valid, starts), problem.reverse)
    x, starts = into_chunks(masked_inputs(ordered[0], ordered[1]), ordered[2], min(chunk, steps))
    segment, decay, since_entry = segments(x.log_f, starts)
    pairs = pair_weights(decay, x.log_i, segment)

    def across(state, summary):
        writes, restarts, chunk_decay = summary
        return decayed(restarted(restarts, restart, state), chunk_decay, writes), state

    restarts = None if restart is None else jnp.any(starts, axis=1)
    summaries = (chunk_writes(x, pairs), restarts, since_entry[:, -1])
    final, entering = jax.lax.scan(across, h0, summaries)
    h = read_outs(x, pairs, segment, since_entry, entering, restart, steps)
    h = h.reshape(-1, *h.shape[2:])[:steps]
    return final, in_scan_order(h, problem.reverse)
