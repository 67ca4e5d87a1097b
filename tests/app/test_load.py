"""load_run: a run rebuilt from its checkpoint directory predicts as the trained params do."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_jax import app
from rnn_jax.app import RunConfig
from rnn_jax.train import Checkpointer, CheckpointError, fit, make_optimizer

CONFIG = RunConfig(
    task_options={"length": 10}, cell="gru", hidden=8, batch=16, steps=30, eval_every=30, lr=0.01
)


def test_loaded_params_predict_as_the_trained_params(tmp_path):
    task = app.make_task(CONFIG)
    info = task.info()
    model = app.make_model(CONFIG, info)
    optimizer, _ = make_optimizer("adam", CONFIG.lr)
    trained = fit(
        app.make_objective(model, info),
        model.init(jax.random.key(0)),
        optimizer,
        lambda step: task.train.batch(step, CONFIG.batch, seed=0),
        steps=CONFIG.steps,
        checkpointer=Checkpointer(tmp_path),
        config=CONFIG.to_dict(),
        meta={"task_info": info},
        progress=False,
    )
    loaded = app.load_run(tmp_path)
    assert loaded.config == CONFIG and loaded.step == CONFIG.steps and loaded.finished
    batch = next(iter(loaded.task().test.batches(32)))
    predict = lambda model, params: model.apply(params, jnp.asarray(batch.inputs))[1]
    np.testing.assert_array_equal(
        predict(loaded.model, loaded.params), predict(model, trained.params)
    )
    untrained = predict(model, model.init(jax.random.key(0)))
    assert not np.allclose(predict(loaded.model, loaded.params), untrained)


def test_a_directory_without_a_run_is_refused_in_words(tmp_path):
    with pytest.raises(CheckpointError, match="is not a directory"):
        app.load_run(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        app.load_run(tmp_path)
    Checkpointer(tmp_path).save(1, {"w": np.ones(2)}, {"step": 1}, {"config": CONFIG.to_dict()})
    with pytest.raises(CheckpointError, match="no task sizes"):
        app.load_run(tmp_path)
