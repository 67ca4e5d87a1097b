"""The Pallas kernels' budget model against the real compilers, on a CPU (deviceless AOT).

For every case of a grid (cells, hidden sizes that are and are not powers of
two, heads, batch tiles, float32 and bfloat16, resident and streamed weights)
and every chip (``--chips``, default the H100 and TPU v5e):

- the plan's verdict per pass (forward, backward): the blocks it chose and,
  on a GPU, the shared memory it expects; or its refusal in words;
- the compiler's verdict: the forward program and the gradient program
  compiled (``rnn_jax.aot``); per GPU kernel its shared memory, threads,
  registers and spills (``ptxas -v``); or the compiler's refusal;
- where the plan refuses, the compiler's verdict with the plan's checks
  lifted: whether the compiler refuses too (the plan is then right) or
  compiles (the plan is cautious there).

A case *agrees* when what the plan accepts compiles and what the compiler
refuses was refused by the plan; on a GPU the expected shared memory must
also be at least what the compiler asks for. Writes
``benchmarks/results/budget_grid-cpu-<UTC time>.json`` (``quick`` with
``--quick``: a few cases) and prints a table. Exits 1 if any case disagrees.

    JAX_PLATFORMS=cpu PYTHONPATH=. python benchmarks/budget_grid.py            # ~1 hour on 2 cores
    JAX_PLATFORMS=cpu PYTHONPATH=. python benchmarks/budget_grid.py --quick
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from typing import Any, NamedTuple
from unittest import mock

import jax
import jax.numpy as jnp

try:
    from benchmarks import common
except ImportError:  # run as ``python benchmarks/budget_grid.py``
    import common

import rnn_jax as rj
from rnn_jax import aot
from rnn_jax.backends.pallas import fused, plans, targets
from rnn_jax.backends.pallas.refusal import Refusal

T, B, F = 64, 5, 40  # 64 steps: TPU time blocks of up to 32 steps are considered


class Case(NamedTuple):
    cell: str
    hidden: int
    dtype: str = "float32"
    heads: int | None = None
    block_batch: int | None = None
    weights: str = "auto"

    @property
    def label(self) -> str:
        return case_label(self._asdict())

    def make(self) -> rj.Cell:
        dtype = jnp.dtype(self.dtype)
        if self.heads:
            return getattr(rj, self.cell)(self.hidden, self.heads, dtype=dtype)
        return getattr(rj, self.cell)(self.hidden, dtype=dtype)

    def backend(self):
        return rj.backends.Pallas(block_batch=self.block_batch, weights=self.weights)

    def options(self) -> fused.FusedOptions:
        return fused.FusedOptions(block_batch=self.block_batch, weights=self.weights)


def case_label(case: dict[str, Any]) -> str:
    """``lstm 768x12 bfloat16``, with ``rows=32`` and ``weights=resident`` where set."""
    heads = f"x{case['heads']}" if case["heads"] else ""
    extra = f" rows={case['block_batch']}" if case["block_batch"] else ""
    extra += f" weights={case['weights']}" if case["weights"] != "auto" else ""
    return f"{case['cell']} {case['hidden']}{heads} {case['dtype']}{extra}"


def gpu_cases(quick: bool) -> list[Case]:
    if quick:
        return [Case("lstm", 96), Case("lstm", 96, weights="resident")]
    f32, bf16 = "float32", "bfloat16"
    cases = [Case("lstm", h) for h in (32, 48, 64, 80, 96, 128, 160, 192, 256, 384)]
    cases += [Case("lstm", h, bf16) for h in (32, 64, 96, 128, 192, 256)]
    cases += [Case("gru", h, d) for d in (f32, bf16) for h in (48, 100, 128)]
    cases += [Case("simple", h) for h in (64, 256)]
    cases += [Case("multihead_lstm", 768, bf16, heads) for heads in (12, 6)]
    cases += [Case("slstm", 64, heads=2)]
    cases += [Case("lstm", h, block_batch=r) for h in (64, 128) for r in (32, 64)]
    cases += [Case("lstm", 96, bf16, block_batch=32)]
    cases += [Case("lstm", 96, weights="resident"), Case("lstm", 64, weights="streamed")]
    cases += [Case("lstm", 128, bf16, weights="resident"), Case("gru", 100, weights="resident")]
    return cases


def tpu_cases(quick: bool) -> list[Case]:
    if quick:
        return [Case("lstm", 256), Case("lstm", 1024)]
    cases = [Case("lstm", h) for h in (128, 256, 512, 768, 1024, 1536)]
    cases += [Case("lstm", h, "bfloat16") for h in (512, 1024, 1536, 2048)]
    cases += [Case("gru", h) for h in (384, 1024, 1280)]
    cases += [Case("lstm", 512, block_batch=r) for r in (64, 128)]
    cases += [Case("multihead_lstm", 768, "bfloat16", 3)]
    return cases


CASES = {"h100": gpu_cases, "h200": gpu_cases, "b200": gpu_cases, "v5e": tpu_cases}
CASES["v6e"] = tpu_cases


# ----------------------------------------------------------------------------- the plan


def plan_verdict(case: Case, chip: str) -> dict[str, Any]:
    """Per pass, the plan's blocks (and on a GPU the shared memory it expects) or refusal."""
    target = targets.TARGETS["gpu" if aot.CHIPS[chip].platform == "cuda" else "tpu"]
    cell = case.make()
    xs = jax.ShapeDtypeStruct((T, B, F), jnp.dtype(case.dtype))
    carry = jax.eval_shape(lambda: cell.initial_state(cell.init(jax.random.key(0), F), (B,)))
    step = fused.cell_step(cell, xs, carry)
    sizes = plans.Sizes(fused.head_view(cell).num_heads, T, B, False, False, False, 1)
    out = {}
    for kind, backward in (("forward", False), ("backward", True)):
        try:
            launch = plans.plan_launch(step, sizes, target, case.options(), backward=backward)
        except Refusal as refusal:
            out[kind] = {"refused": str(refusal)}
            continue
        blocks = launch.blocks
        out[kind] = {
            "rows": blocks.rows,
            "block_time": blocks.block_time,
            "lanes": [launch.lanes.chunk, launch.lanes.width],
            "resident_weights": blocks.resident_weights,
            "num_warps": blocks.num_warps,
        }
        if target.platform == "cuda":
            need = plans.footprint(step, launch.lanes, backward)
            expected = need.shared(blocks.rows, backward, blocks.resident_weights)
            out[kind]["expected_shared_bytes"] = expected
    return out


