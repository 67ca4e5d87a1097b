"""rnn-jax bench: the suite of this source checkout, or one line saying a checkout is needed."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from rnn_jax import cli
from rnn_jax.app import bench

ROOT = Path(__file__).resolve().parents[2]


def test_the_suite_is_found_in_this_checkout():
    assert bench.find_suite() == ROOT / "benchmarks" / "cpu_suite.py"


def test_bench_passes_its_arguments_to_the_suite(monkeypatch, tmp_path):
    suite = tmp_path / "benchmarks" / "cpu_suite.py"
    suite.parent.mkdir()
    suite.write_text("import sys\nsys.exit(len(sys.argv[1:]))\n")
    monkeypatch.setattr(bench, "find_suite", lambda: suite)
    assert cli.main(["bench", "--quick", "--json", "x.json"]) == 3
    assert cli.main(["bench", "--", "--help"]) == 1


def test_an_installed_package_without_benchmarks_says_so_in_one_line(tmp_path):
    site = tmp_path / "site-packages"
    shutil.copytree(
        ROOT / "rnn_jax", site / "rnn_jax", ignore=shutil.ignore_patterns("__pycache__")
    )
    result = subprocess.run(
        [sys.executable, "-m", "rnn_jax", "bench", "--quick"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(site)},
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("rnn-jax: error: bench needs a source checkout")
    assert str(site) in lines[0] and not result.stdout  # the copy ran, and nothing else
