"""A user's data files: tables and arrays read into sequences, and the tasks made of them."""

import sys

import numpy as np
import pytest

import rnn_jax as rj
from rnn_jax._extras import MissingExtra
from rnn_jax.data import DataError, file_task, prediction_inputs, read_sequences


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def whole(split):
    """Every sequence of a split, batch-major, as the task holds them."""
    return split.data


def sequences_csv(tmp_path, labels, steps=3, name="walks.csv"):
    """A table of len(labels) sequences of ``steps`` rows, their rows interleaved."""
    lines = ["walk,x,z,label"]
    for t in range(steps):
        for i, label in enumerate(labels):
            lines.append(f"w{i},{i + 0.5 * t},{(-1) ** (i + t)},{label}")
    return write(tmp_path / name, "\n".join(lines) + "\n")


def test_the_rows_of_one_id_in_file_order_form_one_sequence(tmp_path):
    path = write(tmp_path / "d.csv", "id,x,y\nb,1,p\na,2,q\nb,3,p\n\na,4,q\nb,5,p\n")
    data = read_sequences(path, target="y", id="id")
    assert data.ids.tolist() == ["b", "a"]  # in the order ids first appear
    assert data.length.tolist() == [3, 2]
    assert data.features[..., 0].tolist() == [[1, 3, 5], [2, 4, 0]]  # zero past the length
    assert data.rows.tolist() == [[2, 4, 7], [3, 6, -1]]  # file lines, the blank one skipped
    assert data.target[:, :2].tolist() == [["p", "p"], ["q", "q"]]
    assert data.feature_names == ("x",)


def test_a_tsv_without_an_id_is_one_sequence_of_the_other_columns(tmp_path):
    path = write(tmp_path / "d.tsv", "a\tb\tc\n1\t2\t3\n4\t5\t6\n")
    data = read_sequences(path, target="b")
    assert data.features.tolist() == [[[1, 3], [4, 6]]] and data.feature_names == ("a", "c")
    assert read_sequences(path, target="b", features=["c", "b"]).features.tolist() == [
        [[3, 2], [6, 5]]
    ]


def test_an_npz_reads_only_the_steps_within_each_length(tmp_path):
    x = np.arange(12.0).reshape(3, 4)
    x[0, 2:] = np.nan  # padding past the length is never read
    path = tmp_path / "d.npz"
    np.savez(path, x=x, length=np.array([2, 4, 1]), y=np.array(["a", "b", "a"]), id=[7, 8, 9])
    data = read_sequences(path)
    assert data.features.shape == (3, 4, 1)
    assert data.features[..., 0].tolist() == [[0, 1, 0, 0], [4, 5, 6, 7], [8, 0, 0, 0]]
    assert data.ids.tolist() == ["7", "8", "9"] and data.target.tolist() == ["a", "b", "a"]


def test_parquet_reads_as_the_same_table_does(tmp_path):
    parquet = pytest.importorskip("pyarrow.parquet")
    import pyarrow

    csv = write(tmp_path / "d.csv", "id,x,y\nb,1.5,p\na,2,q\nb,3,p\n")
    table = pyarrow.table({"id": ["b", "a", "b"], "x": [1.5, 2.0, 3.0], "y": ["p", "q", "p"]})
    parquet.write_table(table, tmp_path / "d.parquet")
    from_parquet = read_sequences(tmp_path / "d.parquet", target="y", id="id")
    from_csv = read_sequences(csv, target="y", id="id")
    np.testing.assert_array_equal(from_parquet.features, from_csv.features)
    assert from_parquet.target.tolist() == from_csv.target.tolist()


def test_parquet_without_pyarrow_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    path = tmp_path / "d.parquet"
    path.write_bytes(b"PAR1")
    with pytest.raises(MissingExtra, match=r"needs pyarrow: pip install 'rnn_jax\[data\]'$"):
        read_sequences(path, target="y")


@pytest.mark.parametrize(
    ("labels", "objective"),
    [
        (["cat", "dog", "cat", "eel"], "classify"),  # text
        ([0, 1, 2, 1], "classify"),  # few whole numbers
        ([0.5, 1.25, 2.0, 1.0], "regress"),
        (list(range(25)), "regress"),  # more whole numbers than classes are inferred
    ],
)
def test_the_objective_is_inferred_from_the_targets(tmp_path, labels, objective):
    task = file_task(sequences_csv(tmp_path, labels), target="label", id="walk")
    assert task.encoding["objective"] == objective
    assert task.kind == rj.data.user_data.KINDS[objective]


def test_a_target_that_changes_within_sequences_is_forecast(tmp_path):
    path = sequences_csv(tmp_path, [1, 2, 3, 4], steps=10)
    assert file_task(path, target="x", id="walk").kind == "forecasting"
    series = file_task(path, target="x", features=["z"], length=3)  # 40 rows of one series
    assert series.kind == "forecasting" and series.encoding["window"] == 3


