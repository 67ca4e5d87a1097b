"""``backend="auto"``: the rule on a small synthetic table, the table builder, the
packaged table, and the memory budget (estimates, sources, ``rj.explain_auto``)."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest
import scan_helpers

import rnn_jax as rj
from rnn_jax.backends import auto, registry
from rnn_jax.backends.contract import Backend

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import common  # noqa: E402
import dispatch_table  # noqa: E402


def entry(B, T, I, H, cell="lstm", dtype="float32", **modes):  # noqa: E741
    return {"cell": cell, "dtype": dtype, "B": B, "T": T, "I": I, "H": H, **modes}


TABLE = {
    "backends": {
        "cpu": [
            # small shape: sequential wins
            entry(16, 256, 32, 64, forward_backward={"sequential": 1.0, "checkpointed": 1.5}),
            # long sequences: checkpointed measured faster
            entry(2, 16384, 8, 64, forward_backward={"sequential": 2.0, "checkpointed": 1.0}),
            # pallas (interpret mode on a CPU) can never be chosen, however fast
            entry(64, 64, 128, 512, forward_backward={"sequential": 1.0, "pallas": 0.1}),
            # a lead inside the noise margin does not count
            entry(4, 10, 3, 8, cell="gru", forward_backward={"sequential": 1.0, "reference": 0.95}),
            # a backend nobody registered
            entry(32, 128, 64, 256, forward_backward={"sequential": 1.0, "warp_drive": 0.1}),
            # forward medians decide when no backward was recorded
            entry(8, 1000, 8, 8, cell="gru", forward={"sequential": 1.0, "reference": 0.5}),
            entry(
                8,
                1000,
                8,
                8,
                cell="gru",
                dtype="bfloat16",
                forward={"sequential": 0.5, "reference": 1.0},
            ),
        ],
        "gpu": [entry(16, 256, 32, 64, forward_backward={"sequential": 1.0, "pallas": 0.2})],
    },
    "sequential": {
        "cpu": [
            entry(16, 256, 32, 64, unroll=4, chunk=32, residuals="store", pipeline=False),
            entry(64, 64, 128, 512, unroll=1, chunk=8, residuals="carries"),
        ]
    },
}


def problem_of(cell, B, T, I, dtype=jnp.float32, gradient=True):  # noqa: E741
    """The `Problem` of ``cell`` over ``[T, B, I]`` inputs (shapes only), differentiated."""
    params = jax.eval_shape(lambda key: cell.init(key, I), jax.random.key(0))
    xs = jax.ShapeDtypeStruct((T, B, I), dtype)
    return scan_helpers.problem_of(cell, params, xs, gradient=gradient)


def choose(cell, shape, platform="cpu", table=TABLE):
    return auto.choose(cell, problem_of(cell, *shape), table=table, platform=platform).name


def xs_of(B, T, I, dtype=jnp.float32):  # noqa: E741
    return (B, T, I, dtype)


def test_nearest_shape_in_log_space_and_fastest_backend():
    assert choose(rj.lstm(64), xs_of(16, 256, 32)) == "sequential"
    assert choose(rj.lstm(64), xs_of(2, 16384, 8)) == "checkpointed"
    # 8000 steps of batch 4 sit nearer (log-distance) the long entry than the small one.
    assert choose(rj.lstm(64), xs_of(4, 8000, 8)) == "checkpointed"
    assert choose(rj.lstm(64), xs_of(16, 300, 32)) == "sequential"


def test_never_pallas_on_cpu_never_unregistered():
    assert choose(rj.lstm(512), xs_of(64, 64, 128)) == "sequential"
    assert choose(rj.lstm(256), xs_of(32, 128, 64)) == "sequential"
    assert choose(rj.lstm(64), xs_of(16, 256, 32), platform="gpu") == "pallas"  # not on a CPU


def test_a_rival_must_lead_by_the_margin():
    assert choose(rj.gru(8), xs_of(4, 10, 3)) == "sequential"  # reference only 1.05x faster


def test_forward_medians_and_dtype_preference():
    assert choose(rj.gru(8), xs_of(8, 1000, 8)) == "reference"
    assert choose(rj.gru(8), xs_of(8, 1000, 8, jnp.bfloat16)) == "sequential"
    # float16 has no records of its own: any dtype's nearest entry counts
    assert choose(rj.gru(8), xs_of(8, 1000, 8, jnp.float16)) in {"sequential", "reference"}


def test_nothing_recorded_means_sequential():
    assert choose(rj.simple(8), xs_of(4, 10, 3)) == "sequential"  # no simple entries
    assert choose(rj.lstm(8), xs_of(4, 10, 3), platform="tpu") == "sequential"
    assert choose(rj.lstm(8), xs_of(4, 10, 3), table={}) == "sequential"


def test_tuned_sequential_nearest_sweep_or_defaults():
    lstm = rj.lstm(64)
    tuned = auto.tuned_sequential(lstm, problem_of(lstm, 16, 200, 32), table=TABLE, platform="cpu")
    assert tuned == {
        "unroll": 4,
        "chunk": 32,
        "residuals": "store",
        "pipeline": False,
        "weight_grads": "per_chunk",  # not in that sweep: the default
    }
    # another cell borrows the nearest sweep of any cell
    gru = rj.gru(512)
    tuned = auto.tuned_sequential(gru, problem_of(gru, 64, 64, 128), table=TABLE, platform="cpu")
    # (a sweep from before "pipeline" was swept: that setting's default)
    assert tuned == {
        "unroll": 1,
        "chunk": 8,
        "residuals": "carries",
        "pipeline": True,
        "weight_grads": "per_chunk",
    }
    small = rj.gru(8)
    tuned = auto.tuned_sequential(small, problem_of(small, 4, 10, 3), table={}, platform="cpu")
    assert tuned == auto.SEQUENTIAL_DEFAULTS


def favouring(name):
    """A table where ``name`` measured twice as fast as ``sequential`` at one LSTM shape."""
    rows = [entry(4, 10, 3, 8, forward_backward={"sequential": 1.0, name: 0.5})]
    return {"backends": {jax.default_backend(): rows}}


@dataclasses.dataclass(frozen=True)
class Declines(Backend):
    name = "declines"

    def supports(self, cell, problem):
        return "it runs no lstm"

    def run(self, cell, params, problem):
        raise AssertionError("auto ran a backend that said it cannot run the cell")


@dataclasses.dataclass(frozen=True)
class Buggy(Backend):
    name = "buggy"

    def run(self, cell, params, problem):
        raise ValueError("the buggy backend failed: a bug, not a refusal")


def test_auto_skips_a_winner_that_does_not_support_the_cell(monkeypatch):
    monkeypatch.setitem(registry._registered, "declines", Declines())
    monkeypatch.setattr(auto, "packaged_table", lambda: favouring("declines"))
    cell = rj.lstm(8)
    params = cell.init(jax.random.key(0), 3)
    xs = jnp.ones((10, 4, 3))
    assert choose(cell, xs_of(4, 10, 3), table=favouring("declines")) == "sequential"
    got = rj.scan(cell, params, xs)
    want = rj.scan(cell, params, xs, backend="reference")
    assert jnp.allclose(got[1], want[1], atol=1e-6)


def test_an_error_inside_the_chosen_backend_is_never_swallowed(monkeypatch):
    """No message is matched against a backend's name: a real failure surfaces."""
    monkeypatch.setitem(registry._registered, "buggy", Buggy())
    monkeypatch.setattr(auto, "packaged_table", lambda: favouring("buggy"))
    cell = rj.lstm(8)
    params = cell.init(jax.random.key(0), 3)
    with pytest.raises(ValueError, match="a bug, not a refusal"):
        rj.scan(cell, params, jnp.ones((10, 4, 3)))


