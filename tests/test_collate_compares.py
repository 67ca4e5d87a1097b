"""Collating ``rnn-jax compare`` files: a row per run, the task checked, references kept."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import collate_compares  # noqa: E402


def compare_file(directory: Path, cell: str, hidden: int, test: dict, length: int = 600) -> Path:
    """A compare.json as `rj.app.compare` writes it, with the fields collating reads."""
    config = {
        "task_options": {"length": length},
        "hidden": hidden,
        "layers": 1,
        "backend": "sequential",
        "batch": 32,
        "lr": 0.001,
        "schedule": "constant",
        "seed": 0,
        "cell_options": {"r_min": 0.9} if cell == "lru" else {},
    }
    run = {
        "cell": cell,
        "config": config,
        "params": 100 * hidden,
        "steps": 50,
        "train_seconds": 12.4,
        "test": {"loss": test.get("mse"), **test},
        "solved": test.get("mse", 1.0) < 0.01,
        "history": {"train": [], "val": []},
    }
    document = {
        "command": f"rnn-jax compare --cells {cell} --hidden {hidden}",
        "task": "adding",
        "description": f"adding problem, T={length}",
        "metric": "mse",
        "baselines": {"predict 1": {"mse": 0.1667}},
        "solved_when": "mse < 0.01",
        "config": config,
        "seconds": 20.0,
        "runs": [run],
    }
    path = directory / cell / "compare.json"
    path.parent.mkdir()
    path.write_text(json.dumps(document))
    return path


def test_every_run_gets_a_row_with_its_settings_and_the_references(tmp_path):
    paths = [
        compare_file(tmp_path, "lru", 128, {"mse": 0.004}),
        compare_file(tmp_path, "lstm", 64, {"mse": 0.17}),
    ]
    document = collate_compares.collate(paths, {"GRU (Bai et al. 2018)": 5.3e-5})
    lines = document["table"].splitlines()
    assert lines[0].split()[:3] == ["cell", "hidden", "layers"]
    assert lines[2].split()[:3] == ["lru", "128", "1"] and "r_min=0.9" in lines[2]
    assert lines[2].split()[-2:] == ["0.004", "yes"]
    assert lines[3].split()[-2:] == ["0.17", "no"]
    assert lines[-1] == "published (mse): GRU (Bai et al. 2018) 5.3e-05"
    assert [run["cell"] for run in document["runs"]] == ["lru", "lstm"]
    assert document["commands"][1] == "rnn-jax compare --cells lstm --hidden 64"
    assert document["seconds"] == 40.0


def test_compares_of_another_task_length_are_refused(tmp_path):
    paths = [
        compare_file(tmp_path, "lru", 128, {"mse": 0.004}),
        compare_file(tmp_path, "gru", 64, {"mse": 0.1}, length=100),
    ]
    expected = re.escape("gru/compare.json compares adding {'length': 100}")
    with pytest.raises(ValueError, match=expected):
        collate_compares.collate(paths)


def test_a_reference_is_a_name_and_a_number():
    assert collate_compares.reference("TCN (Bai et al.)=3.5e-5") == ("TCN (Bai et al.)", 3.5e-5)
    for text in ("LSTM=low", "=0.5", "0.5"):
        with pytest.raises(argparse.ArgumentTypeError, match=f"expected NAME=NUMBER; got '{text}'"):
            collate_compares.reference(text)


def test_a_collated_file_takes_a_new_run_with_its_runs_commands_and_references(tmp_path):
    earlier = collate_compares.collate(
        [compare_file(tmp_path, "lstm", 64, {"mse": 0.17})], {"LSTM (Bai et al. 2018)": 0.164}
    )
    earlier_path = tmp_path / "training_adding_T600.json"
    earlier_path.write_text(json.dumps(earlier))
    document = collate_compares.collate(
        [earlier_path, compare_file(tmp_path, "lru", 128, {"mse": 0.004})]
    )
    assert [run["cell"] for run in document["runs"]] == ["lstm", "lru"]
    assert document["commands"] == [
        "rnn-jax compare --cells lstm --hidden 64",
        "rnn-jax compare --cells lru --hidden 128",
    ]
    assert document["references"] == {"LSTM (Bai et al. 2018)": 0.164}
    assert document["seconds"] == 40.0
