"""``backend="auto"``: the rule on a small synthetic table, the table builder, and the
packaged table."""

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
