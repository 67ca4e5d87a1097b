"""The examples run as their READMEs say, at a tiny size: Flax's seq2seq ported to rnn_jax
trains a few steps, and the comparison with Flax's own model writes its results file."""

import importlib
import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--steps", "3", "--batch-size", "4", "--hidden-size", "8", "--eval-size", "8"]


@pytest.fixture
def seq2seq_example(monkeypatch):
    """The example's modules, imported as its scripts import them (from their folder)."""
    monkeypatch.syspath_prepend(str(ROOT / "examples" / "seq2seq"))
    names = ("addition", "train", "compare_flax", "common")
    before = {name: sys.modules.get(name) for name in names}
    yield importlib.import_module("train"), importlib.import_module("compare_flax")
    for name, module in before.items():
        if module is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = module


def test_seq2seq_port_trains_a_few_steps(seq2seq_example, capsys):
    train, _ = seq2seq_example
    result = train.main([*TINY, "--log-every", "1"])
    assert set(result) == {"accuracy", "decoded"}
    out = capsys.readouterr().out.splitlines()
    losses = [
        float(line.split("loss ")[1].split(",")[0]) for line in out if line.startswith("step")
    ]
    assert len(losses) == 3 and all(math.isfinite(loss) for loss in losses)


def test_seq2seq_comparison_with_flax_writes_its_results(seq2seq_example, tmp_path):
    _, compare = seq2seq_example
    path = compare.main([*TINY, "--results", str(tmp_path)])
    doc = json.loads(path.read_text())
    assert [record["library"] for record in doc["records"]] == ["rnn_jax", "flax"]
    for record in doc["records"]:
        assert record["compile_s"] > 0 and record["median_s"] > 0
        assert 0 <= record["accuracy"] <= 1 and record["steps"] == 3
