"""``rnn-jax train --data`` and ``rnn-jax predict``: a CSV and an .npz run end to end, and
every bad file ending in one line, exit code 2 and nothing written."""

import csv
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_cli import fails_cleanly  # one line on stderr, exit 2, no out/ or ckpt/ in tmp_path

from rnn_jax import app, cli

TINY = ["--cell", "gru", "--hidden", "4", "--batch", "4", "--steps", "4", "--no-progress"]


def walks_csv(path, count=12):
    """``count`` walks of 3 to 5 rows, two features; labelled by the sign of their drift."""
    rng = np.random.default_rng(0)
    lines = ["walk,x,noise,label"]
    for i in range(count):
        drift = 1.0 if i % 2 else -1.0
        for t in range(3 + i % 3):
            label = "up" if i % 2 else "down"
            lines.append(f"w{i},{drift * t + rng.normal():.4f},{rng.normal():.4f},{label}")
    path.write_text("\n".join(lines) + "\n")
    return path


def series_npz(path):
    """Nine sequences of up to 6 steps: x [9, 6, 2], the series y [9, 6] to forecast, length."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(9, 6, 2))
    np.savez(
        path, x=x, y=np.cumsum(x[..., 0], axis=1), length=np.array([6, 4, 5, 6, 3, 6, 5, 4, 6])
    )
    return path


def series_csv(path):
    """One series of 80 rows, no id column: a temperature and the load to forecast."""
    t = np.arange(80)
    rows = [f"{np.sin(i / 6):.4f},{np.cos(i / 6) + 0.01 * i:.4f}" for i in t]
    path.write_text("temp,load\n" + "\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Runs trained once for this module: classify sequences of a CSV, forecast the
    sequences of an .npz, forecast one series of a CSV in windows."""
    root = tmp_path_factory.mktemp("runs")
    files = {
        "csv": walks_csv(root / "walks.csv"),
        "npz": series_npz(root / "series.npz"),
        "series": series_csv(root / "load.csv"),
    }
    columns = {
        "csv": ["--target", "label", "--id", "walk"],
        "npz": [],
        "series": ["--target", "load", "--length", "8", "--horizon", "2"],
    }
    for name, path in files.items():
        argv = ["train", "--data", str(path), *columns[name], *TINY]
        argv += ["--checkpoint-dir", str(root / name / "ckpt"), "--out", str(root / name / "out")]
        assert cli.main(argv) == 0
    return root, files


def results(root, name):
    return json.loads((root / name / "out" / "results.json").read_text())


def read_csv(path):
    with path.open(newline="") as file:
        return list(csv.reader(file))


def test_a_csv_run_reports_what_a_built_in_task_run_does(trained):
    root, files = trained
    run = results(root, "csv")
    assert (
        run["task"] == "walks" and run["steps"] == 4 and run["config"]["data"] == str(files["csv"])
    )
    assert set(run["test"]) == {"loss", "cross_entropy", "accuracy"}
    assert set(run["baselines"]) == {"majority class", "training frequencies"}
    assert (root / "csv" / "out" / "history.png").read_bytes()[:4] == b"\x89PNG"
    loaded = app.load_run(root / "csv" / "ckpt")
    assert loaded.finished and loaded.info["encoding"]["classes"] == ["down", "up"]


def test_an_npz_run_forecasts_each_sequence_against_persistence(trained):
    root, _ = trained
    run = results(root, "npz")
    assert run["description"].startswith("forecast y 1 step(s) ahead in 9 sequences")
    assert set(run["test"]) == {"loss", "mse"} and "persistence" in run["baselines"]


def scaled_outputs(loaded, x, length):
    """The run's model on ``x [N, T, F]``, scaled by its encoding here: batch-major outputs."""
    encoding = loaded.info["encoding"]
    valid = np.arange(x.shape[1])[None, :, None] < length[:, None, None]
    z = np.where(valid, (x - np.array(encoding["mean"])) / np.array(encoding["std"]), 0.0)
    apply = jax.jit(lambda params, xs, n: loaded.model.apply(params, xs, length=n)[1])
    xs = jnp.asarray(np.swapaxes(z, 0, 1), jnp.float32)
    return np.asarray(apply(loaded.params, xs, jnp.asarray(length)))