def results_doc(suite, platform, records, quick=False):
    return {
        "suite": suite,
        "machine": {"platform": platform},
        "versions": {},
        "records": records,
        "quick": quick,
        "created": "2026-01-01T00:00:00Z",
    }


def rec(backend, median, mode="forward_backward", **extra):
    return {
        "cell": "lstm",
        "backend": backend,
        "B": 2,
        "T": 4,
        "I": 3,
        "H": 5,
        "dtype": "float32",
        "mode": mode,
        "median_s": median,
        **extra,
    }


def test_dispatch_table_builder(tmp_path):
    docs = [
        results_doc(
            "cpu_suite",
            "cpu",
            [
                rec("sequential", 2.0),
                rec("checkpointed", 3.0),
                rec("pallas", 0.1),
                {**rec("x", 1.0), "library": "torch", "backend": None},
            ][:3]
            + [
                {
                    "cell": "lstm",
                    "library": "torch",
                    "B": 2,
                    "T": 4,
                    "I": 3,
                    "H": 5,
                    "dtype": "float32",
                    "mode": "forward",
                    "median_s": 0.1,
                }
            ],
        ),
        results_doc(
            "cpu_sweep",
            "cpu",
            [
                rec("sequential", 1.0, unroll=2, chunk=8, residuals="carries"),
                rec("sequential", 0.5, unroll=4, chunk=16, residuals="store"),
                rec("sequential", 0.1, mode="forward", unroll=1, chunk=0, residuals="store"),
            ],
        ),
        results_doc("cpu_suite", "cpu", [rec("sequential", 9.0)], quick=True),
    ]
    for i, doc in enumerate(docs):
        (tmp_path / f"{i}.json").write_text(json.dumps(doc))
    table = dispatch_table.build(common.load_results(tmp_path))
    (row,) = table["backends"]["cpu"]
    assert row["forward_backward"] == {"sequential": 2.0, "checkpointed": 3.0}  # no pallas, quick
    inference, training = table["sequential"]["cpu"]  # one entry per mode, the fastest
    assert (inference["mode"], inference["chunk"], inference["unroll"]) == ("forward", 0, 1)
    assert training["mode"] == "forward_backward"
    assert (training["unroll"], training["chunk"], training["residuals"]) == (4, 16, "store")
    # inference and training each take their own mode's settings
    cell, kwargs = rj.lstm(5), {"table": table, "platform": "cpu"}
    assert (
        auto.tuned_sequential(cell, problem_of(cell, 2, 4, 3, gradient=False), **kwargs)["chunk"]
        == 0
    )
    assert auto.tuned_sequential(cell, problem_of(cell, 2, 4, 3), **kwargs)["chunk"] == 16
    assert choose(rj.lstm(5), xs_of(2, 4, 3), table=table) == "sequential"


