"""The fit loop: learning, determinism, early stopping, truncated BPTT and checkpoints."""

import functools
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_jax as rj
from rnn_jax.train import (
    Checkpointer,
    CheckpointError,
    CheckpointWarning,
    EarlyStopping,
    fit,
    supervised,
)

TASK = rj.data.adding(length=12)
MODEL = rj.models.classifier(rj.gru(8), 1, input_size=2)
OBJECTIVE = supervised(MODEL.apply, "mse", ["mse"])


def batches(step):
    return TASK.train.batch(step, 16, seed=0)


def train(steps, lr=1e-2, **kwargs):
    optimizer, _ = rj.train.make_optimizer("adam", lr)
    params = MODEL.init(jax.random.key(0))
    return fit(OBJECTIVE, params, optimizer, batches, steps=steps, progress=False, **kwargs)


@functools.cache
def uninterrupted(steps):
    return train(steps)


def leaves_equal(a, b):
    return all(
        np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def test_fit_learns_and_is_deterministic():
    first = train(60, val=lambda: TASK.val.batches(250), eval_every=30)
    second = train(60, val=lambda: TASK.val.batches(250), eval_every=30)
    assert leaves_equal(first.params, second.params)
    assert [r["step"] for r in first.history["val"]] == [30, 60]
    assert first.history["train"][-1]["loss"] < first.history["train"][0]["loss"]
    assert first.history["val"][-1]["loss"] < TASK.baselines["predict 1"]["mse"]


def test_an_empty_batch_breaks_nothing():
    # A stream's last batch may hold no sequences: its loss is 0 (a masked mean over nothing),
    # its gradients are zero, and training goes on.
    full = batches(0)
    empty = full._replace(
        inputs=full.inputs[:, :0],
        targets=full.targets[:0],
        mask=full.mask[:0],
        length=None if full.length is None else full.length[:0],
    )
    loss, _ = OBJECTIVE.loss(MODEL.init(jax.random.key(0)), empty, None, None)
    assert float(loss) == 0.0
    optimizer, _ = rj.train.make_optimizer("sgd", 1e-2)
    params = MODEL.init(jax.random.key(0))
    result = fit(OBJECTIVE, params, optimizer, lambda step: empty, steps=2, progress=False)
    assert leaves_equal(result.params, params)  # zero gradients: plain SGD moves nothing
    result = fit(
        OBJECTIVE,
        params,
        optimizer,
        lambda step: empty if step % 2 else batches(step),
        steps=4,
        progress=False,
    )
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(result.params))


def test_early_stopping_stops_and_returns_the_best_params():
    result = train(
        200,
        lr=1e-9,
        val=lambda: TASK.val.batches(250),
        eval_every=10,
        early_stopping=EarlyStopping(patience=2, min_delta=1.0),
    )
    assert result.stopped_early and result.step == 30 and result.best_step == 10
    assert len(result.history["val"]) == 3


def test_resuming_from_a_checkpoint_continues_exactly(tmp_path):
    whole = uninterrupted(30)
    directory = tmp_path / "ckpt"
    config = {"run": "a"}
    part = train(20, checkpointer=Checkpointer(directory), checkpoint_every=10, config=config)
    assert Checkpointer(directory).steps() == [10, 20]
    assert not leaves_equal(part.params, whole.params)
    resumed = train(30, checkpointer=Checkpointer(directory), resume=True, config=config)
    assert resumed.step == 30
    assert leaves_equal(resumed.params, whole.params)
    assert [r["step"] for r in resumed.history["train"]] == [10, 20, 25, 30]


@pytest.fixture(scope="module")
def checkpointed_run(tmp_path_factory):
    """A run of 30 steps that kept its checkpoints of steps 20 and 30."""
    directory = tmp_path_factory.mktemp("run") / "ckpt"
    train(30, checkpointer=Checkpointer(directory), checkpoint_every=10, config={"run": "a"})
    assert Checkpointer(directory).steps() == [20, 30]
    return directory


