"""The benchmark suite behind ``rnn-jax bench``: ``benchmarks/cpu_suite.py`` of a source checkout.

The benchmarks are not part of the installed package; they come with the
source (``git clone``, then ``pip install -e .``), whose root holds
``pyproject.toml``, ``rnn_jax/`` and ``benchmarks/``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

SUITE = Path("benchmarks") / "cpu_suite.py"


def source_root() -> Path:
    """The folder holding this ``rnn_jax`` package: a source checkout's root, or site-packages."""
    return Path(__file__).resolve().parents[2]


def find_suite() -> Path | None:
    """``benchmarks/cpu_suite.py`` of the checkout this package runs from; None when installed."""
    root = source_root()
    suite = root / SUITE
    return suite if (root / "pyproject.toml").is_file() and suite.is_file() else None


def run_suite(suite: Path, args: Sequence[str]) -> int:
    """Runs ``suite`` with ``args`` in its checkout (that checkout's ``rnn_jax`` first on the
    path); returns its exit code."""
    root = suite.parents[1]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    return subprocess.call([sys.executable, str(suite), *args], cwd=root, env=env)