@contextlib.contextmanager
def checks_lifted():
    """The plans' checks of memory, registers and batch tiles turned off: what the compiler
    alone says."""
    with (
        mock.patch.object(targets.Target, "check_memory", lambda *a, **k: None),
        mock.patch.object(targets.TritonGPU, "check_registers", lambda *a, **k: None),
        mock.patch.object(targets.TritonGPU, "check_rows", lambda *a, **k: None),
    ):
        yield


# ----------------------------------------------------------------------------- the compiler


def programs(case: Case):
    cell, backend = case.make(), case.backend()

    def forward(params, xs):
        return rj.scan(cell, params, xs, backend=backend)[1]

    def gradient(params, xs):
        def loss(params, xs):
            ys = rj.scan(cell, params, xs, backend=backend)[1]
            return jnp.sum(ys.astype(jnp.float32) ** 2)

        return jax.grad(loss, argnums=(0, 1))(params, xs)

    params = jax.eval_shape(lambda: cell.init(jax.random.key(0), F))
    xs = jax.ShapeDtypeStruct((T, B, F), jnp.dtype(case.dtype))
    return {"forward": forward, "gradient": gradient}, (params, xs)


def compiler_verdict(case: Case, chip: str) -> dict[str, Any]:
    """Per program, the kernels the compiler made (GPU: with their resources) or its refusal,
    and the compile time."""
    fns, args = programs(case)
    out = {}
    for name, fn in fns.items():
        start = time.perf_counter()
        try:
            if aot.CHIPS[chip].platform == "cuda":
                _, kernels = aot.compile_with_kernels(chip, fn, *args, ptxas=True)
                result = {"kernels": [k._asdict() for k in kernels]}
            else:
                aot.compile_for(chip, fn, *args)
                result = {"compiled": True}
        except Exception as exc:  # noqa: BLE001  (the verdict is recorded)
            result = {"error": f"{type(exc).__name__}: {exc}"[:400]}
            if aot.compile_error_bytes(exc) is not None:
                result["requested_shared_bytes"] = aot.compile_error_bytes(exc)
        result["compile_s"] = round(time.perf_counter() - start, 2)
        out[name] = result
    return out