def largest_file(directory):
    return max((p for p in directory.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


# What a crash or a full disk leaves of the newest checkpoint: a data file cut short, an index
# file lost, a metadata file written empty.
DAMAGES = {
    "truncated": (
        lambda step: largest_file(step / "state"),
        lambda f: f.write_bytes(f.read_bytes()[:9]),
    ),
    "missing": (lambda step: step / "params" / "manifest.ocdbt", lambda f: f.unlink()),
    "zero-length": (lambda step: step / "meta" / "metadata", lambda f: f.write_bytes(b"")),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_resume_passes_over_a_damaged_checkpoint(tmp_path, checkpointed_run, damage):
    directory = tmp_path / "ckpt"
    shutil.copytree(checkpointed_run, directory)
    find, spoil = DAMAGES[damage]
    spoil(find(directory / "30"))
    with pytest.warns(CheckpointWarning, match=r"/30 .*; going back to step 20$") as caught:
        resumed = train(
            40,
            checkpointer=Checkpointer(directory),
            checkpoint_every=10,
            resume=True,
            config={"run": "a"},
        )
    assert len(caught) == 1 and "\n" not in str(caught[0].message)
    assert resumed.step == 40 and leaves_equal(resumed.params, uninterrupted(40).params)
    assert [r["step"] for r in resumed.history["train"]] == [10, 20, 25, 30, 40]
    assert Checkpointer(directory).steps() == [30, 40] and (directory / "30.damaged").is_dir()


def test_checkpoint_errors_are_clear(tmp_path):
    directory = tmp_path / "ckpt"
    train(5, checkpointer=Checkpointer(directory), config={"hidden": 8})
    with pytest.raises(CheckpointError, match="already holds a checkpoint"):
        train(5, checkpointer=Checkpointer(directory), config={"hidden": 8})
    with pytest.raises(CheckpointError, match="hidden: 8 there, 16 here"):
        train(10, checkpointer=Checkpointer(directory), resume=True, config={"hidden": 16})
    with pytest.raises(CheckpointError, match="no checkpoint to resume"):
        train(5, checkpointer=Checkpointer(tmp_path / "empty"), resume=True)
    assert not (tmp_path / "empty").exists()

    other = rj.models.classifier(rj.gru(4), 1, input_size=2)
    with pytest.raises(CheckpointError, match="shape"):
        Checkpointer(directory).restore("params", other.init(jax.random.key(0)))

    for path in (directory / "5" / "params").rglob("*"):
        if path.is_file():
            path.write_bytes(b"\0garbage" * 8)
    with pytest.raises(CheckpointError, match="could not be restored"):
        train(10, checkpointer=Checkpointer(directory), resume=True, config={"hidden": 8})


def test_truncated_bptt_carries_the_state_across_chunks(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("the quick brown fox jumps over the lazy dog. " * 60, encoding="utf-8")
    task = rj.data.char_text(str(path), length=8)
    model = rj.models.generator(rj.lstm(8), task.vocab_size, embed_size=4)
    objective = supervised(model.apply, "cross_entropy", ["cross_entropy"], stateful=True)
    params = model.init(jax.random.key(0))
    first, second = task.train.batch(0, 3, 0), task.train.batch(1, 3, 0)
    carry = objective.init_carry(params, first)
    loss_fn = jax.jit(objective.loss)
    _, carry = loss_fn(params, first, None, carry)
    chunk_loss, _ = loss_fn(params, second, None, carry)
    # The same loss from one pass over both chunks, scored on the second only.
    both = first._replace(
        inputs=np.concatenate([first.inputs, second.inputs]),
        targets=np.concatenate([first.targets, second.targets]),
        mask=np.concatenate([np.zeros_like(first.mask), second.mask]),
        reset=None,
    )
    whole_loss, _ = loss_fn(params, both, None, objective.init_carry(params, both))
    np.testing.assert_allclose(float(chunk_loss), float(whole_loss), rtol=1e-5)
    restarted, _ = loss_fn(params, first, None, carry)  # reset: the scan restarts at step 0
    fresh, _ = loss_fn(params, first, None, objective.init_carry(params, first))
    assert float(restarted) == float(fresh)
    assert jnp.isfinite(chunk_loss)
