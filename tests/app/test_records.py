"""Run records: JSON without non-finite numbers, written atomically; tables; plots."""

import json

import numpy as np

from rnn_jax import app


def test_json_records_hold_plain_numbers_and_no_temporary_files(tmp_path):
    path = app.write_json(tmp_path / "runs" / "r.json", {"loss": np.float32(0.5), "nan": np.nan})
    assert json.loads(path.read_text()) == {"loss": 0.5, "nan": None}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]


def test_a_results_document_follows_the_benchmark_schema():
    document = app.results_document("training-run-adding", "rnn-jax train", test={"mse": 0.1})
    assert document["schema"] == 1 and document["records"] == []
    assert {"machine", "versions", "created"} <= set(document)
    assert document["test"] == {"mse": 0.1}


def test_tables_align_text_left_and_numbers_right():
    assert app.table([["lstm", 98816], ["gru", 7]], ["cell", "params"]).splitlines() == [
        "cell  params",
        "----  ------",
        "lstm  98,816",
        "gru        7",
    ]


def test_a_history_plot_is_a_png(tmp_path):
    history = {
        "train": [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}],
        "val": [{"step": 2, "loss": 0.6}],
    }
    path = app.plot_history(history, tmp_path / "history.png", baselines={"mean": 0.8})
    assert path.read_bytes()[:4] == b"\x89PNG"