def test_a_sweep_tie_goes_to_the_quickest_compile():
    slow_compile = rec("sequential", 1.00, unroll=True, chunk=8, residuals="carries", compile_s=2.0)
    quick_compile = rec("sequential", 1.05, unroll=1, chunk=16, residuals="carries", compile_s=0.7)
    much_slower = rec("sequential", 1.50, unroll=1, chunk=0, residuals="carries", compile_s=0.4)
    pick = dispatch_table.quickest_to_compile_of_the_fastest
    assert pick([slow_compile, quick_compile, much_slower]) is quick_compile
    assert pick([slow_compile, much_slower]) is slow_compile  # 1.5x is no tie
    untimed = {k: v for k, v in quick_compile.items() if k != "compile_s"}
    assert pick([slow_compile, untimed]) is slow_compile  # older sweeps: the fastest


def test_dispatch_table_reads_only_the_comparison_suites_and_sweeps():
    docs = [
        results_doc("cpu_suite", "cpu", [rec("sequential", 2.0)]),
        # a study of one kernel's variants: its medians must not stand for the backend's
        results_doc("lstm_gates", "cpu", [rec("sequential", 9.0, gate_form="split")]),
    ]
    table = dispatch_table.build(docs)
    (row,) = table["backends"]["cpu"]
    assert row["forward_backward"] == {"sequential": 2.0}


def test_a_shapes_medians_all_come_from_its_newest_run():
    docs = [
        results_doc("cpu_suite", "cpu", [rec("sequential", 2.0), rec("checkpointed", 1.0)]),
        results_doc("cpu_suite", "cpu", [rec("sequential", 3.0)]),  # newer, on a slower day
    ]
    (row,) = dispatch_table.build(docs)["backends"]["cpu"]
    assert row["forward_backward"] == {"sequential": 3.0}  # never 1.0 against 3.0 across runs


def test_packaged_table_is_well_formed():
    table = auto.packaged_table()
    for platform, rows in table.get("backends", {}).items():
        for row in rows:
            assert {"cell", "dtype", *auto.SHAPE_KEYS} <= set(row)
            names = set(row.get("forward", {})) | set(row.get("forward_backward", {}))
            assert platform != "cpu" or not any(n.startswith("pallas") for n in names)
    for rows in table.get("sequential", {}).values():
        for row in rows:
            assert row["residuals"] in ("store", "recompute", "carries")


