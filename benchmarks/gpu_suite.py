"""GPU suite: the Pallas kernels, cuDNN, the parallel scans and Newton on one GPU, in one lease.

One command on a machine with an NVIDIA GPU, nothing to install (``PYTHONPATH=.``
finds ``rnn_jax``; what is missing, such as PyTorch, is skipped and named)::

    PYTHONPATH=. python3 benchmarks/gpu_suite.py --smoke   # each kernel compiled and checked once
    PYTHONPATH=. python3 benchmarks/gpu_suite.py           # every group, within --budget-s
    PYTHONPATH=. python3 benchmarks/gpu_suite.py --plan    # what it would run, and the estimate
    JAX_PLATFORMS=cpu PYTHONPATH=. python benchmarks/gpu_suite.py --compile-only   # no GPU
    PYTHONPATH=. python3 benchmarks/gpu_suite.py --groups loops --cells lstm   # a part again

Groups, in the order they run:

- ``checks``: every Pallas kernel compiled for the GPU (not interpret mode)
  against the ``reference`` backend: the fused kernel's forward and backward
  (LSTM, GRU, Elman, peephole LSTM with projection and layer norm, multi-head
  LSTM and GRU, one in bf16) and the linear-scan kernel (minGRU, LRU with a
  complex state, RG-LRU), with lengths that include a zero, reverse and
  resets, a random initial state; values and gradients (parameters, inputs,
  initial state) of `common.training_loss`, compared by ``|got - want| /
  |want|`` per leaf at ``highest`` matmul precision. Also ``cudnn`` against
  ``reference``. ``--smoke`` runs one check per kernel.
- ``loops``: LSTM and GRU, float32, B=16, I=H=256, T=1,024 and 4,096:
  ``pallas`` (fused kernel), ``sequential``, ``reference`` (plain
  ``lax.scan``, forward), ``cudnn`` (LSTM) and PyTorch's cuDNN layer.
- ``parallel``: minGRU through ``pallas`` (linear-scan kernel), ``parallel``
  and ``sequential``; GRU through ``newton`` and ``sequential``; B=16,
  I=H=256, T=4,096 and 16,384.
- ``heads``: FlashRNN's layouts of a 768-wide layer, (head size, heads) in
  (64, 12), (128, 6), (256, 3), (768, 1), bf16, B=16, T=1,024: LSTM through
  ``pallas``, ``sequential`` and ``reference`` (forward), GRU through
  ``pallas`` and ``reference`` (forward), PyTorch's cuDNN for the dense
  layout; the fused forward's outputs checked against ``reference``'s. The
  dense 768 layout's fused backward does not fit one GPU program (refused
  at lowering, see ``tests/backends/test_pallas_lowering.py``): not timed.

Forward is ``rj.scan``; forward+backward the gradient with respect to the
parameters and the inputs of `common.training_loss` (an MSE against a fixed
random target), for PyTorch alike. Each (backend, mode) is compiled once
(timed: ``compile_s``), then timed interleaved with the others (medians of
``--rounds`` calls after one warm-up). The suite prints its elapsed time per
group and in total, and starts a group or case only when its estimate fits in
what is left of ``--budget-s``.

Results: ``benchmarks/results/gpu_suite-<platform>-<UTC time>.json`` in the
schema of `common`, with the fields ``gpu`` (nvidia-smi), ``gpu_versions``
(CUDA plugin, Triton, PyTorch), ``checks``, ``refused`` (backends whose
``supports`` refused a case, in its words), ``skipped`` (what was missing or
out of time), ``errors``, ``groups`` (per group: elapsed, compiles, timed
calls, estimate), ``targets`` (issue 11's targets against the medians) and
``wall_s``. Each record adds ``case``, ``us_per_step``, ``vs_sequential``
(the ``sequential`` median of the same case and mode over this one) and
``compile_s``.

Before a lease, ``--compile-only`` compiles every program a run would compile for an H100
on any machine with the ``aot`` extra (no GPU: ``rnn_jax.aot``), and writes
``gpu_suite_compile-<platform>-<UTC time>.json`` with each program's compile seconds, its
kernels (shared memory, threads) or its refusal; a program that does not compile shows there.
cuDNN's cannot be traced without a GPU (``NO_DEVICELESS``).

Estimate on an H200 (``--plan``): the compile seconds of the newest ``--compile-only`` file
(``--compile-times`` names another), `UNIT_COSTS` for what it lacks and for the timed calls.
From ``gpu_suite_compile-cpu-20261207T022803Z.json``, measured on the shared 2-core CPU under
load (1-minute load average 5 to 9), an upper bound for a quiet 16-core host::

    group      compiles   timed calls   estimated s
    checks           11             0           377
    loops            24           224           517
    parallel         22           140           176
    heads            30           231           170
    in all, with 15 s to start: about 1255 s; --smoke: 6 compiles, about 172 s

During a run, the budget scales the recorded compile times by how this machine's compiles
compare with them so far (`Suite.costs`). A group or case starts only when its estimate fits
in what is left of ``--budget-s`` (360 s; 85 s with ``--smoke``), so a slower machine ends
after the budget and at most one case, with its JSON written and what it skipped named.

On a CPU the suite refuses to run unless ``--allow-cpu``, which runs the
same cases at tiny shapes (the Pallas kernels in interpret mode) to test the
script itself; its results are marked ``quick``, as ``--smoke`` ones are.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

try:
    from benchmarks import common
except ImportError:  # run as ``python benchmarks/gpu_suite.py``
    import common

import rnn_jax as rj

GROUPS = ("checks", "loops", "parallel", "heads")
FLASHRNN_HEADS = ((64, 12), (128, 6), (256, 3), (768, 1))
GPU_PACKAGES = (
    "jax-cuda13-plugin",
    "jax-cuda13-pjrt",
    "jax-cuda12-plugin",
    "jax-cuda12-pjrt",
    "triton",
    "torch",
)
# The largest relative error of a leaf, |got - want| / |want|: float32 at "highest" precision;
# bf16 operands; and the timed shapes' forward outputs at the default precision, where float32
# dots may run in TF32 (about 3e-4 each) on both sides over a thousand steps.
TOLERANCE = {"float32": 1e-4, "bfloat16": 2e-2, "float32-default": 3e-3}
WARMUP = 1  # calls after the compiling one, before timing
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}

# Assumed costs on an H200 for the estimate, until a run's ``groups`` field replaces them: a
# compile (Pallas: tracing the tiled bodies and lowering them to Triton IR, measured at 0.6 to
# 3.1 s per program on a loaded 2-core CPU with jax.export for "cuda", then Triton's and XLA's
# compiles, assumed), and a step of a time loop (``reference``, ``sequential``) or of a fused
# kernel (``pallas``, cuDNN), in microseconds; ``parallel`` and ``newton`` take a time-loop
# step per 16 steps.
UNIT_COSTS = {
    "compile_s": {"pallas": 5.0, "check": 6.0, "other": 2.0},
    "step_us": {"loop": 12.0, "fused": 4.0, "parallel": 0.75},
    "backward_factor": 3.0,
    "start_s": 15.0,  # importing JAX and PyTorch, starting the GPU client
}


# ----------------------------------------------------------------------------- what it runs


class Check(NamedTuple):
    """One kernel against ``reference`` on a small problem (``smoke``: in ``--smoke``)."""

    label: str
    make: Callable[[], rj.Cell]
    backend: str = "pallas"
    dtype: str = "float32"
    lengths: bool = False  # lengths, one of them zero
    reverse: bool = False
    resets: bool = False
    smoke: bool = False


CHECKS = (
    Check("lstm", lambda: rj.lstm(32), lengths=True, smoke=True),
    Check("gru", lambda: rj.gru(48), lengths=True, reverse=True, smoke=True),
    Check("simple", lambda: rj.simple(32), resets=True),
    Check(
        "lstm_peephole_proj_norm",
        lambda: rj.lstm(32, peephole=True, proj_size=16, layer_norm=True),
        lengths=True,
        reverse=True,
    ),
    Check(
        "multihead_lstm", lambda: rj.multihead_lstm(64, 4), lengths=True, resets=True, smoke=True
    ),
    Check("multihead_gru", lambda: rj.multihead_gru(96, 3), reverse=True),
    Check(
        "multihead_lstm_bf16",
        lambda: rj.multihead_lstm(128, 2, dtype=jnp.bfloat16),
        dtype="bfloat16",
        lengths=True,
    ),
    Check("min_gru", lambda: rj.min_gru(32), lengths=True, resets=True, smoke=True),
    Check("lru", lambda: rj.lru(32), reverse=True, smoke=True),  # a complex state
    Check("rg_lru", lambda: rj.rg_lru(40), lengths=True),
    Check("lstm", lambda: rj.lstm(32), backend="cudnn", lengths=True, reverse=True, smoke=True),
)
CHECK_SHAPE = {"gpu": (37, 5, 16), "tiny": (7, 3, 8)}  # T, B, input features


class Case(NamedTuple):
    """One timed case: a cell at one shape, the backends timed per mode, a PyTorch peer."""

    group: str
    cell: str
    shape: common.Shape
    dtype: str
    forward: tuple[str, ...]
    backward: tuple[str, ...]
    heads: tuple[int, int] | None = None  # (head size, heads): the multi-head cell
    torch: bool = False  # PyTorch's cuDNN layer of the same cell

    @property
    def label(self) -> str:
        """The case's name, the same at every size (``--allow-cpu`` shrinks the shapes)."""
        layout = f" {self.heads[0]}x{self.heads[1]}" if self.heads else ""
        return f"{self.group} {self.cell}{layout} {self.dtype} T{self.shape.T}"

    def modes(self) -> dict[str, tuple[str, ...]]:
        return {"forward": self.forward, "forward_backward": self.backward}

    def tiny(self) -> Case:
        """The same case at a size a CPU interprets quickly."""
        B, T, I, H = self.shape  # noqa: E741
        heads = None if self.heads is None else (self.heads[0] // 16, self.heads[1])
        return self._replace(shape=common.Shape(2, max(4, T // 256), I // 16, H // 16), heads=heads)


def plan() -> dict[str, list[Case]]:
    """The timed groups' cases at their GPU shapes."""
    f32, bf16 = "float32", "bfloat16"
    loops, parallel, heads = [], [], []
    for T in (1024, 4096):
        shape = common.Shape(16, T, 256, 256)
        fused_and_loops = ("pallas", "sequential")
        loops += [
            Case("loops", "lstm", shape, f32, forward=(*fused_and_loops, "reference", "cudnn"),
                 backward=(*fused_and_loops, "cudnn"), torch=True),
            Case("loops", "gru", shape, f32, forward=(*fused_and_loops, "reference"),
                 backward=fused_and_loops, torch=True),
        ]  # fmt: skip
    for T in (4096, 16384):
        shape = common.Shape(16, T, 256, 256)
        linear, newton = ("pallas", "parallel", "sequential"), ("newton", "sequential")
        parallel += [
            Case("parallel", "min_gru", shape, f32, forward=linear, backward=linear),
            Case("parallel", "gru", shape, f32, forward=newton, backward=newton),
        ]
    shape = common.Shape(16, 1024, 768, 768)
    for layout in FLASHRNN_HEADS:
        dense = layout[1] == 1  # its fused backward does not fit one program: not timed
        heads += [
            Case("heads", "lstm", shape, bf16, forward=("pallas", "sequential", "reference"),
                 backward=("sequential",) if dense else ("pallas", "sequential"),
                 heads=layout, torch=dense),
            Case("heads", "gru", shape, bf16, forward=("pallas", "reference"),
                 backward=() if dense else ("pallas",), heads=layout, torch=dense),
        ]  # fmt: skip
    return {"loops": loops, "parallel": parallel, "heads": heads}


def chosen_checks(smoke: bool, cells: tuple[str, ...] | None) -> list[Check]:
    """The checks a run takes: all, those marked ``smoke``, of the ``cells`` (labels) only."""
    return [c for c in CHECKS if (c.smoke or not smoke) and (cells is None or c.label in cells)]


def chosen_cases(group: str, smoke: bool, cells: tuple[str, ...] | None) -> list[Case]:
    """The cases of a timed group a run takes: all, or the first with ``--smoke``, of the
    ``cells`` only."""
    cases = [c for c in plan()[group] if cells is None or c.cell in cells]
    return cases[:1] if smoke else cases


def compiled(cell, backend: str, mode: str, params, xs, compiler_options=None):
    """A jitted function of ``(params, xs)``: the scan's ``(carry, ys)``, or the gradient of
    `common.training_loss` of ``ys`` with respect to both."""
    if mode == "forward":
        fn = lambda p, x: rj.scan(cell, p, x, backend=backend)  # noqa: E731
    else:
        apply = lambda p, x: rj.scan(cell, p, x, backend=backend)[1]  # noqa: E731
        fn = jax.grad(common.training_loss(apply, params, xs), argnums=(0, 1))
    return jax.jit(fn, compiler_options=compiler_options)


def make_cell(case: Case) -> rj.Cell:
    dtype = jnp.dtype(case.dtype)
    if case.heads is None or case.heads[1] == 1:
        return getattr(rj, case.cell)(case.shape.H, dtype=dtype)
    return getattr(rj, f"multihead_{case.cell}")(case.shape.H, case.heads[1], dtype=dtype)


def record_cell(case: Case, cell: rj.Cell) -> str:
    """The cell as records name it: multi-head layouts apart, so that ``auto``'s table (keyed
    by cell name and shape) never mixes them."""
    if case.heads is None or case.heads[1] == 1:
        return cell.name
    return f"{cell.name}[{case.heads[0]}x{case.heads[1]}]"


# ----------------------------------------------------------------------------- the estimate


def timed_runs(case: Case) -> list[tuple[str, str]]:
    """``(mode, who)`` of everything ``case`` times: its backends and, with them, PyTorch's."""
    runs = []
    for mode, backends in case.modes().items():
        if backends:
            runs += [(mode, name) for name in (*backends, *(("torch",) if case.torch else ()))]
    return runs


def compiles_of(case: Case) -> int:
    """JAX programs ``case`` compiles: one per backend and mode, and Newton's iteration count."""
    return sum(who != "torch" for _, who in timed_runs(case)) + ("newton" in case.forward)


def timed_calls(runs: int, rounds: int) -> int:
    """Calls of ``runs`` compiled functions: the compiling one, the warm-up, the timed rounds."""
    return runs * (1 + WARMUP + rounds)


STEP_KIND = {"pallas": "fused", "cudnn": "fused", "torch": "fused"}
STEP_KIND.update(parallel="parallel", newton="parallel")


def program_key(group: str, label: str, backend: str, mode: str) -> str:
    """How the compile times of ``--compile-only`` name a program: ``group|label|backend|mode``
    (mode ``check``, ``forward``, ``forward_backward`` or ``iterations``, Newton's count)."""
    return f"{group}|{label}|{backend}|{mode}"


def compile_cost(costs: dict[str, float], key: str, kind: str) -> float:
    """A program's compile seconds: measured by ``--compile-only`` where ``costs`` has it,
    else `UNIT_COSTS`' assumption of its ``kind``."""
    return costs.get(key, UNIT_COSTS["compile_s"][kind])


def case_estimate(case: Case, rounds: int, costs: dict[str, float] | None = None) -> float:
    """Seconds ``case`` is expected to take on an H200: its compiles (measured, ``costs``, or
    assumed) and its timed calls (`UNIT_COSTS`)."""
    costs, step_us = costs or {}, UNIT_COSTS["step_us"]
    total = 0.0
    for mode, who in timed_runs(case):
        factor = UNIT_COSTS["backward_factor"] if mode == "forward_backward" else 1.0
        per_call = case.shape.T * step_us[STEP_KIND.get(who, "loop")] * factor * 1e-6
        total += timed_calls(1, rounds) * per_call
        if who != "torch":
            key = program_key(case.group, case.label, who, mode)
            total += compile_cost(costs, key, "pallas" if who == "pallas" else "other")
    if "newton" in case.forward:
        key = program_key(case.group, case.label, "newton", "iterations")
        total += compile_cost(costs, key, "other")
    return total


def check_estimate(check: Check, costs: dict[str, float] | None = None) -> float:
    key = program_key("checks", check.label, check.backend, "check")
    return compile_cost(costs or {}, key, "check")


def estimates(rounds: int, smoke: bool, cells=None, costs=None) -> dict[str, dict[str, float]]:
    """Per group: compiles, timed calls and estimated seconds of what the suite would run."""
    out = {}
    checks = chosen_checks(smoke, cells)
    out["checks"] = {
        "compiles": len(checks),
        "timed_calls": 0,
        "estimated_s": sum(check_estimate(c, costs) for c in checks),
    }
    for group in plan():
        cases = chosen_cases(group, smoke, cells)
        runs = sum(len(timed_runs(c)) for c in cases)
        out[group] = {
            "compiles": sum(compiles_of(c) for c in cases),
            "timed_calls": timed_calls(runs, rounds),
            "estimated_s": sum(case_estimate(c, rounds, costs) for c in cases),
        }
    return out


# ----------------------------------------------------------------------------- checks


def real_view(tree):
    """Complex leaves as their real and imaginary parts (a loss and the errors need reals)."""

    def split(x):
        return jnp.stack([jnp.real(x), jnp.imag(x)]) if jnp.iscomplexobj(x) else x

    return jax.tree.map(split, tree)


def relative_error(got, want) -> float:
    """The largest ``|got - want| / |want|`` (Frobenius norms) over the leaves; inf for a
    non-finite value."""
    worst = 0.0
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        a, b = (
            np.asarray(real_view(jnp.asarray(x)).astype(jnp.float32), np.float64) for x in (a, b)
        )
        if not np.all(np.isfinite(a)):
            return float("inf")
        scale = float(np.linalg.norm(b))
        worst = max(worst, float(np.linalg.norm(a - b)) / (scale if scale > 0 else 1.0))
    return worst


def check_arrays(check: Check, cell, T: int, B: int, F: int, seed: int):
    """Fresh random inputs for one check: params, xs, initial state and the scan's arrays."""
    k_params, k_xs, k_state, k_resets = jax.random.split(jax.random.key(seed), 4)
    params = cell.init(k_params, F)
    xs = jax.random.normal(k_xs, (T, B, F), jnp.dtype(check.dtype))
    zeros = cell.initial_state(params, (B,))
    state_keys = jax.random.split(k_state, len(jax.tree.leaves(zeros)))
    c0 = jax.tree.unflatten(
        jax.tree.structure(zeros),
        [
            0.5 * jax.random.normal(k, z.shape, z.dtype)
            for k, z in zip(state_keys, jax.tree.leaves(zeros), strict=True)
        ],
    )
    arrays = {}
    if check.lengths:
        lengths = np.random.default_rng(seed).integers(1, T + 1, B)
        lengths[min(1, B - 1)] = 0
        arrays["length"] = jnp.asarray(lengths)
    if check.resets:
        arrays["resets"] = jax.random.bernoulli(k_resets, 0.2, (T, B))
    return params, xs, c0, arrays


def values_and_gradients(cell, backend, reverse, arrays, params, xs, c0):
    """``(outputs, gradients)``: the scan's (carry, ys) and the gradient of
    `common.training_loss` of them with respect to params, inputs and initial state, from
    one forward pass (the one that keeps what the backward reads)."""

    def apply(p, x, c):
        out = rj.scan(cell, p, x, initial_state=c, reverse=reverse, backend=backend, **arrays)
        return real_view(out)

    mse = common.training_loss(lambda out: out, jax.eval_shape(apply, params, xs, c0))

    def loss(p, x, c):
        out = apply(p, x, c)
        return mse(out), out

    (_, out), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(params, xs, c0)
    return out, grads


def check_program(check: Check, cell, arrays: dict[str, Any]) -> Callable:
    """``both(params, xs, c0)``: the check's backend and ``reference``, values and gradients,
    in one program (run at ``highest`` matmul precision)."""

    def both(p, x, c):
        return tuple(
            values_and_gradients(cell, b, check.reverse, arrays, p, x, c)
            for b in (check.backend, "reference")
        )

    return both


def refusal(name: str, cell, params, xs, **arrays) -> str | None:
    """The backend's own words for not running this case, or None."""
    reverse = arrays.pop("reverse", False)
    problem = rj.backends.problem.describe(
        cell, params, xs, reverse=reverse, gradient=True, **arrays
    )
    return rj.backends.contract.refusal(rj.backends.get(name), cell, problem)


# ----------------------------------------------------------------------------- the suite


class Suite:
    def __init__(self, args):
        self.args = args
        self.tiny = args.allow_cpu
        self.rounds = args.rounds
        self.recorded = args.costs  # compile seconds per program from ``--compile-only``
        self.timed_compiles = [0.0, 0.0]  # recorded and taken seconds of this run's compiles
        self.started = time.perf_counter()
        self.records: list[dict[str, Any]] = []
        self.checks: list[dict[str, Any]] = []
        self.refused: list[dict[str, Any]] = []
        self.skipped: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.groups: list[dict[str, Any]] = []
        self.compiles = 0
        self.calls = 0
        self.torch = self.find_torch()
        # A CPU interprets the kernels to test the script: XLA's optimisations of the
        # interpreted loops would cost most of its compile time and prove nothing.
        self.compiler_options = FAST_COMPILE if self.tiny else None

    def chosen_checks(self) -> list[Check]:
        return chosen_checks(self.args.smoke, self.args.cells)

    def chosen_cases(self, group: str) -> list[Case]:
        return chosen_cases(group, self.args.smoke, self.args.cells)

    # ------------------------------------------------------------------ bookkeeping

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def left(self) -> float:
        return self.args.budget_s - self.elapsed()

    def costs(self) -> dict[str, float]:
        """The recorded compile seconds, scaled by how fast this machine has compiled so far
        against them (the record may come from a slower or busier host)."""
        recorded, taken = self.timed_compiles
        scale = taken / recorded if recorded else 1.0
        return {key: seconds * scale for key, seconds in self.recorded.items()}

    def compiled(self, key: str, seconds: float) -> None:
        """Notes a program's compile (and first call) time against its record."""
        if key in self.recorded:
            self.timed_compiles[0] += self.recorded[key]
            self.timed_compiles[1] += seconds

    def skip(self, what: str, reason: str) -> None:
        self.skipped.append({"what": what, "reason": reason})
        print(f"  skipped {what}: {reason}", flush=True)

    def error(self, case: dict[str, Any], exc: BaseException) -> None:
        message = f"{type(exc).__name__}: {exc}"
        self.errors.append({**case, "error": message[:2000]})
        print(f"  ERROR {case}: {message[:300]}", flush=True)

    def find_torch(self):
        """PyTorch on a CUDA device, or None (what is missing is recorded as skipped)."""
        if self.tiny:
            self.skip("torch", "--allow-cpu times no peers")
            return None
        try:
            import torch
        except ImportError:
            self.skip("torch", "PyTorch is not installed")
            return None
        if not torch.cuda.is_available():
            self.skip("torch", "PyTorch sees no CUDA device")
            return None
        return torch

    def run_group(self, group: str, estimate: float) -> None:
        if group == "checks":
            checks = self.chosen_checks()
            first = check_estimate(checks[0], self.costs()) if checks else None
        else:
            cases = self.chosen_cases(group)
            first = case_estimate(cases[0], self.rounds, self.costs()) if cases else None
        if first is None:
            self.skip(group, f"it has no check or case of the cells {self.args.cells}")
            return
        if first > self.left():
            self.skip(
                group,
                f"{self.left():.0f} s of the budget left, its first case needs ~{first:.0f} s",
            )
            return
        start, compiles, calls = time.perf_counter(), self.compiles, self.calls
        print(f"{group} (estimated {estimate:.0f} s)", flush=True)
        try:
            self.checks_group() if group == "checks" else self.timed_group(group)
        except Exception as exc:  # noqa: BLE001  (recorded, the suite goes on)
            traceback.print_exc()
            self.error({"group": group}, exc)
        elapsed = time.perf_counter() - start
        self.groups.append(
            {
                "group": group,
                "elapsed_s": round(elapsed, 1),
                "compiles": self.compiles - compiles,
                "timed_calls": self.calls - calls,
                "estimated_s": round(estimate, 1),
            }
        )
        print(
            f"{group}: {elapsed:.1f} s elapsed (estimated {estimate:.0f} s), "
            f"{self.compiles - compiles} compiles, {self.calls - calls} timed calls; "
            f"{self.elapsed():.1f} s in all",
            flush=True,
        )

    # ------------------------------------------------------------------ checks

    def checks_group(self) -> None:
        T, B, F = CHECK_SHAPE["tiny" if self.tiny else "gpu"]
        for seed, check in enumerate(CHECKS):
            if check not in self.chosen_checks():
                continue
            if check_estimate(check, self.costs()) > self.left():
                self.skip(f"check {check.label} {check.backend}", "out of time")
                continue
            self.run_check(check, T, B, F, seed)

    def run_check(self, check: Check, T: int, B: int, F: int, seed: int) -> None:
        cell = check.make()
        params, xs, c0, arrays = check_arrays(check, cell, T, B, F, seed)
        what = {
            "cell": check.label,
            "backend": check.backend,
            "against": "reference",
            "T": T,
            "B": B,
            "F": F,
            "dtype": check.dtype,
            "lengths": check.lengths,
            "reverse": check.reverse,
            "resets": check.resets,
        }
        reason = refusal(
            check.backend, cell, params, xs, initial_state=c0, reverse=check.reverse, **arrays
        )
        if reason:
            self.refused.append({**what, "reason": reason})
            print(f"  {check.label:>24} {check.backend:>7} refused: {reason}", flush=True)
            return

        both = check_program(check, cell, arrays)
        start = time.perf_counter()
        try:
            # Full float32 matmuls on both sides (no TF32), so that the check measures the
            # kernels, not the matmul precision.
            with jax.default_matmul_precision("highest"):
                (got_v, got_g), (want_v, want_g) = jax.jit(
                    both, compiler_options=self.compiler_options
                )(params, xs, c0)
        except Exception as exc:  # noqa: BLE001  (recorded, the suite goes on)
            self.error(what, exc)
            return
        self.compiles += 1
        self.compiled(
            program_key("checks", check.label, check.backend, "check"), time.perf_counter() - start
        )
        ev, eg = relative_error(got_v, want_v), relative_error(got_g, want_g)
        tolerance = TOLERANCE[check.dtype]
        ok = ev <= tolerance and eg <= tolerance
        self.checks.append(
            {
                **what,
                "precision": "highest",
                "rel_err": ev,
                "rel_err_grad": eg,
                "tolerance": tolerance,
                "ok": ok,
                "compile_s": round(time.perf_counter() - start, 2),
            }
        )
        print(
            f"  {check.label:>24} {check.backend:>7} lengths={check.lengths!s:5} "
            f"reverse={check.reverse!s:5} resets={check.resets!s:5} values {ev:.1e} "
            f"grads {eg:.1e} {'ok' if ok else 'FAIL'}",
            flush=True,
        )

    # ------------------------------------------------------------------ timed groups

    def timed_group(self, group: str) -> None:
        for case in self.chosen_cases(group):
            need = case_estimate(case, self.rounds, self.costs())
            if need > self.left():
                self.skip(case.label, f"{self.left():.0f} s left, it needs ~{need:.0f} s")
                continue
            run = case.tiny() if self.tiny else case
            print(f" {case.label} ({run.shape.label})", flush=True)
            self.measure(run, case.label)

    def measure(self, case: Case, label: str) -> None:
        cell = make_cell(case)
        dtype = jnp.dtype(case.dtype)
        params = cell.init(jax.random.key(0), case.shape.I)
        xs = jax.random.normal(jax.random.key(1), (case.shape.T, case.shape.B, case.shape.I), dtype)
        extra = self.newton_iterations(case, cell, params, xs)
        forward_outputs = {}
        for mode, backends in case.modes().items():
            if not backends:
                continue
            runs, compile_s = {}, {}
            for name in backends:
                where = {"case": label, "backend": name, "mode": mode}
                reason = refusal(name, cell, params, xs)
                if reason:
                    self.refused.append({**where, "reason": reason})
                    print(f"  {name:>12}: refused: {reason}", flush=True)
                    continue
                fn = compiled(cell, name, mode, params, xs, self.compiler_options)
                run = common.blocking(fn, params, xs)
                start = time.perf_counter()
                try:
                    out = run()
                except Exception as exc:  # noqa: BLE001  (recorded, the suite goes on)
                    self.error(where, exc)
                    continue
                compile_s[name] = time.perf_counter() - start
                self.compiled(program_key(case.group, label, name, mode), compile_s[name])
                self.compiles += 1
                runs[name] = run
                if mode == "forward":
                    forward_outputs[name] = out[1]
            if self.torch is not None and case.torch:
                try:
                    runs["torch"] = self.torch_run(case, mode)
                except Exception as exc:  # noqa: BLE001  (recorded, the suite goes on)
                    self.error({"case": label, "library": "torch", "mode": mode}, exc)
            if not runs:
                continue
            stats = common.interleaved(
                runs,
                rounds=self.rounds,
                per_round=1,
                warmup=WARMUP,
                budget_s=self.args.case_budget_s,
            )
            self.calls += timed_calls(len(runs), self.rounds)
            for name, st in stats.items():
                who = (
                    {"library": "torch", "implementation": "cudnn"}
                    if name == "torch"
                    else {"backend": name}
                )
                rec = common.record(
                    cell=record_cell(case, cell),
                    shape=case.shape,
                    dtype=case.dtype,
                    mode=mode,
                    stats=st,
                    case=label,
                    precision="default",
                    **who,
                    **extra.get(name, {}),
                )
                if name in compile_s:
                    rec["compile_s"] = round(compile_s[name], 2)
                if case.heads is not None:
                    rec.update(head_size=case.heads[0], num_heads=case.heads[1])
                if name == "torch":
                    rec["cudnn"] = self.torch.backends.cudnn.version()
                self.records.append(rec)
                print(f"  {name:>12}: {st.median_s * 1e3:10.3f} ms ({mode})", flush=True)
        self.forward_check(case, label, forward_outputs)

    def forward_check(self, case: Case, label: str, outputs: dict[str, Any]) -> None:
        """The fused kernel's forward outputs at the timed shape against ``reference``'s."""
        if "pallas" not in outputs or "reference" not in outputs:
            return
        err = relative_error(outputs["pallas"], outputs["reference"])
        tolerance = TOLERANCE[case.dtype if case.dtype == "bfloat16" else "float32-default"]
        ok = err <= tolerance
        self.checks.append(
            {
                "case": label,
                "cell": case.cell,
                "backend": "pallas",
                "against": "reference",
                **case.shape._asdict(),
                "dtype": case.dtype,
                "precision": "default",
                "rel_err": err,
                "tolerance": tolerance,
                "ok": ok,
            }
        )
        print(f"  pallas forward against reference: {err:.1e} {'ok' if ok else 'FAIL'}", flush=True)

    def newton_iterations(self, case: Case, cell, params, xs) -> dict[str, dict[str, Any]]:
        if "newton" not in case.forward:
            return {}
        try:
            info = jax.jit(lambda p, x: rj.newton_scan(cell, p, x)[2])(params, xs)
        except Exception as exc:  # noqa: BLE001  (recorded, the suite goes on)
            self.error({"case": case.label, "backend": "newton", "iterations": None}, exc)
            return {}
        self.compiles += 1
        print(f"  newton: {int(info.iterations)} iterations, converged={bool(info.converged)}")
        return {"newton": {"iterations": int(info.iterations), "converged": bool(info.converged)}}

    def torch_run(self, case: Case, mode: str) -> Callable[[], None]:
        """A blocking call of PyTorch's cuDNN layer on the case's shape: forward, or the
        gradient of the same MSE with respect to its parameters and inputs."""
        torch = self.torch
        B, T, I, H = case.shape  # noqa: E741
        dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32}[case.dtype]
        layer = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[case.cell]
        net = layer(I, H).to(device="cuda", dtype=dtype)
        generator = torch.Generator(device="cuda").manual_seed(0)
        x = torch.randn(T, B, I, device="cuda", dtype=dtype, generator=generator)
        target = torch.randn(T, B, H, device="cuda", dtype=torch.float32, generator=generator)
        x.requires_grad_(mode == "forward_backward")
        wrt = [x, *net.parameters()]

        def forward():
            with torch.no_grad():
                net(x)
            torch.cuda.synchronize()

        def forward_backward():
            ys, _ = net(x)
            torch.autograd.grad(((ys.float() - target) ** 2).mean(), wrt)
            torch.cuda.synchronize()

        run = forward if mode == "forward" else forward_backward
        run()  # as the JAX cases' compiling call: cuDNN's plan and buffers, outside the timing
        return run


# ----------------------------------------------------------------------------- compile only

COMPILE_CHIP = "h100"
COMPILE_SUITE = "gpu_suite_compile"
# cuDNN's LSTM cannot be traced without a GPU: jax.experimental.rnn asks cuDNN for its
# workspace sizes while tracing, and cudnnCreate needs a device (CUDNN_STATUS_NOT_INITIALIZED).
NO_DEVICELESS = {
    "cudnn": "jax.experimental.rnn asks cuDNN for its workspace while tracing, "
    "which needs a GPU (cudnnCreate: CUDNN_STATUS_NOT_INITIALIZED)"
}


def _check_build(check: Check, seed: int):
    T, B, F = CHECK_SHAPE["gpu"]
    cell = check.make()
    params, xs, c0, arrays = check_arrays(check, cell, T, B, F, seed)
    return check_program(check, cell, arrays), (params, xs, c0)


def _case_arguments(case: Case):
    cell = make_cell(case)
    params = jax.eval_shape(lambda: cell.init(jax.random.key(0), case.shape.I))
    xs = jax.ShapeDtypeStruct((case.shape.T, case.shape.B, case.shape.I), jnp.dtype(case.dtype))
    return cell, params, xs


def _case_build(case: Case, backend: str, mode: str):
    cell, params, xs = _case_arguments(case)
    return compiled(cell, backend, mode, params, xs), (params, xs)


def _newton_build(case: Case):
    cell, params, xs = _case_arguments(case)
    return (lambda p, x: rj.newton_scan(cell, p, x)[2]), (params, xs)


def suite_programs(groups, smoke: bool, cells) -> list[tuple[tuple[str, str, str, str], Callable]]:
    """Every JAX program a run of ``groups`` would compile, as ``((group, label, backend,
    mode), build)`` with ``build() -> (fn, args)`` at the GPU shapes."""
    out = []
    chosen = chosen_checks(smoke, cells) if "checks" in groups else []
    for seed, check in enumerate(CHECKS):
        if check in chosen:
            where = ("checks", check.label, check.backend, "check")
            out.append((where, lambda c=check, s=seed: _check_build(c, s)))
    for group in [g for g in plan() if g in groups]:
        for case in chosen_cases(group, smoke, cells):
            for mode, who in timed_runs(case):
                if who != "torch":
                    build = lambda c=case, w=who, m=mode: _case_build(c, w, m)  # noqa: E731
                    out.append(((group, case.label, who, mode), build))
            if "newton" in case.forward:
                where = (group, case.label, "newton", "iterations")
                out.append((where, lambda c=case: _newton_build(c)))
    return out


def compile_program(where: tuple[str, str, str, str], build: Callable) -> dict[str, Any]:
    """One program compiled for the H100 on this machine: seconds, kernels, or why not."""
    from rnn_jax import aot
    from rnn_jax.backends.pallas.refusal import Refusal

    group, label, backend, mode = where
    entry = {"group": group, "label": label, "backend": backend, "mode": mode}
    entry["key"] = program_key(*where)
    if backend in NO_DEVICELESS:
        return {**entry, "skipped": NO_DEVICELESS[backend]}
    start = time.perf_counter()
    try:
        fn, args = build()
        precision = "highest" if mode == "check" else None
        with jax.default_matmul_precision(precision):
            _, kernels = aot.compile_with_kernels(COMPILE_CHIP, fn, *args)
    except Refusal as refusal:
        return {**entry, "refused": str(refusal)}
    except Exception as exc:  # noqa: BLE001  (recorded: the point is to find it here)
        return {**entry, "error": f"{type(exc).__name__}: {exc}"[:2000]}
    entry["compile_s"] = round(time.perf_counter() - start, 2)
    entry["kernels"] = [k._asdict() for k in kernels]
    return entry


def compile_only(args, groups) -> int:
    """``--compile-only``: every program of the run compiled for an H100 here (deviceless);
    writes ``gpu_suite_compile-cpu-<time>.json`` with each one's compile seconds, kernels
    (shared memory, threads) or refusal, which ``--plan`` and the budget then use."""
    entries = []
    started = time.perf_counter()
    for where, build in suite_programs(groups, args.smoke, args.cells):
        entry = compile_program(where, build)
        entries.append(entry)
        outcome = entry.get("compile_s", "")
        outcome = outcome or next(entry[k] for k in ("refused", "skipped", "error") if k in entry)
        print(f"  {entry['key']}: {str(outcome)[:160]}", flush=True)
    path = common.write_results(
        COMPILE_SUITE,
        [],
        machine=common.machine_info(),
        quick=args.smoke,
        directory=args.out,
        chip=COMPILE_CHIP,
        programs=entries,
        wall_s=round(time.perf_counter() - started, 1),
    )
    errors = [e for e in entries if "error" in e]
    print(f"wrote {path}: {len(entries)} programs, {len(errors)} errors")
    return 1 if errors else 0


def load_compile_costs(path: Path | None, directory: Path) -> tuple[dict[str, float], str]:
    """Compile seconds per program from a ``--compile-only`` results file (``path``, else the
    newest full one in ``directory``), and where they came from ("" if none)."""
    if path is None:
        found = sorted(directory.glob(f"{COMPILE_SUITE}-*.json"))
        found = [p for p in found if not p.name.endswith("-quick.json")]
        if not found:
            return {}, ""
        path = found[-1]
    doc = json.loads(Path(path).read_text())
    costs = {e["key"]: e["compile_s"] for e in doc["programs"] if "compile_s" in e}
    return costs, str(path)


# ----------------------------------------------------------------------------- report


def annotate(records: list[dict[str, Any]]) -> None:
    """Adds ``us_per_step`` and ``vs_sequential`` (the ``sequential`` median of the same case
    and mode over this record's) to every record."""
    sequential = {
        (r["case"], r["mode"]): r["median_s"] for r in records if r.get("backend") == "sequential"
    }
    for r in records:
        r["us_per_step"] = r["median_s"] / r["T"] * 1e6
        base = sequential.get((r["case"], r["mode"]))
        if base is not None:
            r["vs_sequential"] = base / r["median_s"]


PEERS = {"torch": "PyTorch's cuDNN layer", "cudnn": "the cudnn backend"}
PARALLEL_TARGET = "parallel min_gru float32 T4096"
NEWTON_TARGET = "parallel gru float32 T16384"


def targets(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 11's targets against the medians of records `annotate` has annotated: each
    ``value`` against its ``goal`` (at least it; for microseconds per step, at most)."""
    by = {(r["case"], r["mode"], r.get("backend") or r.get("library")): r for r in records}
    out = []

    def add(target, key, value, goal, at_most=False):
        case, mode, _ = key
        reached = value <= goal if at_most else value >= goal
        out.append(
            {"target": target, "case": case, "mode": mode, "value": value, "goal": goal}
            | {"reached": reached}
        )

    for key, r in sorted(by.items()):
        case, mode, who = key
        fused = who == "pallas" and r["cell"] in ("lstm", "gru")
        for peer, name in PEERS.items():
            other = by.get((case, mode, peer))
            if fused and other is not None:
                add(f"pallas / {name}: throughput", key, other["median_s"] / r["median_s"], 1.0)
        if fused and case.startswith("loops") and mode == "forward":
            add("pallas: microseconds per step", key, r["us_per_step"], 2.0, at_most=True)
        if who == "parallel" and case == PARALLEL_TARGET:
            add("parallel / sequential: speed-up", key, r["vs_sequential"], 100.0)
        if who == "newton" and case == NEWTON_TARGET:
            add("newton / sequential: speed-up", key, r["vs_sequential"], 20.0)
    return out


def nvidia_smi() -> dict[str, str]:
    """The GPU as nvidia-smi names it (clocks as found: the suite changes no setting)."""
    fields = "name,driver_version,memory.total,clocks.sm,clocks.mem,clocks.max.sm"
    try:
        line = subprocess.run(
            ["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout.splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return {}
    return dict(zip(fields.split(","), (v.strip() for v in line.split(",")), strict=False))


def print_table(records, checks, target_rows) -> None:
    rows = [
        [
            r["case"],
            r["mode"],
            r.get("backend") or r.get("library"),
            r["median_s"] * 1e3,
            r["us_per_step"],
            r.get("vs_sequential"),
        ]
        for r in records
    ]
    print(common.markdown_table(["case", "mode", "who", "ms", "us/step", "vs sequential"], rows))
    failed = [c for c in checks if not c["ok"]]
    print(
        f"checks: {len(checks) - len(failed)} of {len(checks)} within tolerance against reference"
    )
    for c in failed:
        print(f"  FAIL {c}")
    for t in target_rows:
        verdict = "reached" if t["reached"] else "missed"
        print(
            f"target {t['target']}: {t['case']} {t['mode']}: "
            f"{t['value']:.3g} (goal {t['goal']:g}) {verdict}"
        )


def print_plan(table: dict[str, dict[str, float]], source: str = "") -> None:
    rows = [
        [g, int(e["compiles"]), int(e["timed_calls"]), e["estimated_s"]] for g, e in table.items()
    ]
    total = UNIT_COSTS["start_s"] + sum(e["estimated_s"] for e in table.values())
    print(common.markdown_table(["group", "compiles", "timed calls", "estimated s"], rows))
    compiles = (
        f"compile times measured by --compile-only in {source}"
        if source
        else (f"compile times assumed: {UNIT_COSTS['compile_s']}")
    )
    print(f"in all about {total:.0f} s on an H200 ({compiles}; steps assumed: {UNIT_COSTS})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--groups", default=None, help=f"comma list of {GROUPS} (default: all; --smoke: checks)"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="one check per kernel (and a group's first case)"
    )
    parser.add_argument(
        "--plan", action="store_true", help="print the cases' counts and the estimate"
    )
    parser.add_argument(
        "--allow-cpu", action="store_true", help="tiny shapes in interpret mode on a CPU"
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="seconds: start no group or case estimated to end past them (360; --smoke: 85)",
    )
    parser.add_argument(
        "--case-budget-s", type=float, default=10.0, help="seconds of timing per case and mode"
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help="timed calls per case (default 5; 3 when quick)"
    )
    parser.add_argument(
        "--cells",
        default=None,
        help="comma list: only the checks and cases of these cells (lstm, gru, min_gru, ...)",
    )
    parser.add_argument(
        "--compile-only",
        action="store_true",
        help="compile every program of the run for an H100 here, without a GPU (the aot "
        "extra; JAX_PLATFORMS=cpu), and record the compile times",
    )
    parser.add_argument(
        "--compile-times",
        type=Path,
        default=None,
        help="a --compile-only results file for the estimate (default: the newest one)",
    )
    parser.add_argument("--out", type=Path, default=common.RESULTS_DIR, help="results folder")
    args = parser.parse_args(argv)
    groups = common.chosen_groups(
        parser, args.groups or ("checks" if args.smoke else ",".join(GROUPS)), GROUPS
    )
    quick = args.smoke or args.allow_cpu
    args.rounds = args.rounds or (3 if quick else 5)
    if args.budget_s is None:
        args.budget_s = 85.0 if args.smoke else 360.0
    args.cells = tuple(args.cells.split(",")) if args.cells else None
    known = {c.label for c in CHECKS} | {c.cell for cases in plan().values() for c in cases}
    if args.cells and set(args.cells) - known:
        parser.error(
            f"unknown cells {sorted(set(args.cells) - known)}; choose from {sorted(known)}"
        )
    if args.compile_only:
        return compile_only(args, groups)
    args.costs, source = load_compile_costs(args.compile_times, args.out)
    everything = estimates(args.rounds, args.smoke, args.cells, args.costs)
    table = {g: e for g, e in everything.items() if g in groups}
    if args.plan:
        print_plan(table, source)
        return 0
    platform = jax.default_backend()
    if platform != "gpu" and not args.allow_cpu:
        print(
            f"gpu_suite needs a GPU; JAX runs on {platform!r} here "
            "(--allow-cpu runs tiny shapes in interpret mode to test the script)",
            file=sys.stderr,
        )
        return 2
    suite = Suite(args)
    for group in groups:
        suite.run_group(group, table[group]["estimated_s"])
    annotate(suite.records)
    target_rows = targets(suite.records)
    machine = common.machine_info()
    path = common.write_results(
        "gpu_suite",
        suite.records,
        machine=machine,
        quick=quick,
        directory=args.out,
        gpu=nvidia_smi(),
        gpu_versions=common.versions(GPU_PACKAGES),
        budget_s=args.budget_s,
        rounds=args.rounds,
        groups=suite.groups,
        checks=suite.checks,
        refused=suite.refused,
        skipped=suite.skipped,
        errors=suite.errors,
        targets=target_rows,
        wall_s=round(suite.elapsed(), 1),
    )
    print_table(suite.records, suite.checks, target_rows)
    failed = [c for c in suite.checks if not c["ok"]]
    print(
        f"wrote {path}: {len(suite.records)} records, {len(suite.checks)} checks "
        f"({len(failed)} over tolerance), {len(suite.errors)} errors on {machine['device_kind']}; "
        f"{suite.elapsed():.1f} s in all"
    )
    return 1 if failed or suite.errors else 0


if __name__ == "__main__":
    sys.exit(main())
