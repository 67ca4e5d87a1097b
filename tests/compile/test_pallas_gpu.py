"""The Pallas kernels compiled for NVIDIA GPUs by XLA's GPU compiler, Triton and ptxas, on a CPU.

Lowering stops before the compilers that decide whether a kernel fits the
chip; these tests compile (``rnn_jax.aot``): every fused-kernel and linear-scan
variant for an H100 (sm_90a), one of each for the H200 and the B200 (sm_100a),
the case whose shared memory the budget model once got wrong, and the
refusals: what the plan refuses in words, the compiler refuses too.
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
from rnn_jax.backends.pallas import targets  # noqa: E402
from rnn_jax.backends.pallas.refusal import Refusal  # noqa: E402

pytestmark = compiling.needs("h100")


def compiled_kernels(chip: str, cases) -> list[aot.Kernel]:
    _, kernels = aot.compile_with_kernels(
        chip, compiling.program(cases), compiling.arguments(cases)
    )
    assert sorted(k.kind for k in kernels) == compiling.kernel_names(cases)
    return kernels


def test_every_fused_kernel_variant_compiles_for_the_h100():
    kernels = compiled_kernels("h100", compiling.FUSED)
    assert all(k.shared_bytes <= 227 * 1024 for k in kernels)
    assert {k.threads for k in kernels} <= {128, 256}  # the planned 4 or 8 warps


def test_every_linear_scan_variant_compiles_for_the_h100():
    compiled_kernels("h100", compiling.LINEAR)


@pytest.mark.parametrize("chip", ["h200", "b200"])
def test_each_kernel_compiles_for_the_h200_and_the_b200(chip):
    compiled_kernels(chip, compiling.REPRESENTATIVE)


def test_the_lstm_96_compiles_within_the_shared_memory_its_plan_expects():
    # An LSTM of 96 units on [333, 5, 40] once asked Triton for 272 KB of shared memory, over
    # the 227 KB of an sm_90 block: the plan held one tile of its recurrent block, Triton all four.
    cell = rj.lstm(96)
    params = jax.eval_shape(lambda: cell.init(jax.random.key(0), 40))
    xs = jax.ShapeDtypeStruct((333, 5, 40), jnp.float32)

    def forward_and_gradient(params, xs):
        loss = lambda p, x: jnp.sum(rj.scan(cell, p, x, backend="pallas")[1] ** 2)  # noqa: E731
        return rj.scan(cell, params, xs, backend="pallas")[1], jax.grad(loss, (0, 1))(params, xs)

    _, kernels = aot.compile_with_kernels("h100", forward_and_gradient, params, xs)
    plan = budget_grid.plan_verdict(budget_grid.Case("lstm", 96), "h100")
    for kernel in kernels:
        kind = "backward" if kernel.kind.endswith("backward") else "forward"
        assert kernel.shared_bytes <= plan[kind]["expected_shared_bytes"], kernel


@pytest.mark.parametrize(
    "case",
    [budget_grid.Case("lstm", 64), budget_grid.Case("lstm", 128, "bfloat16")],
    ids=["resident-f32", "streamed-bf16"],
)
def test_the_plan_expects_at_least_the_shared_memory_the_compiler_asks(case):
    """Two cases of ``benchmarks/budget_grid.py`` (the whole grid's results are committed):
    a float32 block resident (held twice in the backward), a bfloat16 one streamed (whose
    backward reads four tiles at once)."""
    entry = budget_grid.run_case(case, "h100")
    assert entry["agrees"], entry["disagreements"]


def test_what_the_compiler_refuses_the_plan_refuses_first_in_words():
    # Forced to keep an LSTM(96)'s 256 KB float32 recurrent block in shared memory: the plan
    # refuses at lowering; with its checks lifted, the compiler refuses the same program.
    cell, backend = rj.lstm(96), rj.backends.Pallas(weights="resident")
    params = jax.eval_shape(lambda: cell.init(jax.random.key(0), 8))
    xs = jax.ShapeDtypeStruct((7, 5, 8), jnp.float32)
    words = r"would need 272 KB, over the 227 KB of shared memory per block of an H100"
    with pytest.raises(Refusal, match=words):
        aot.compile_for("h100", lambda p, x: rj.scan(cell, p, x, backend=backend)[1], params, xs)
    with budget_grid.checks_lifted(), pytest.raises(Exception) as refused:  # traced afresh
        aot.compile_for("h100", lambda p, x: rj.scan(cell, p, x, backend=backend)[1], params, xs)
    assert aot.compile_error_bytes(refused.value) > targets.GPU.memory_bytes
