"""What the compile tests hand to the real compilers: many kernel variants per program.

Compiling costs seconds per program on a CPU (Triton, ptxas, Mosaic), so
one program runs many scans: each `Case` is a cell with its own shape, dtype
and scan arguments, and contributes its forward outputs (the forward kernel
alone) and the gradient of a loss of its outputs and final carry with
respect to the parameters, the inputs and the initial state (the forward
kernel that keeps the carries, then the backward kernel).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import pytest

import rnn_jax as rj
from rnn_jax import aot

T, B = 13, 5  # T not a power of two, an odd batch


class Case(NamedTuple):
    """A cell and its scan: ``arrays`` are extra scan arguments (lengths, resets, masks),
    ``reverse`` and ``vmapped`` (batch-major sequences under ``jax.vmap``, lengths per
    sequence) as `rj.scan` takes them; the program computes the gradient, and with
    ``forward`` the outputs alone too."""

    name: str
    make: Callable[[], rj.Cell]
    dtype: Any = jnp.float32
    features: int = 8
    arrays: tuple[str, ...] = ()
    reverse: bool = False
    vmapped: bool = False
    forward: bool = False  # the forward outputs too, not only the gradient


LENGTHS = jnp.array([13, 5, 0, 3, 1])  # a zero length
RESETS = jnp.zeros((T, B), bool).at[4].set(True)
HOLES = jnp.ones((T, B), bool).at[2, 1].set(False)
ARRAYS = {"length": LENGTHS, "resets": RESETS, "mask": HOLES}

# Every fused-kernel cell kind, f32 and bf16, with lengths (one of them zero), resets, holes,
# reverse and vmap among them; the plain forward (the kernel that keeps no carries) once.
FUSED = (
    Case("lstm", lambda: rj.lstm(32), arrays=("length", "resets"), forward=True),
    Case("gru_bf16", lambda: rj.gru(48, dtype=jnp.bfloat16), jnp.bfloat16, arrays=("mask",)),
    Case(
        "lstm_peephole_proj_norm",
        lambda: rj.lstm(32, peephole=True, proj_size=16, layer_norm=True),
        arrays=("length",),
        reverse=True,
    ),
    Case("multihead_simple", lambda: rj.multihead_simple(64, 2), arrays=("resets",), reverse=True),
    Case(
        "multihead_lstm_bf16",
        lambda: rj.multihead_lstm(64, 4, dtype=jnp.bfloat16),
        jnp.bfloat16,
        arrays=("length",),
        vmapped=True,
    ),
    Case("slstm", lambda: rj.slstm(32, 2), arrays=("mask",)),
)
LINEAR = (
    Case("min_gru", lambda: rj.min_gru(48), arrays=("length", "resets"), forward=True),
    Case("min_lstm_bf16", lambda: rj.min_lstm(32, dtype=jnp.bfloat16), jnp.bfloat16),
    Case("lru", lambda: rj.lru(24), reverse=True),  # complex: real and imaginary parts
    Case("rg_lru", lambda: rj.rg_lru(40), arrays=("mask",), vmapped=True),
)
# One of each kernel, for the chips that compile what the others prove in full.
REPRESENTATIVE = (FUSED[0], LINEAR[0])


def _scan(case: Case, cell: rj.Cell, params, xs, c0):
    arrays = {k: ARRAYS[k] for k in case.arrays}
    if not case.vmapped:
        return rj.scan(
            cell, params, xs, initial_state=c0, reverse=case.reverse, backend="pallas", **arrays
        )

    def one(x, c, *values):  # one sequence, time-major; arrays per sequence
        named = dict(zip(case.arrays, values, strict=True))
        return rj.scan(
            cell, params, x, initial_state=c, reverse=case.reverse, backend="pallas", **named
        )

    per_sequence = [
        jnp.moveaxis(ARRAYS[k], 1, 0) if ARRAYS[k].ndim == 2 else ARRAYS[k] for k in case.arrays
    ]
    return jax.vmap(one, in_axes=(1, 0, *([0] * len(per_sequence))), out_axes=(0, 1))(
        xs, c0, *per_sequence
    )


def _loss(case: Case, cell: rj.Cell):
    def loss(params, xs, c0):
        carry, ys = _scan(case, cell, params, xs, c0)
        total = jnp.sum(jnp.real(ys).astype(jnp.float32) ** 2)
        return total + sum(jnp.sum(jnp.abs(c).astype(jnp.float32)) for c in jax.tree.leaves(carry))

    return loss


def arguments(cases: tuple[Case, ...]) -> list[tuple[Any, Any, Any]]:
    """Abstract ``(params, xs, initial_state)`` per case."""
    out = []
    for case in cases:
        cell = case.make()
        params = jax.eval_shape(lambda c=cell, f=case.features: c.init(jax.random.key(0), f))
        xs = jax.ShapeDtypeStruct((T, B, case.features), case.dtype)
        c0 = jax.eval_shape(lambda p, c=cell: c.initial_state(p, (B,)), params)
        out.append((params, xs, c0))
    return out


def program(cases: tuple[Case, ...]) -> Callable:
    """``fn(args)`` over `arguments`: every case's gradient, and the outputs of those marked
    ``forward``."""
    cells = [case.make() for case in cases]

    def fn(args):
        out = []
        for case, cell, (params, xs, c0) in zip(cases, cells, args, strict=True):
            grads = jax.grad(_loss(case, cell), argnums=(0, 1, 2))(params, xs, c0)
            out.append((_scan(case, cell, params, xs, c0) if case.forward else (), grads))
        return out

    return fn


def kernel_names(cases: tuple[Case, ...]) -> list[str]:
    """The Pallas kernels `program` runs, sorted: per fused case the forward kernel that keeps
    the carries and the backward one (and with ``forward`` the one that keeps none); per
    linear case the scan that keeps its states and the reverse scan (and the plain scan)."""
    names = []
    for case in cases:
        if case.make().linear is not None:
            names += ["rnn_jax_linear_scan"] * (3 if case.forward else 2)
        else:
            names += ["rnn_jax_fused_forward"] * (2 if case.forward else 1)
            names += ["rnn_jax_fused_backward"]
    return sorted(names)


def needs(chip: str):
    """Skips a test when chip ``chip`` cannot be compiled for here, naming what is missing, and
    runs it in the worker of the chip's compiler (``xdist_group``)."""
    reason = aot.missing(chip)
    group = "gpu" if aot.CHIPS[chip].platform == "cuda" else "tpu"
    return [
        pytest.mark.skipif(reason is not None, reason=reason or ""),
        pytest.mark.xdist_group(group),
    ]