@pytest.mark.skipif(not (ROOT / "benchmarks" / "results").exists(), reason="no results")
def test_packaged_table_is_built_from_the_recorded_results():
    assert dispatch_table.main(["--check"]) == 0


# ----------------------------------------------------------------------------- memory

GIB = 2**30
# LSTM H64 B8: sequential faster at T = 1,000; at T = 100,000 checkpointed is only
# 1.05x faster (inside the margin) but sequential needs 3.5 GB of temporaries.
MEMORY_TABLE = {
    "backends": {
        "cpu": [
            {
                "cell": "lstm", "dtype": "float32", "B": 8, "T": 100_000, "I": 32, "H": 64,
                "forward_backward": {"sequential": 1.05, "checkpointed": 1.0, "reference": 1.2},
                "temporaries": {
                    "forward_backward": {
                        "sequential": 3.5e9, "checkpointed": 0.45e9, "reference": 2.0e9
                    }
                },
            },
        ]
    }
}  # fmt: skip


def lstm_at(T, B=8):  # noqa: N803
    cell = rj.lstm(64)
    return cell, problem_of(cell, B, T, 32)


def pick(T, budget, B=8, table=MEMORY_TABLE):  # noqa: N803
    cell, problem = lstm_at(T, B)
    return auto.choose(cell, problem, table=table, platform="cpu", budget=auto.Budget(budget, ""))


def test_within_budget_the_margin_rule_holds():
    assert pick(100_000, 64 * GIB).name == "sequential"  # 1.05x is no lead


def test_a_tie_goes_to_the_lighter_where_sequential_takes_a_large_share():
    # 3.5 GB is over 1/16 of 8 GiB: checkpointed, within the margin, runs in 0.45 GB.
    assert pick(100_000, 8 * GIB).name == "checkpointed"


def test_sequential_over_budget_runs_the_fastest_that_fits():
    assert pick(100_000, 1 * GIB).name == "checkpointed"
    assert pick(100_000, 3 * GIB).name == "checkpointed"  # reference fits, but is slower


def test_estimates_scale_with_steps_and_batch():
    cell, problem = lstm_at(10_000)
    (entry,) = MEMORY_TABLE["backends"]["cpu"]
    estimates = auto.temporaries(entry, auto.shape_of(cell, problem), "forward_backward")
    assert estimates["sequential"] == pytest.approx(3.5e8, rel=1e-6)
    # A tenth of the steps: sequential's 350 MB is a small share of 8 GiB again.
    assert pick(10_000, 8 * GIB).name == "sequential"
    # Ten times the batch at 100,000 steps: nothing fits 1 GiB; the least memory runs.
    assert pick(100_000, 1 * GIB, B=80).name == "checkpointed"


def test_nothing_fits_and_the_least_memory_refuses():
    cell, problem = lstm_at(100_000)
    names = auto.ranked(
        MEMORY_TABLE["backends"]["cpu"][0],
        "cpu",
        ["checkpointed", "reference", "sequential"],
        "forward_backward",
        estimates={"sequential": 10, "checkpointed": 4, "reference": 6},
        budget=2,
    )
    assert names == ["checkpointed", "reference"]


def test_budget_from_the_environment(monkeypatch):
    for text, expected in [("512M", 512 * 2**20), ("2GiB", 2 * GIB), ("1000", 1000)]:
        monkeypatch.setenv(auto.BUDGET_VARIABLE, text)
        assert auto.memory_budget() == auto.Budget(expected, auto.BUDGET_VARIABLE)
    monkeypatch.setenv(auto.BUDGET_VARIABLE, "lots")
    with pytest.raises(ValueError, match="RNN_JAX_MEMORY_BUDGET must be a positive byte count"):
        auto.memory_budget()


class Device:
    def __init__(self, stats):
        self.stats = stats

    def memory_stats(self):
        return self.stats


