"""Tasks: shapes, determinism, the facts each task is built on, baselines, and bad data."""

import numpy as np
import pytest

import rnn_jax as rj
from rnn_jax.data import DataError


def test_adding_targets_are_the_marked_sums_and_predicting_one_scores_a_sixth():
    task = rj.data.adding(length=30)
    batch = task.train.batch(5, 16, seed=0)
    assert batch.inputs.shape == (30, 16, 2) and batch.targets.shape == (16, 1)
    values, marks = batch.inputs[..., 0], batch.inputs[..., 1]
    assert np.all(marks.sum(axis=0) == 2)
    assert np.all(marks[:15].sum(axis=0) == 1)  # one marker in each half
    np.testing.assert_allclose(batch.targets[:, 0], (values * marks).sum(axis=0), rtol=1e-6)
    assert abs(task.baselines["predict 1"]["mse"] - 1 / 6) < 0.02


def test_training_batches_depend_only_on_seed_and_step():
    task = rj.data.adding(length=10)
    a, b = task.train.batch(7, 8, seed=3), task.train.batch(7, 8, seed=3)
    np.testing.assert_array_equal(a.inputs, b.inputs)
    assert not np.array_equal(a.inputs, task.train.batch(8, 8, seed=3).inputs)
    assert not np.array_equal(a.inputs, task.train.batch(7, 8, seed=4).inputs)


def test_copy_memory_recalls_the_first_symbols_after_the_delimiter():
    """Bai et al.'s copy memory: the delimiter in the last 11 steps, the loss over all steps."""
    task = rj.data.copy_memory(length=20, symbols=8, memorize=10)
    batch = task.train.batch(0, 4, seed=0)
    assert batch.inputs.shape == (40, 4, 10) and batch.targets.shape == (40, 4)
    shown = batch.inputs.argmax(-1)
    np.testing.assert_array_equal(batch.targets[-10:], shown[:10])
    assert np.all(shown[10:29] == 0) and np.all(shown[29:] == 9)  # T - 1 blanks, delimiters
    assert np.all(batch.targets[:-10] == 0) and np.all(batch.mask == 1)
    memoryless = task.baselines["memoryless"]
    assert memoryless["nonblank_cross_entropy"] == pytest.approx(np.log(8))
    assert memoryless["cross_entropy"] == pytest.approx(10 * np.log(8) / 40)


def test_nonblank_metrics_score_only_the_recall_steps():
    labels = np.array([[0, 3], [2, 0]])
    logits = np.zeros((2, 2, 4), np.float32)
    logits[1, 0, 2] = 5.0  # right at one recall step, a uniform guess at the other
    objective_metrics = rj.train.losses.METRICS
    right, counted = objective_metrics["nonblank_accuracy"](logits, labels, np.ones((2, 2)))
    assert (float(right), float(counted)) == (1.0, 2.0)
    total, _ = objective_metrics["nonblank_cross_entropy"](logits, labels, np.ones((2, 2)))
    expected = -np.log(np.exp(5) / (np.exp(5) + 3)) + np.log(4)
    assert float(total) == pytest.approx(expected, rel=1e-5)


def test_array_split_batches_cover_every_row_once_with_one_shape():
    task = rj.data.digits()
    seen, shapes = 0.0, set()
    for batch in task.test.batches(100):
        shapes.add(batch.inputs.shape)
        seen += batch.mask.sum()
    assert shapes == {(64, 100, 1)}
    assert seen == len(task.test) == 359


def test_array_split_epochs_are_permutations():
    ids = np.arange(50, dtype=np.float32)
    split = rj.data.ArraySplit(rj.data.Batch(ids[:, None, None], ids, np.ones(50)), per_step=False)
    assert split.steps_per_epoch(16) == 3  # the last partial batch is dropped
    epoch = [split.batch(s, 16, seed=0).targets for s in range(3)]
    assert len(set(np.concatenate(epoch).tolist())) == 48
    assert split.batch(0, 16, seed=0).inputs.shape == (1, 16, 1)  # time-major
    assert not np.array_equal(split.batch(3, 16, seed=0).targets, epoch[0])


