"""A light core: ``import rnn_jax`` loads neither the application nor its packages, and a
missing package of an extra is named in one line, with the command that installs it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import rnn_jax as rj
from rnn_jax._extras import MissingExtra
from rnn_jax.train.checkpoint import Checkpointer
from rnn_jax.train.progress import Progress

ROOT = Path(__file__).resolve().parents[1]
ABOVE_THE_CORE = ("rnn_jax.app", "rnn_jax.train", "rnn_jax.data", "rnn_jax.models", "rnn_jax.cli")
EXTRAS = ("orbax", "matplotlib", "sklearn", "statsmodels", "tqdm", "pandas", "pyarrow")


def test_import_rnn_jax_loads_only_the_core():
    script = "import json, sys, rnn_jax; print(json.dumps(sorted(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, env=env
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.splitlines()[-1])
    assert "rnn_jax.backends" in loaded and "rnn_jax.cells" in loaded
    assert not [name for name in loaded if name.startswith(ABOVE_THE_CORE)]
    assert not [name for name in loaded if name.split(".")[0] in EXTRAS]


def test_the_application_loads_at_first_use():
    assert "train" in dir(rj) and "app" in rj.__all__
    assert rj.train.fit is sys.modules["rnn_jax.train"].fit
    with pytest.raises(AttributeError, match="has no attribute 'trains'"):
        rj.trains  # noqa: B018


@pytest.mark.parametrize(
    ("package", "use", "message"),
    [
        (
            "matplotlib",
            lambda tmp: rj.app.plot_curves({"a": ([1], [1.0])}, tmp / "a.png"),
            "writing plots needs matplotlib: pip install 'rnn_jax[app]'",
        ),
        (
            "orbax",
            lambda tmp: Checkpointer(tmp),
            "saving and restoring checkpoints needs orbax-checkpoint: pip install 'rnn_jax[app]'",
        ),
        (
            "tqdm",
            lambda tmp: Progress(10, enabled=True),
            "the progress bar needs tqdm: pip install 'rnn_jax[app]'",
        ),
        (
            "sklearn",
            lambda tmp: rj.data.digits(),
            "the digits task needs scikit-learn: pip install 'rnn_jax[app]'",
        ),
        (
            "statsmodels",
            lambda tmp: rj.data.sunspots(),
            "the sunspots task needs statsmodels: pip install 'rnn_jax[app]'",
        ),
    ],
)
def test_a_missing_extra_is_named_in_one_line(tmp_path, monkeypatch, package, use, message):
    monkeypatch.setitem(sys.modules, package, None)  # its import fails as if not installed
    with pytest.raises(MissingExtra) as raised:
        use(tmp_path)
    assert str(raised.value) == message
    assert not list(tmp_path.iterdir())