def test_budget_from_the_device_else_the_host(monkeypatch):
    monkeypatch.delenv(auto.BUDGET_VARIABLE, raising=False)
    device = Device({"bytes_limit": 16 * GIB, "bytes_in_use": 0})
    assert auto.memory_budget(device).bytes == 8 * GIB
    budget = auto.memory_budget(Device(None))
    assert budget.bytes == auto.host_memory() // auto.HOST_SHARE
    assert "host" in budget.source


def test_explain_auto_says_what_runs_and_why(monkeypatch):
    monkeypatch.setattr(auto, "packaged_table", lambda: MEMORY_TABLE)
    cell = rj.lstm(64)
    params = jax.eval_shape(lambda k: cell.init(k, 32), jax.random.key(0))
    xs = jax.ShapeDtypeStruct((100_000, 8, 32), jnp.float32)
    choice = rj.explain_auto(cell, params, xs, budget=auto.Budget(GIB, "test"))
    assert choice.backend.name == "checkpointed"
    assert choice.measured_at == {"B": 8, "T": 100_000, "I": 32, "H": 64}
    assert choice.reason.startswith("sequential is over the memory budget (~3,338 MiB)")
    text = str(choice)
    assert "auto runs checkpointed" in text and "budget: 1,024 MiB (test)" in text
    inference = rj.explain_auto(cell, params, xs, gradient=False, budget=auto.Budget(GIB, "t"))
    assert inference.mode == "forward"


def test_the_packaged_table_keeps_auto_under_a_gigabyte_at_100k_steps():
    cell, problem = lstm_at(100_000)
    choice = auto.explain(cell, problem, platform="cpu", budget=auto.memory_budget(Device(None)))
    estimate = choice.temporaries.get(choice.backend.name)
    assert estimate is not None and estimate < GIB, str(choice)


def test_the_table_builder_keeps_recorded_temporaries():
    docs = [
        results_doc(
            "memory_suite",
            "cpu",
            [rec("sequential", 2.0, temp_bytes=900), rec("checkpointed", 1.0, temp_bytes=100)],
        )
    ]
    (row,) = dispatch_table.build(docs)["backends"]["cpu"]
    assert row["forward_backward"] == {"sequential": 2.0, "checkpointed": 1.0}
    assert row["temporaries"] == {"forward_backward": {"sequential": 900, "checkpointed": 100}}


def tie_table(reference_compile_s):
    """sequential and reference tied on run time (reference 1.05x slower), with compile times."""
    medians = {"sequential": 1.0, "reference": 1.05}
    compiled = {"sequential": 2.0, "reference": reference_compile_s}
    row = entry(16, 256, 32, 64, forward_backward=medians, compile={"forward_backward": compiled})
    return {"backends": {"cpu": [row]}}


def test_a_run_time_tie_goes_to_a_rival_that_compiles_twice_as_fast():
    assert choose(rj.lstm(64), xs_of(16, 256, 32), table=tie_table(0.5)) == "reference"
    assert choose(rj.lstm(64), xs_of(16, 256, 32), table=tie_table(1.5)) == "sequential"
    untimed = tie_table(0.5)
    del untimed["backends"]["cpu"][0]["compile"]
    assert choose(rj.lstm(64), xs_of(16, 256, 32), table=untimed) == "sequential"
    slower = tie_table(0.5)
    slower["backends"]["cpu"][0]["forward_backward"]["reference"] = 1.2  # outside the tie
    assert choose(rj.lstm(64), xs_of(16, 256, 32), table=slower) == "sequential"


def test_explain_auto_names_the_compile_times_of_a_tie(monkeypatch):
    monkeypatch.setattr(auto, "packaged_table", lambda: tie_table(0.5))
    cell = rj.lstm(64)
    params = jax.eval_shape(lambda k: cell.init(k, 32), jax.random.key(0))
    choice = rj.explain_auto(cell, params, jax.ShapeDtypeStruct((256, 16, 32), jnp.float32))
    assert choice.backend.name == "reference"
    assert "compiled in 0.50 s against 2.00 s" in choice.reason
    assert "reference: 1,050.0 ms measured, compiled in 0.50 s" in str(choice)


def test_the_table_builder_keeps_recorded_compile_times():
    docs = [results_doc("cpu_suite", "cpu", [rec("sequential", 2.0, compile_s=1.5)])]
    (row,) = dispatch_table.build(docs)["backends"]["cpu"]
    assert row["compile"] == {"forward_backward": {"sequential": 1.5}}
