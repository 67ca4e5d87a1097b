"""What a `RunConfig` builds: the task, the cells, and the model and objective the task needs.

``info`` is a task's `Task.info()` (its kind, input and output sizes, alphabet,
loss and metrics), which checkpoints store, so a model is rebuilt from a run
without its data.
"""

from __future__ import annotations

from typing import Any

from rnn_jax.app.config import ConfigError, RunConfig
from rnn_jax.cells import Cell, get_cell
from rnn_jax.data import DataError, Task, file_task, get_task
from rnn_jax.data.user_data import TASK_OPTIONS
from rnn_jax.layers import Layer, bidirectional, rnn, stack
from rnn_jax.models import Model, classifier, forecaster, generator, seq2seq, tagger
from rnn_jax.train.objective import Objective, supervised


def make_task(config: RunConfig) -> Task:
    """The task ``config.task`` with ``config.task_options``, or, given ``config.data``, the
    task of that file (`rj.data.file_task`: its columns from the config, its ``length``,
    ``horizon`` and ``data_seed`` from the task options)."""
    if config.data is None:
        return get_task(config.task, **config.task_options)
    unknown = sorted(set(config.task_options) - set(TASK_OPTIONS))
    if unknown:
        raise DataError(
            f"a data file takes task options {list(TASK_OPTIONS)}; got unknown {unknown}"
        )
    return file_task(
        config.data,
        target=config.target,
        id=config.id_column,
        features=config.features,
        objective=config.objective,
        **config.task_options,
    )


def make_cell(config: RunConfig, layer: int | None = None) -> Cell:
    """The cell ``config.cell`` of ``config.hidden`` units with ``config.cell_options`` and,
    over them, the ``layer_options`` of layer ``layer`` (1 the lowest; None for a cell outside
    the stack, such as a decoder's)."""
    options = config.cell_options if layer is None else config.options_of_layer(layer)
    return get_cell(config.cell, config.hidden, **options)


def make_body(config: RunConfig, *, allow_bidirectional: bool = True) -> Layer:
    """The sequence layer: ``config.layers`` cells stacked, each bidirectional if asked."""
    parts = []
    for layer in range(1, config.layers + 1):
        forward = rnn(make_cell(config, layer), backend=config.backend)
        if config.bidirectional and allow_bidirectional:
            backward = rnn(make_cell(config, layer), reverse=True, backend=config.backend)
            parts.append(bidirectional(forward, backward))
        else:
            parts.append(forward)
    return parts[0] if len(parts) == 1 else stack(parts, dropout=config.dropout)


def make_model(config: RunConfig, info: dict[str, Any]) -> Model:
    """The model a task of ``info`` (`Task.info`) needs, built from ``config``.

    Example:
        >>> config = rj.app.RunConfig(cell="gru", hidden=16)
        >>> model = rj.app.make_model(config, rj.data.adding(length=10).info())
        >>> params = model.init(jax.random.key(0))
        >>> _, outputs = model.apply(params, jnp.ones((10, 2)))
        >>> outputs.shape
        (1,)
    """
    kind = info["kind"]
    if kind in ("regression", "classification", "tagging"):
        head = tagger if kind == "tagging" else classifier
        return head(
            make_body(config),
            info["output_size"],
            input_size=info["input_size"],
            vocab_size=info["vocab_size"],
            embed_size=config.embed,
        )
    if kind == "forecasting":
        return forecaster(
            make_body(config, allow_bidirectional=False), info["input_size"], info["output_size"]
        )
    if kind == "language_model":
        if config.bidirectional:
            raise ConfigError("bidirectional must be False for a language model (it reads ahead)")
        return generator(make_body(config), info["vocab_size"], embed_size=config.embed)
    if kind == "seq2seq":
        return seq2seq(
            make_body(config),
            make_cell(config),
            source_vocab=info["vocab_size"],
            target_vocab=info["target_vocab_size"],
            embed_size=config.embed,
            attention=config.attention,
        )
    raise ConfigError(f"no model for tasks of kind {kind!r}")


def make_objective(model: Model, info: dict[str, Any]) -> Objective:
    """The task's loss and metrics on ``model`` (stateful across batches for a language model)."""
    return supervised(
        model.apply,
        info["loss"],
        info["metrics"],
        stateful=info["kind"] == "language_model",
        decode=model.decode,
    )
