"""The CPU suite's report of its targets, from synthetic records; every suite imports."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import cpu_suite  # noqa: E402


def rec(cell, mode, median, **who):
    return {"cell": cell, "shape_label": "M", "mode": mode, "median_s": median, **who}


def test_targets_reached_from_medians():
    records = [
        rec("lstm", "forward_backward", 1.0, backend="sequential"),
        rec("lstm", "forward_backward", 0.9, library="torch"),  # torch faster: missed
        rec("lstm", "forward_backward", 1.4, library="flax"),  # 1.4x slower: reached
        rec("lstm", "forward", 1.0, backend="sequential"),
        rec("lstm", "forward", 0.85, library="torch"),  # torch faster: missed
        rec("lstm", "forward", 0.5, backend="reference"),  # other backends are not the baseline
        rec("simple", "forward_backward", 1.0, backend="sequential"),
        rec("simple", "forward_backward", 0.5, library="torch"),  # no torch target for simple
    ]
    got = {
        (t["cell"], t["mode"], t["peer"]): (t["peer_over_ours"], t["reached"])
        for t in cpu_suite.targets_reached(records)
    }
    assert got == {
        ("lstm", "forward_backward", "torch"): (0.9, False),
        ("lstm", "forward_backward", "flax"): (1.4, True),
        ("lstm", "forward", "torch"): (0.85, False),
    }


@pytest.mark.parametrize("script", sorted(p.stem for p in BENCHMARKS.glob("*.py")))
def test_every_suite_imports(script):
    # module-level code (grids, variants, the backends they configure) runs on import
    importlib.import_module(script)


def test_timing_refuses_a_busy_machine(monkeypatch, capsys):
    import common

    monkeypatch.setattr(common, "load_average", lambda: 100.0)
    with pytest.raises(SystemExit, match="load average is 100.0 .* pass --force"):
        common.require_quiet()
    assert common.require_quiet(force=True) == 100.0
    assert "timing anyway" in capsys.readouterr().out
    monkeypatch.setattr(common, "load_average", lambda: 0.0)
    assert common.require_quiet() == 0.0