# ----------------------------------------------------------------------------- agreement


def _largest(kernels: list[dict[str, Any]], kind: str) -> int | None:
    sizes = [k["shared_bytes"] for k in kernels if k["name"].startswith(kind)]
    return max(sizes) if sizes else None


def disagreements(entry: dict[str, Any]) -> list[str]:
    """What in one case's entry breaks the contract: a refusal by the compiler of what the plan
    accepted, or (GPU) more shared memory than the plan expected."""
    plan, compiled = entry["plan"], entry["compiled"]
    passes = {"forward": ["forward"], "gradient": ["forward", "backward"]}
    found = []
    for program, result in compiled.items():
        accepted = all("refused" not in plan[p] for p in passes[program])
        if accepted and "error" in result:
            found.append(f"{program}: the plan accepted, the compiler refused: {result['error']}")
        for kind in passes[program] if "kernels" in result else ():
            used = _largest(result["kernels"], f"rnn_jax_fused_{kind}")
            expected = plan[kind].get("expected_shared_bytes")
            if used is not None and expected is not None and used > expected:
                found.append(f"{program}: the {kind} kernel asks {used} B, expected {expected}")
    return found


def run_case(case: Case, chip: str) -> dict[str, Any]:
    entry = {"chip": chip, "case": case.label, **case._asdict()}
    entry["plan"] = plan_verdict(case, chip)
    entry["compiled"] = compiler_verdict(case, chip)
    if any("refused" in v for v in entry["plan"].values()):
        with checks_lifted():
            entry["compiled_without_plan_checks"] = compiler_verdict(case, chip)
    entry["disagreements"] = disagreements(entry)
    entry["agrees"] = not entry["disagreements"]
    return entry


def summary(entry: dict[str, Any]) -> list[Any]:
    def plan_text(p):
        if "refused" in p:
            return "refused"
        shared = p.get("expected_shared_bytes")
        where = "resident" if p["resident_weights"] else "streamed"
        return f"{where} {shared // 1024} KB" if shared is not None else f"bt {p['block_time']}"

    def compiled_text(result):
        if "error" in result:
            requested = result.get("requested_shared_bytes")
            return f"refused ({requested // 1024} KB)" if requested else "error"
        if "kernels" in result:
            return " ".join(f"{k['shared_bytes'] // 1024}K" for k in result["kernels"])
        return "ok"

    lifted = entry.get("compiled_without_plan_checks", {}).get("gradient")
    return [
        entry["chip"],
        entry["case"],
        plan_text(entry["plan"]["forward"]),
        plan_text(entry["plan"]["backward"]),
        compiled_text(entry["compiled"]["gradient"]),
        compiled_text(lifted) if lifted else "",
        entry["agrees"],
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chips", default="h100,v5e", help=f"comma list of {sorted(aot.CHIPS)}")
    parser.add_argument("--quick", action="store_true", help="two cases per chip")
    parser.add_argument("--out", default=str(common.RESULTS_DIR), help="results folder")
    args = parser.parse_args(argv)
    chips = args.chips.split(",")
    unknown = sorted(set(chips) - set(aot.CHIPS))
    if unknown:
        parser.error(f"unknown chips {unknown}; choose from {sorted(aot.CHIPS)}")
    entries = []
    for chip in chips:
        for case in CASES[chip](args.quick):
            entries.append(run_case(case, chip))
            print(" | ".join(map(str, summary(entries[-1]))), flush=True)
    header = ["chip", "case", "plan forward", "plan backward", "compiled", "lifted", "agrees"]
    print(common.markdown_table(header, [summary(e) for e in entries]))
    path = common.write_results(
        "budget_grid",
        [],
        machine=common.machine_info(),
        quick=args.quick,
        directory=common.Path(args.out),
        chips={chip: aot.CHIPS[chip].description for chip in chips},
        cases=entries,
        gpu_scratch_tiles=plans.GPU_SCRATCH_TILES,
        gpu_streamed_group=plans.GPU_STREAMED_GROUP,
    )
    disagreeing = [e for e in entries if not e["agrees"]]
    print(f"wrote {path}: {len(entries)} cases, {len(disagreeing)} disagree")
    return 1 if disagreeing else 0


if __name__ == "__main__":
    sys.exit(main())
