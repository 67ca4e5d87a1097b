"""`RunConfig`: every setting that decides what a training run computes, in one place.

Each field carries its help text, the group it is shown in and the rule its
value must meet (`setting`): `RunConfig.check` validates every field by its
rule, and the ``rnn-jax`` command line makes one option of each field, with
the field's default, so a new field is a new option without a second edit.
A run stores its config as JSON in every checkpoint and compares it on resume.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rnn_jax.backends import names as backend_names
from rnn_jax.cells import cell_names, get_cell
from rnn_jax.data import OBJECTIVES, task_names
from rnn_jax.train.optim import OPTIMIZERS, SCHEDULES
from rnn_jax.train.sharding import parse_mesh

DEFAULT_STEPS = 1000  # the updates of a run that gives neither steps nor epochs

GROUPS = ("task", "model", "training")

# A rule looks at a value and returns what was expected, in words, when the value breaks it.
Rule = Callable[[Any], str | None]


class ConfigError(ValueError):
    """Settings that cannot make a run: names the setting, what it must be and what it got."""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def integer(value: Any) -> str | None:
    return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"


def positive_integer(value: Any) -> str | None:
    return None if integer(value) is None and value >= 1 else "a positive integer"


def non_negative_integer(value: Any) -> str | None:
    return None if integer(value) is None and value >= 0 else "an integer >= 0"


def positive_number(value: Any) -> str | None:
    return None if _is_number(value) and value > 0 else "a positive number"


def non_negative_number(value: Any) -> str | None:
    return None if _is_number(value) and value >= 0 else "a number >= 0"


def fraction(value: Any) -> str | None:
    return None if _is_number(value) and 0 <= value < 1 else "a number in [0, 1)"


def boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "True or False"


def text(value: Any) -> str | None:
    return None if isinstance(value, str) and value else "a non-empty string"


def column_names(value: Any) -> str | None:
    ok = (
        isinstance(value, list)
        and value
        and all(isinstance(name, str) and name for name in value)
        and len(set(value)) == len(value)
    )
    return None if ok else "a non-empty list of distinct column names"


def options(value: Any) -> str | None:
    """Keyword options for a factory: a dict with string keys."""
    ok = isinstance(value, dict) and all(isinstance(key, str) for key in value)
    return None if ok else "a dict of options by name"


LAYER_OPTION = re.compile(r"([1-9]\d*):(\w+)")


def layer_options(value: Any) -> str | None:
    """Cell options for single layers: a dict keyed ``LAYER:OPTION`` (``"2:r_min"``)."""
    ok = isinstance(value, dict) and all(
        isinstance(key, str) and LAYER_OPTION.fullmatch(key) for key in value
    )
    return None if ok else "a dict keyed LAYER:OPTION, such as '2:r_min'"


def mesh_shape(value: Any) -> str | None:
    """A mesh as `rnn_jax.train.sharding.parse_mesh` reads it (checked without devices)."""
    try:
        parse_mesh(value)
    except (TypeError, ValueError):
        return "'auto' or AXIS=SIZE[,AXIS=SIZE] with the axes data and model"
    return None


def optional(rule: Rule) -> Rule:
    """``rule``, or None (the field's "not given")."""

    def check(value: Any) -> str | None:
        expected = None if value is None else rule(value)
        return None if expected is None else f"None or {expected}"

    return check


def setting(
    default: Any,
    help: str,
    group: str,
    rule: Rule | None = None,
    *,
    choices: Callable[[], Sequence[Any]] | None = None,
    flag: str | None = None,
    metavar: str | None = None,
) -> Any:
    """A `RunConfig` field: its default, its help, its group, and a ``rule`` or the ``choices``.

    ``choices()`` lists the values allowed (read when checked, so registries
    filled later count); ``flag`` names the command-line option when the
    field's name does not (``--task-option`` for ``task_options``), and
    ``metavar`` its value in the help (``--data FILE``).
    """
    if group not in GROUPS:
        raise ValueError(f"group must be one of {GROUPS}; got {group!r}")
    if (rule is None) == (choices is None):
        raise ValueError("give a setting either a rule or its choices")
    metadata = {
        "help": help,
        "group": group,
        "rule": rule,
        "choices": choices,
        "flag": flag,
        "metavar": metavar,
    }
    if isinstance(default, dict):
        return dataclasses.field(default_factory=default.copy, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def expectation(field: dataclasses.Field, value: Any) -> str | None:
    """What ``field`` expected, in words, when ``value`` breaks its rule; None when it holds."""
    choices = field.metadata["choices"]
    if choices is None:
        return field.metadata["rule"](value)
    allowed = list(choices())
    return None if value in allowed else f"one of {allowed}"


@dataclass(frozen=True)
class RunConfig:
    """What a training run computes: the task, the model and how it is trained.

    Every field is JSON (`to_json`, `from_json`); `check` raises a
    `ConfigError` naming the first bad one. Sizes: ``hidden`` units in each
    of ``layers`` stacked layers, token inputs embedded in ``embed``
    features, ``batch`` sequences per update.

    Example:
        >>> config = rj.app.RunConfig(cell="gru", hidden=32, steps=200)
        >>> rj.app.RunConfig.from_json(config.to_json()) == config
        True
        >>> rj.app.RunConfig(hidden=0).check()
        Traceback (most recent call last):
        ...
        rnn_jax.app.config.ConfigError: hidden must be a positive integer; got 0
    """

    task: str = setting("adding", "the task", "task", choices=task_names)
    task_options: dict[str, Any] = setting(
        {}, "any other task option", "task", options, flag="task_option"
    )
    data: str | None = setting(
        None,
        "train on this file instead of a task: a CSV, TSV, Parquet (with pyarrow) or .npz "
        "file (see README, 'Your own data')",
        "task",
        optional(text),
        metavar="FILE",
    )
    target: str | None = setting(
        None, "the target column of a --data table", "task", optional(text), metavar="COL"
    )
    id_column: str | None = setting(
        None,
        "the sequence-id column of a --data table: the rows of one id, in file order, are one "
        "sequence (default: the whole table is one series, to forecast)",
        "task",
        optional(text),
        flag="id",
        metavar="COL",
    )
    features: list[str] | None = setting(
        None,
        "the input columns of a --data table, comma-separated (default: all but --id and "
        "--target; to forecast, the target's past too)",
        "task",
        optional(column_names),
        metavar="COL,...",
    )
    objective: str | None = setting(
        None,
        "what to learn from --data; none infers it: forecast a target that changes within a "
        "sequence, or one series; classify text or at most 20 distinct whole numbers; else "
        "regress",
        "task",
        choices=lambda: [None, *OBJECTIVES],
    )
    cell: str = setting("lstm", "the cell", "model", choices=cell_names)
    cell_options: dict[str, Any] = setting(
        {},
        "cell factory option, e.g. num_heads=4 for the multi-head cells",
        "model",
        options,
        flag="cell_option",
    )
    layer_options: dict[str, Any] = setting(
        {},
        "a cell option for one layer, LAYER:KEY=VALUE with layer 1 the lowest, e.g. "
        "2:r_min=0.999; it overrides --cell-option there",
        "model",
        layer_options,
        flag="layer_option",
        metavar="LAYER:KEY=VALUE",
    )
    hidden: int = setting(64, "units per layer", "model", positive_integer)
    layers: int = setting(1, "stacked layers", "model", positive_integer)
    embed: int = setting(32, "embedding size of token inputs", "model", positive_integer)
    bidirectional: bool = setting(False, "bidirectional layers", "model", boolean)
    dropout: float = setting(0.0, "dropout between stacked layers", "model", fraction)
    backend: str = setting(
        "auto", "scan backend", "model", choices=lambda: ["auto", *backend_names()]
    )
    attention: str | None = setting(
        "additive",
        "seq2seq attention",
        "model",
        choices=lambda: ["additive", "multiplicative", None],
    )
    optimizer: str = setting("adam", "update rule", "training", choices=lambda: OPTIMIZERS)
    lr: float = setting(1e-3, "peak learning rate", "training", positive_number)
    schedule: str = setting(
        "constant", "learning-rate schedule", "training", choices=lambda: SCHEDULES
    )
    warmup: int = setting(0, "linear warmup steps", "training", non_negative_integer)
    clip: float = setting(
        1.0, "clip gradients to this global norm, 0 for none", "training", non_negative_number
    )
    weight_decay: float = setting(
        0.0, "weight decay (decoupled for adamw)", "training", non_negative_number
    )
    batch: int = setting(64, "sequences per update", "training", positive_integer)
    steps: int | None = setting(
        None, f"updates (default {DEFAULT_STEPS})", "training", optional(positive_integer)
    )
    epochs: float | None = setting(
        None,
        "passes over the training data, instead of steps",
        "training",
        optional(positive_number),
    )
    eval_every: int | None = setting(
        None,
        "updates between validations (default: a twentieth of the run)",
        "training",
        optional(positive_integer),
    )
    patience: int | None = setting(
        None,
        "early stopping: validations without improvement",
        "training",
        optional(positive_integer),
    )
    seed: int = setting(0, "seed of the initial params, batches and dropout", "training", integer)
    mesh: str = setting(
        "auto",
        "devices as a mesh: auto (every device splits the batch), data=N, or data=N,model=M "
        "(wide layers split over M)",
        "training",
        mesh_shape,
    )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """The config of ``data`` (`to_dict`'s form); a `ConfigError` names unknown keys."""
        names = [field.name for field in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ConfigError(f"a run config has the fields {names}; got unknown {unknown}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        return cls.from_dict(json.loads(text))

    def check(self) -> RunConfig:
        """Raises a `ConfigError` naming the first bad setting; returns self."""
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            expected = expectation(field, value)
            if expected is not None:
                raise ConfigError(f"{field.name} must be {expected}; got {value!r}")
        if self.data is None:
            for name in ("target", "id_column", "features", "objective"):
                if getattr(self, name) is not None:
                    raise ConfigError(
                        f"{name} applies to a data file; got {name}={getattr(self, name)!r} "
                        f"without data"
                    )
        if self.steps is not None and self.warmup >= self.steps:
            raise ConfigError(f"warmup must be below steps={self.steps}; got {self.warmup}")
        for key, layer, _, _ in self._layer_option_items():
            if not 1 <= layer <= self.layers:
                raise ConfigError(
                    f"layer_options names layers 1 to layers={self.layers}; got {key!r}"
                )
        try:
            for layer in range(1, self.layers + 1):
                get_cell(self.cell, self.hidden, **self.options_of_layer(layer))
        except ValueError as error:
            raise ConfigError(str(error)) from None
        return self

    def options_of_layer(self, layer: int) -> dict[str, Any]:
        """The cell options of layer ``layer`` (1 the lowest): ``cell_options`` with that
        layer's ``layer_options`` over them.

        Example:
            >>> config = rj.app.RunConfig(
            ...     cell="lru", layers=2, cell_options={"r_min": 0.0, "r_max": 0.5},
            ...     layer_options={"2:r_min": 0.999, "2:r_max": 0.9999})
            >>> config.options_of_layer(1), config.options_of_layer(2)
            ({'r_min': 0.0, 'r_max': 0.5}, {'r_min': 0.999, 'r_max': 0.9999})
        """
        items = self._layer_option_items()
        own = {option: value for _, number, option, value in items if number == layer}
        return {**self.cell_options, **own}

    def _layer_option_items(self) -> list[tuple[str, int, str, Any]]:
        """``(key, layer, option, value)`` for each of ``layer_options``, in their order."""
        items = []
        for key, value in self.layer_options.items():
            number, option = LAYER_OPTION.fullmatch(key).groups()
            items.append((key, int(number), option, value))
        return items
