"""The Pallas kernels compiled for TPUs by libtpu's compiler and Mosaic, on a CPU.

Every fused-kernel and linear-scan variant for a TPU v5e, one of each for a
v6e, and a refusal: a block over the VMEM limit is refused by the plan in
words, and the compiler refuses it too.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import budget_grid  # noqa: E402
import compiling  # noqa: E402

import rnn_jax as rj  # noqa: E402
from rnn_jax import aot  # noqa: E402
from rnn_jax.backends.pallas.refusal import Refusal  # noqa: E402

pytestmark = compiling.needs("v5e")


def compiled_kernels(chip: str, cases) -> list[str]:
    compiled = aot.compile_for(chip, compiling.program(cases), compiling.arguments(cases))
    names = aot.tpu_kernels(compiled)
    assert sorted(names) == compiling.kernel_names(cases)
    return names


def test_every_fused_kernel_variant_compiles_for_the_v5e():
    compiled_kernels("v5e", compiling.FUSED)


def test_every_linear_scan_variant_compiles_for_the_v5e():
    compiled_kernels("v5e", compiling.LINEAR)


def test_each_kernel_compiles_for_the_v6e():
    compiled_kernels("v6e", compiling.REPRESENTATIVE)


def test_what_the_compiler_refuses_the_plan_refuses_first_in_words():
    # An LSTM(1024)'s backward in float32: its 16 MiB recurrent block, double-buffered, is over
    # the 16 MiB of VMEM the kernel asks for; with the plan's checks lifted, Mosaic runs out.
    cell = rj.lstm(1024)
    params = jax.eval_shape(lambda: cell.init(jax.random.key(0), 8))
    xs = jax.ShapeDtypeStruct((4, 8, 8), jnp.float32)

    def gradient():  # traced afresh each time
        loss = lambda p, x: jnp.sum(rj.scan(cell, p, x, backend="pallas")[1] ** 2)  # noqa: E731
        return jax.grad(loss)

    with pytest.raises(Refusal, match=r"on TPU .* over the 16384 KB of VMEM the kernel asks for"):
        aot.compile_for("v5e", gradient(), params, xs)
    with budget_grid.checks_lifted(), pytest.raises(Exception, match="vmem"):
        aot.compile_for("v5e", gradient(), params, xs)
