"""The GPU suite's plumbing on a CPU: its smoke run at tiny shapes (the Pallas kernels in
interpret mode) writes the JSON a GPU run would, every kernel checked against ``reference``;
its budget stops it from starting what no longer fits; its targets come from the medians;
``--compile-only`` compiles its programs for an H100 and ``--plan`` uses their times."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

from rnn_jax import aot

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import common  # noqa: E402
import gpu_suite  # noqa: E402


def results(directory: Path) -> dict:
    (path,) = directory.glob("gpu_suite-cpu-*-quick.json")
    doc = json.loads(path.read_text())
    common.check_results(doc)
    return doc


def test_smoke_of_one_cell_checks_its_kernel_against_reference_and_times_its_loops(tmp_path):
    argv = ["--allow-cpu", "--smoke", "--groups", "checks,loops", "--cells", "lstm"]
    argv += ["--rounds", "1", "--budget-s", "1e6", "--out", str(tmp_path)]
    assert gpu_suite.main(argv) == 0
    doc = results(tmp_path)

    (kernel,) = [c for c in doc["checks"] if "case" not in c]
    assert (kernel["cell"], kernel["backend"], kernel["against"]) == ("lstm", "pallas", "reference")
    assert kernel["ok"] and max(kernel["rel_err"], kernel["rel_err_grad"]) <= kernel["tolerance"]
    assert kernel["lengths"] and kernel["T"] == gpu_suite.CHECK_SHAPE["tiny"][0]
    (cudnn,) = [r for r in doc["refused"] if "case" not in r]
    assert cudnn["backend"] == "cudnn" and "needs an NVIDIA GPU" in cudnn["reason"]

    case = gpu_suite.plan()["loops"][0]
    (forward,) = [c for c in doc["checks"] if "case" in c]  # the timed outputs, too
    assert (forward["case"], forward["against"], forward["ok"]) == (case.label, "reference", True)
    timed = {(r["mode"], r["backend"]) for r in doc["records"]}
    refused = {(r["mode"], r["backend"]) for r in doc["refused"] if "case" in r}
    assert refused == {(mode, "cudnn") for mode in common.MODES}
    assert timed == set(gpu_suite.timed_runs(case)) - refused - {(m, "torch") for m in common.MODES}
    tiny = case.tiny().shape
    for rec in doc["records"]:
        assert rec["case"] == case.label and common.Shape(*(rec[k] for k in "BTIH")) == tiny
        assert rec["us_per_step"] == rec["median_s"] / rec["T"] * 1e6
        assert rec["compile_s"] > 0 and rec["repeats"] == 1
        assert rec["vs_sequential"] > 0
        if rec["backend"] == "sequential":
            assert rec["vs_sequential"] == 1.0

    planned = gpu_suite.estimates(rounds=1, smoke=True, cells=("lstm",))
    assert [g["group"] for g in doc["groups"]] == ["checks", "loops"]
    for group, refusals in zip(doc["groups"], (1, 2), strict=True):
        assert group["compiles"] == planned[group["group"]]["compiles"] - refusals
        assert group["elapsed_s"] >= 0 and group["estimated_s"] > 0
    assert group["timed_calls"] == 3 * len(timed)  # the compiling call, the warm-up, a round
    assert [s["what"] for s in doc["skipped"]] == ["torch"]
    assert doc["machine"]["platform"] == "cpu" and "jax" in doc["versions"]
    assert doc["errors"] == [] and doc["wall_s"] > 0


def test_a_spent_budget_starts_no_group(tmp_path):
    argv = ["--allow-cpu", "--budget-s", "0", "--out", str(tmp_path)]
    assert gpu_suite.main(argv) == 0
    doc = results(tmp_path)
    assert doc["records"] == [] and doc["checks"] == [] and doc["groups"] == []
    assert [s["what"] for s in doc["skipped"]] == ["torch", *gpu_suite.GROUPS]


def rec(case, mode, median, T=1024, **who):
    return {"case": case, "cell": case.split()[1], "mode": mode, "median_s": median, "T": T, **who}


def test_targets_from_medians():
    loops = "loops lstm float32 T1024"
    parallel, newton = gpu_suite.PARALLEL_TARGET, gpu_suite.NEWTON_TARGET
    records = [
        rec(loops, "forward", 1e-3, backend="pallas"),  # 0.98 us per step: reached
        rec(loops, "forward", 2e-3, backend="sequential"),
        rec(loops, "forward", 0.5e-3, library="torch"),  # cuDNN twice as fast: missed
        rec(loops, "forward", 1e-3, backend="cudnn"),  # as fast: reached
        rec(parallel, "forward", 1e-3, T=4096, backend="parallel"),
        rec(parallel, "forward", 0.2, T=4096, backend="sequential"),  # 200x
        rec(newton, "forward_backward", 0.1, T=16384, backend="newton"),
        rec(newton, "forward_backward", 1.0, T=16384, backend="sequential"),  # 10x: missed
    ]
    labels = {case.label for cases in gpu_suite.plan().values() for case in cases}
    assert {loops, parallel, newton} <= labels
    gpu_suite.annotate(records)
    got = {t["target"]: (round(t["value"], 3), t["reached"]) for t in gpu_suite.targets(records)}
    assert got == {
        "pallas / PyTorch's cuDNN layer: throughput": (0.5, False),
        "pallas / the cudnn backend: throughput": (1.0, True),
        "pallas: microseconds per step": (0.977, True),
        "parallel / sequential: speed-up": (200.0, True),
        "newton / sequential: speed-up": (10.0, False),
    }


@pytest.mark.xdist_group("gpu")
@pytest.mark.skipif(aot.missing("h100") is not None, reason=aot.missing("h100") or "")
def test_compile_only_compiles_the_programs_for_an_h100_and_the_plan_uses_their_times(tmp_path):
    """``--compile-only`` on a CPU: the LRU's smoke check compiled for an H100 (the
    linear-scan kernel through Triton), its compile time recorded; ``--plan`` reads it."""
    argv = ["--compile-only", "--smoke", "--cells", "lru", "--out", str(tmp_path)]
    assert gpu_suite.main(argv) == 0
    (path,) = tmp_path.glob("gpu_suite_compile-cpu-*-quick.json")
    doc = json.loads(path.read_text())
    common.check_results(doc)
    (program,) = doc["programs"]
    assert program["key"] == "checks|lru|pallas|check" and program["compile_s"] > 0
    assert {k["name"].split("__")[0] for k in program["kernels"]} == {"rnn_jax_linear_scan"}
    costs, source = gpu_suite.load_compile_costs(path, tmp_path)
    assert source == str(path) and costs == {program["key"]: program["compile_s"]}
    lru = [c for c in gpu_suite.CHECKS if c.label == "lru"]
    planned = gpu_suite.estimates(rounds=1, smoke=True, cells=("lru",), costs=costs)
    assert (
        planned["checks"]["estimated_s"]
        == program["compile_s"]
        == gpu_suite.check_estimate(lru[0], costs)
    )


def test_the_budget_scales_the_recorded_compile_times_by_this_machines_pace():
    """Compile times recorded on another host (``--compile-only`` on a CPU) are scaled by how
    this run's compiles compare with them: here twice as fast."""
    args = argparse.Namespace(allow_cpu=True, rounds=1, costs={"a": 10.0, "b": 30.0})
    suite = gpu_suite.Suite(args)
    assert suite.costs() == {"a": 10.0, "b": 30.0}
    suite.compiled("a", 5.0)
    suite.compiled("unrecorded", 100.0)  # a program without a record says nothing of the pace
    assert suite.costs() == {"a": 5.0, "b": 15.0}