def test_predict_writes_the_label_of_each_csv_sequence(trained, tmp_path, capsys):
    root, files = trained
    out = tmp_path / "predictions.csv"
    argv = ["predict", "--run", str(root / "csv" / "ckpt"), "--data", str(files["csv"])]
    assert cli.main([*argv, "--out", str(out)]) == 0
    assert "12 predictions" in capsys.readouterr().out
    rows = read_csv(out)
    assert rows[0] == ["walk", "prediction"] and [r[0] for r in rows[1:]] == [
        f"w{i}" for i in range(12)
    ]

    by_walk = {}
    for walk, x, noise, _ in read_csv(files["csv"])[1:]:
        by_walk.setdefault(walk, []).append([float(x), float(noise)])
    length = np.array([len(by_walk[f"w{i}"]) for i in range(12)])
    x = np.zeros((12, length.max(), 2))
    for i in range(12):
        x[i, : length[i]] = by_walk[f"w{i}"]
    loaded = app.load_run(root / "csv" / "ckpt")
    expected = np.array(["down", "up"])[scaled_outputs(loaded, x, length).argmax(axis=-1)]
    assert [r[1] for r in rows[1:]] == expected.tolist()


def test_predict_forecasts_every_step_of_the_npz_in_the_targets_units(trained, tmp_path):
    root, files = trained
    out = tmp_path / "forecast.csv"
    argv = ["predict", "--run", str(root / "npz" / "ckpt"), "--data", str(files["npz"])]
    assert cli.main([*argv, "--out", str(out)]) == 0
    rows = read_csv(out)
    arrays = np.load(files["npz"])
    length = arrays["length"]
    assert rows[0] == ["sequence", "step", "prediction"] and len(rows) == 1 + length.sum()
    assert [(int(r[0]), int(r[1])) for r in rows[1:6]] == [(0, t) for t in range(5)]
    loaded = app.load_run(root / "npz" / "ckpt")
    encoding = loaded.info["encoding"]
    outputs = np.swapaxes(scaled_outputs(loaded, arrays["x"], length), 0, 1)[..., 0]
    expected = [
        outputs[i, t] * encoding["target_std"] + encoding["target_mean"]
        for i in range(9)
        for t in range(length[i])
    ]
    np.testing.assert_allclose([float(r[2]) for r in rows[1:]], expected, rtol=1e-5, atol=1e-5)


def test_predict_forecasts_from_the_window_ending_at_each_row_of_a_series(trained, tmp_path):
    root, files = trained
    out = tmp_path / "load.csv"
    argv = ["predict", "--run", str(root / "series" / "ckpt"), "--data", str(files["series"])]
    assert cli.main([*argv, "--out", str(out)]) == 0
    rows = read_csv(out)
    assert rows[0] == ["step", "prediction"] and [int(r[0]) for r in rows[1:]] == list(range(7, 80))
    table = np.array([[float(v) for v in row] for row in read_csv(files["series"])[1:]])
    windows = table[np.arange(7, 80)[:, None] - np.arange(8)[::-1][None, :]]  # [73, 8, 2]
    loaded = app.load_run(root / "series" / "ckpt")
    encoding = loaded.info["encoding"]
    assert encoding["target_as_input"] and encoding["window"] == 8 and encoding["horizon"] == 2
    outputs = scaled_outputs(loaded, windows, np.full(73, 8))[-1, :, 0]  # each window's last step
    expected = outputs * encoding["target_std"] + encoding["target_mean"]
    np.testing.assert_allclose([float(r[1]) for r in rows[1:]], expected, rtol=1e-5, atol=1e-5)


OBJECT_ARRAY = np.array([np.ones(3), np.ones(4)], dtype=object)
NAN_PADDED = np.where(np.arange(4) < 2, 1.0, np.nan) * np.ones((3, 1))
GOOD = "walk,x,label\na,1,p\nb,2,q\nc,3,p\n"