def test_digits_fed_pixel_by_pixel_or_row_by_row():
    pixels = rj.data.digits()
    rows = rj.data.digits(pixels_per_step=8)
    assert len(pixels.train) + len(pixels.val) + len(pixels.test) == 1797
    a = next(iter(pixels.test.batches(5)))
    b = next(iter(rows.test.batches(5)))
    assert a.inputs.shape == (64, 5, 1) and b.inputs.shape == (8, 5, 8)
    np.testing.assert_array_equal(a.inputs[:, :, 0], b.inputs.transpose(0, 2, 1).reshape(64, 5))
    assert a.inputs.min() >= 0 and a.inputs.max() <= 1


def test_forecasting_tasks_target_the_series_ahead():
    task = rj.data.mackey_glass(length=50, horizon=3, size=1000)
    batch = next(iter(task.test.batches(4)))
    np.testing.assert_array_equal(batch.inputs[3:], batch.targets[:-3])
    assert task.baselines["persistence"]["mse"] < task.baselines["training mean"]["mse"]
    series = rj.data.synthetic.mackey_glass_series(1000)
    assert 0.2 < series.min() < series.max() < 1.5 and series.std() > 0.1
    sun = rj.data.sunspots(length=20)
    assert rj.data.bundled.sunspot_series()[:2].tolist() == [5.0, 11.0]
    assert next(iter(sun.train.batches(4))).inputs.shape == (20, 4, 1)


def test_text_stream_continues_from_chunk_to_chunk(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("abcdefghij" * 300, encoding="utf-8")
    task = rj.data.char_text(str(path), length=10)
    assert task.vocab == tuple("abcdefghij")
    first, second = task.train.batch(0, 4, seed=0), task.train.batch(1, 4, seed=0)
    assert bool(first.reset) and not bool(second.reset)
    np.testing.assert_array_equal(first.targets[:-1], first.inputs[1:])
    np.testing.assert_array_equal(second.inputs[0], first.targets[-1])
    wrapped = task.train.batch(task.train.steps_per_epoch(4), 4, seed=0)
    np.testing.assert_array_equal(wrapped.inputs, first.inputs)
    assert rj.data.decode(rj.data.encode("cab", task.vocab), task.vocab) == "cab"


def test_text_defaults_to_the_standard_library():
    task = rj.data.char_text(length=32, max_chars=20_000)
    assert "def" in rj.data.decode(task.train.tokens[:5000], task.vocab)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        (b"", "is empty"),
        (b"\xff\xfe bad", "not UTF-8"),
        (b"short text", "need at least"),
    ],
)
def test_bad_text_files_are_refused_in_words(tmp_path, content, message):
    path = tmp_path / "data.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        rj.data.char_text(str(path), length=50)


def test_translation_targets_reverse_or_sort_the_source():
    for op, transform in [("reverse", lambda s: s[::-1]), ("sort", np.sort)]:
        task = rj.data.translation(op=op, length=6, min_length=2, symbols=5)
        batch = task.train.batch(0, 8, seed=0)
        source, decoder_inputs = batch.inputs
        for i, size in enumerate(batch.length):
            np.testing.assert_array_equal(batch.targets[:size, i], transform(source[:size, i]))
            assert batch.targets[size, i] == 2 and batch.mask[size, i] == 1
            assert batch.mask[size + 1 :, i].sum() == 0
        np.testing.assert_array_equal(decoder_inputs[1:], batch.targets[:-1])
        assert np.all(decoder_inputs[0] == 1)


def test_get_task_refuses_unknown_names_and_options():
    with pytest.raises(DataError, match="task must be one of"):
        rj.data.get_task("nope")
    with pytest.raises(DataError, match="unknown"):
        rj.data.get_task("digits", length=5)
    assert rj.data.get_task("adding", length=12).options["length"] == 12
