"""RunConfig: JSON round trips, and `check` naming the setting, what it expected and what came."""

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import pytest

import rnn_jax as rj
from rnn_jax.app import ConfigError, RunConfig

CHANGED = RunConfig(
    task="translate",
    task_options={"length": 12, "op": "sort"},
    cell="multihead_gru",
    cell_options={"num_heads": 2},
    hidden=16,
    layers=2,
    bidirectional=True,
    attention=None,
    optimizer="sgd",
    lr=0.5,
    epochs=1.5,
    patience=3,
    seed=7,
)


def test_json_round_trip_gives_the_same_config():
    text = CHANGED.to_json()
    assert json.loads(text) == dataclasses.asdict(CHANGED)
    assert RunConfig.from_json(text) == CHANGED
    assert RunConfig.from_dict(RunConfig().to_dict()) == RunConfig()


def test_unknown_keys_are_refused_by_name():
    with pytest.raises(ConfigError, match=r"got unknown \['hiden'\]"):
        RunConfig.from_dict({"hiden": 32})


def test_the_defaults_and_a_changed_config_pass():
    assert RunConfig().check() == RunConfig()
    assert CHANGED.check() is CHANGED


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"hidden": 0}, "hidden must be a positive int; got 0"),
        ({"layers": True}, "layers must be a positive int; got True"),
        ({"batch": 2.0}, "batch must be a positive int; got 2.0"),
        ({"lr": 0.0}, "lr must be a positive number; got 0.0"),
        ({"lr": math.inf}, "lr must be a positive number; got inf"),
        ({"dropout": 1.0}, "dropout must be a number in [0, 1); got 1.0"),
        ({"clip": -1.0}, "clip must be a number >= 0; got -1.0"),
        ({"warmup": -1}, "warmup must be a non-negative int; got -1"),
        ({"steps": 0}, "steps must be a positive int or None; got 0"),
        ({"seed": -1}, "seed must be a non-negative int; got -1"),
        ({"epochs": -1.0}, "epochs must be None or a positive number; got -1.0"),
        ({"bidirectional": "yes"}, "bidirectional must be True or False; got 'yes'"),
        ({"task_options": [("length", 3)]}, "task_options must be a dict of options by name"),
        ({"task": "nope"}, "task must be one of ('adding',"),
        ({"cell": "nope"}, "cell must be one of ('gru',"),
        ({"backend": "warp"}, "backend must be one of ('auto',"),
        ({"attention": "dot"}, "attention must be one of ('additive', 'multiplicative', None)"),
        ({"optimizer": "adagrad"}, "optimizer must be one of ('adam',"),
        ({"schedule": "step"}, "schedule must be one of ('constant',"),
        ({"warmup": 5, "steps": 5}, "warmup must be below steps=5; got 5"),
        ({"cell_options": {"bogus": 1}}, "cell lstm with options {'bogus': 1}: "),
        ({"cell": "multihead_lstm"}, "cell multihead_lstm with options {}: "),
        ({"cell": "multihead_lstm", "cell_options": {"num_heads": 5}}, "multiple of num_heads"),
        ({"layer_options": {"r_min": 0.9}}, "layer_options must be a dict keyed LAYER:OPTION"),
        ({"layer_options": {"0:r_min": 0.9}}, "layer_options must be a dict keyed LAYER:OPTION"),
        (
            {"layer_options": {"2:bogus": 1}},
            "layer_options names layers 1 to layers=1; got '2:bogus'",
        ),
        ({"layers": 2, "layer_options": {"2:bogus": 1}}, "cell lstm with options {'bogus': 1}: "),
    ],
)
def test_check_names_the_setting_the_expectation_and_the_value(changes, message):
    with pytest.raises(ConfigError) as error:
        RunConfig(**changes).check()
    assert message in str(error.value)


def test_layer_options_change_their_layer_only():
    config = RunConfig(
        cell="lru",
        hidden=8,
        layers=2,
        cell_options={"r_min": 0.0, "r_max": 0.5},
        layer_options={"2:r_min": 0.99, "2:r_max": 0.999},
    ).check()
    model = rj.app.make_model(config, rj.data.adding(length=10).info())
    first, second = model.init(jax.random.key(0)).body
    radius = [jnp.exp(-jnp.exp(params.nu_log)) for params in (first, second)]
    assert float(jnp.max(radius[0])) <= 0.5 and float(jnp.min(radius[1])) >= 0.99


def test_every_field_says_its_help_and_group():
    for field in dataclasses.fields(RunConfig):
        assert field.metadata["help"] and field.metadata["group"] in ("task", "model", "training")


def test_backend_choices_are_the_registered_backends():
    (field,) = [f for f in dataclasses.fields(RunConfig) if f.name == "backend"]
    assert list(field.metadata["choices"]()) == ["auto", *rj.backends.names()]