@pytest.mark.parametrize(
    ("name", "content", "extra", "message"),
    [
        ("d.csv", None, [], "d.csv does not exist"),
        ("d.csv", "", [], "d.csv is empty"),
        ("d.xlsx", "x", [], "must end in one of .csv, .tsv, .parquet, .npz, .npy; got .xlsx"),
        ("d.csv", "walk,x,label\n", [], "has a header but no rows"),
        (
            "d.csv",
            GOOD,
            ["--target", "nope"],
            "has no column 'nope' (--target); its columns: walk, x, label",
        ),
        ("d.csv", GOOD, ["--features", "x,y"], "has no column 'y' (--features)"),
        (
            "d.csv",
            GOOD.replace(",2,", ",two,"),
            [],
            "line 3, column 'x': expected a number; got 'two'",
        ),
        (
            "d.csv",
            GOOD.replace(",2,", ",nan,"),
            [],
            "line 3, column 'x': expected a finite number; got 'nan'",
        ),
        ("d.csv", GOOD.replace(",2,", ",-inf,"), [], "expected a finite number; got '-inf'"),
        (
            "d.csv",
            GOOD.replace(",2,", ",,"),
            [],
            "line 3, column 'x': expected a number; got an empty field",
        ),
        ("d.csv", GOOD + "d,4\n", [], "line 5: 2 fields; the header has 3"),
        (
            "d.csv",
            "walk,x,label\na,1,0.5\nb,2,1\nc,3,2\n",
            ["--objective", "classify"],
            "classify needs class labels",
        ),
        (
            "d.csv",
            GOOD,
            ["--objective", "regress"],
            "line 2, column 'label' (the target, to regress): expected a number; got 'p'",
        ),
        (
            "d.csv",
            GOOD + "a,4,q\n",
            ["--objective", "classify"],
            "line 5: column 'label' changes within sequence 'a'",
        ),
        (
            "d.csv",
            "walk,x,label\na,1,p\nb,2,q\n",
            [],
            "holds 2 sequences; the train, validation and test splits need at least 3",
        ),
        ("d.npz", {"x": OBJECT_ARRAY}, [], "holds an object array (ragged sequences?)"),
        (
            "d.npz",
            {"x": NAN_PADDED, "y": np.ones(3)},
            [],
            "x at sequence 0, step 2, feature 0 (within its length; NaN padding needs 'length'",
        ),
        ("d.npz", {"y": np.ones(3)}, [], "has no array 'x'"),
        (
            "d.npz",
            {"x": np.ones((3, 4)), "length": np.array([4, 5, 1])},
            [],
            "length of sequence 1 must be in 1..4",
        ),
        (
            "d.npz",
            {"x": np.ones((3, 4)), "y": np.ones((2,))},
            [],
            "array 'y' must be numbers or text of shape [N]",
        ),
        (
            "d.npz",
            {"x": np.ones((3, 4)), "y": np.ones(3)},
            ["--target", "y"],
            "--target names a column of a table",
        ),
        ("d.npy", np.ones((3, 4, 1)), [], "holds no targets to train on"),
    ],
)
def test_a_bad_file_ends_in_one_line_and_writes_nothing(
    capsys, tmp_path, name, content, extra, message
):
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content)
    elif isinstance(content, dict):
        np.savez(path, **content)
    elif content is not None:
        np.save(path, content)
    columns = ["--target", "label", "--id", "walk"] if name.endswith((".csv", ".xlsx")) else []
    if "--target" in extra:
        columns = columns[2:] if columns else []
    out, ckpt = tmp_path / "out", tmp_path / "ckpt"
    argv = [
        "train",
        "--data",
        str(path),
        *columns,
        *extra,
        "--out",
        str(out),
        "--checkpoint-dir",
        str(ckpt),
    ]
    fails_cleanly(capsys, argv, message, tmp_path)


def test_parquet_without_pyarrow_ends_in_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    path = tmp_path / "d.parquet"
    path.write_bytes(b"PAR1")
    out = tmp_path / "out"
    argv = ["train", "--data", str(path), "--target", "y", "--out", str(out)]
    fails_cleanly(capsys, argv, "needs pyarrow: pip install 'rnn_jax[data]'", tmp_path)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--data", "d.csv", "--task", "digits"], "--data replaces --task"),
        (["train", "--target", "y"], "target applies to a data file"),
        (
            ["train", "--data", "d.csv", "--task-option", "symbols=3"],
            "a data file takes task options",
        ),
        (["train", "--objective", "cluster"], "objective must be one of"),
    ],
)
def test_data_options_are_checked_before_anything_is_read(capsys, tmp_path, argv, message):
    fails_cleanly(capsys, [*argv, "--out", str(tmp_path / "out")], message, tmp_path)


def test_predict_refuses_a_file_unlike_the_training_file(trained, capsys, tmp_path):
    root, files = trained
    out = tmp_path / "out"  # the CSV predict would write
    bad = tmp_path / "walks.csv"
    bad.write_text("walk,label\na,up\n")
    run = ["predict", "--run", str(root / "csv" / "ckpt"), "--out", str(out)]
    fails_cleanly(capsys, [*run, "--data", str(bad)], "has no column 'x' (--features)", tmp_path)
    trained_on = "the run was trained on a table"
    fails_cleanly(capsys, [*run, "--data", str(files["npz"])], trained_on, tmp_path)
    missing = ["predict", "--run", str(tmp_path / "none"), "--data", str(bad), "--out", str(out)]
    fails_cleanly(capsys, missing, "is not a directory", tmp_path)
