"""The documentation site builds from this checkout with no warning (``sphinx-build -W``), and
shows what it promises: the README's quickstart, the notebooks with their stored outputs, a
page per backend with its refusals and measurements, and the API reference.

One test builds once and checks every page (a module fixture would build once per xdist
worker)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MISSING = [
    m for m in ("sphinx", "myst_nb", "sphinx_book_theme") if importlib.util.find_spec(m) is None
]


@pytest.mark.skipif(
    bool(MISSING),
    reason=f"the docs extra is not installed (no {', '.join(MISSING)}): pip install -e '.[docs]'",
)
def test_docs_build_without_warnings_and_show_their_content(tmp_path):
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
    command += ["-d", str(tmp_path / "doctrees"), str(ROOT / "docs"), str(tmp_path / "html")]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-12000:]

    def page(name):
        return (tmp_path / "html" / name).read_text(encoding="utf-8")

    index = page("index.html")
    assert 'id="quickstart"' in index and "compare.json" in index  # the README's quickstart
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        html = page(f"notebooks/{notebook.stem}.html")
        assert "cell_output" in html, f"{notebook.name}: no stored output shown"
        if '"image/png"' in notebook.read_text():
            assert "<img" in html, f"{notebook.name}: its stored figures are not shown"
    parallel = page("backends/parallel.html")
    assert "it has no linear recurrence" in parallel  # the words its supports returns
    assert "parallel_suite-cpu-" in parallel  # the results file its medians come from
    assert "No results file" in page("backends/cudnn.html")  # none recorded: none shown
    assert "walks.stream.onnx" in page("deploy.html")  # the export round trip
    flat = page("api/rnn_jax.html")
    for name in ("rnn_jax.scan", "rnn_jax.lstm", "rnn_jax.Cell", "rnn_jax.bidirectional"):
        assert f'id="{name}"' in flat, name
    assert 'id="rnn_jax.export"' in flat
    assert 'id="rnn_jax.cells.get_cell"' in page("api/rnn_jax.cells.html")
    assert 'id="rnn_jax.interop.keras.from_keras"' in page("api/rnn_jax.interop.keras.html")
    porting = page("coming_from_flax.html")  # each difference a Flax user meets, with its fix
    assert "carry_from_flax" in porting and "clip_norm=None" in porting