def test_a_classify_task_splits_the_sequences_and_scales_with_the_training_split(tmp_path):
    labels = ["up", "down", "up", "up", "flat", "down", "up", "down", "up", "flat"]
    task = file_task(sequences_csv(tmp_path, labels, steps=4), target="label", id="walk")
    splits = [whole(task.train), whole(task.val), whole(task.test)]
    assert [len(s.targets) for s in splits] == [6, 2, 2]  # 70/15/15, rounded
    assert task.encoding["classes"] == ["down", "flat", "up"] and task.output_size == 3
    targets = np.concatenate([s.targets for s in splits])
    assert sorted(targets.tolist()) == sorted([["down", "flat", "up"].index(x) for x in labels])
    train = splits[0].inputs.reshape(-1, 2)  # every step is valid: four rows per sequence
    np.testing.assert_allclose(train.mean(axis=0), 0.0, atol=1e-6)
    np.testing.assert_allclose(train.std(axis=0), 1.0, atol=1e-6)
    majority = np.bincount(splits[0].targets).argmax()
    expected = np.mean(splits[2].targets == majority)
    assert task.baselines["majority class"]["accuracy"] == pytest.approx(expected)


def test_regression_targets_are_standardised_and_decoded_back(tmp_path):
    values = [1.5, 3.0, -2.0, 7.25, 0.0, 4.5]
    task = file_task(sequences_csv(tmp_path, values), target="label", id="walk")
    encoding = task.encoding
    z = np.concatenate([whole(s).targets for s in (task.train, task.val, task.test)])
    decoded = rj.data.decode_outputs(z, encoding)
    assert sorted(decoded.tolist()) == pytest.approx(sorted(values), abs=1e-5)
    train = whole(task.train).targets
    assert float(train.mean()) == pytest.approx(0.0, abs=1e-6)


def test_one_series_is_cut_into_windows_whose_targets_lie_horizon_steps_ahead(tmp_path):
    rows = "\n".join(f"{np.sin(t / 5):.5f}\t{np.cos(t / 9):.5f}" for t in range(120))
    path = write(tmp_path / "series.tsv", "a\tv\n" + rows + "\n")
    task = file_task(path, target="v", length=10, horizon=3)
    assert task.kind == "forecasting" and task.input_size == 2  # a, then v's own past
    train = whole(task.train)
    assert train.inputs.shape == (84 - 13 + 1, 10, 2) and train.length.tolist() == [10] * 72
    # v as an input and v as a target are scaled alike, so the target is the input 3 steps on
    np.testing.assert_allclose(train.targets[:, :-3, 0], train.inputs[:, 3:, 1], atol=1e-5)
    test = whole(task.test)  # persistence: v now as the forecast of v 3 steps on
    persistence = np.mean((test.inputs[..., 1] - test.targets[..., 0]) ** 2)
    assert task.baselines["persistence"]["mse"] == pytest.approx(persistence, rel=1e-5)


def test_forecasting_sequences_reads_each_one_whole_less_the_horizon(tmp_path):
    x = np.random.default_rng(0).normal(size=(5, 8, 2))
    y = np.cumsum(x[..., 0], axis=1)
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=y, length=np.array([8, 5, 3, 8, 6]))
    task = file_task(path, horizon=2)
    assert task.kind == "forecasting" and task.input_size == 2  # x alone: y is not an input
    lengths = np.concatenate([whole(s).length for s in (task.train, task.val, task.test)])
    assert sorted(lengths.tolist()) == [1, 3, 4, 6, 6]
    for split in (task.train, task.val, task.test):
        data = whole(split)
        assert data.mask.sum(axis=1).tolist() == data.length.tolist()


def test_prediction_inputs_are_the_training_inputs_of_the_same_file(tmp_path):
    labels = ["a", "b", "a", "b", "a", "b"]
    path = sequences_csv(tmp_path, labels)
    task = file_task(path, target="label", id="walk")
    read = prediction_inputs(path, task.encoding)
    assert read.ids.tolist() == [f"w{i}" for i in range(6)] and not read.per_step
    held = np.concatenate([whole(s).inputs for s in (task.train, task.val, task.test)])
    by_bytes = lambda a: sorted(row.tobytes() for row in a)
    assert by_bytes(read.inputs) == by_bytes(held)


def test_prediction_windows_end_at_every_row_of_a_series(tmp_path):
    rows = "\n".join(f"{t % 7}" for t in range(60))
    path = write(tmp_path / "s.csv", "v\n" + rows + "\n")
    task = file_task(path, target="v", length=5)
    read = prediction_inputs(path, task.encoding)
    assert read.steps.tolist() == list(range(4, 60)) and read.inputs.shape == (56, 5, 1)
    values = rj.data.decode_outputs(read.inputs[..., -1:], task.encoding)  # v's own scaling
    np.testing.assert_allclose(values[:, -1], np.arange(4, 60) % 7, atol=1e-5)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"horizon": 2}, "horizon applies to forecast"),
        ({"length": 5}, r"length \(the window\) applies to forecasting one series"),
        ({"objective": "cluster"}, "objective must be one of"),
    ],
)
def test_options_the_objective_does_not_read_are_refused(tmp_path, options, message):
    with pytest.raises(DataError, match=message):
        file_task(sequences_csv(tmp_path, ["a", "b", "a"]), target="label", id="walk", **options)
