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
from typing import Any, NamedTuple

from rnn_jax._validate import non_negative_int, one_of, optional_positive_int, positive_int
from rnn_jax.backends import names as backend_names
from rnn_jax.cells import cell_names, get_cell
from rnn_jax.data import OBJECTIVES, task_names
from rnn_jax.train.optim import OPTIMIZERS, SCHEDULES
from rnn_jax.train.sharding import parse_mesh

DEFAULT_STEPS = 1000  # the updates of a run that gives neither steps nor epochs

GROUPS = ("task", "model", "training")

# A rule checks a field's value (`rnn_jax._validate`'s contract): it returns the value, or
# raises a ValueError or TypeError naming the field, what it expected and what came.
Rule = Callable[[str, Any], Any]


class ConfigError(ValueError):
    """Settings that cannot make a run: names the setting, what it must be and what it got."""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class Condition(NamedTuple):
    """A rule that a value ``holds``, ``expected`` saying what that is in words."""

    expected: str
    holds: Callable[[Any], bool]

    def __call__(self, name: str, value: Any) -> Any:
        if not self.holds(value):
            raise ValueError(f"{name} must be {self.expected}; got {value!r}")
        return value

    def optional(self) -> Condition:
        """This condition, or None (the field's "not given")."""
        return Condition(f"None or {self.expected}", lambda v: v is None or self.holds(v))


positive_number = Condition("a positive number", lambda v: _is_number(v) and v > 0)
non_negative_number = Condition("a number >= 0", lambda v: _is_number(v) and v >= 0)
fraction = Condition("a number in [0, 1)", lambda v: _is_number(v) and 0 <= v < 1)
boolean = Condition("True or False", lambda v: isinstance(v, bool))
text = Condition("a non-empty string", lambda v: isinstance(v, str) and bool(v))
column_names = Condition(
    "a non-empty list of distinct column names",
    lambda v: (
        isinstance(v, list)
        and bool(v)
        and all(isinstance(name, str) and name for name in v)
        and len(set(v)) == len(v)
    ),
)
# Keyword options for a factory: a dict with string keys.
options = Condition(
    "a dict of options by name",
    lambda v: isinstance(v, dict) and all(isinstance(key, str) for key in v),
)

LAYER_OPTION = re.compile(r"([1-9]\d*):(\w+)")

# Cell options for single layers: a dict keyed ``LAYER:OPTION`` (``"2:r_min"``).
layer_options = Condition(
    "a dict keyed LAYER:OPTION, such as '2:r_min'",
    lambda v: (
        isinstance(v, dict)
        and all(isinstance(key, str) and LAYER_OPTION.fullmatch(key) for key in v)
    ),
)


def parses_as_mesh(value: Any) -> bool:
    """Whether `rnn_jax.train.sharding.parse_mesh` reads ``value`` (checked without devices)."""
    try:
        parse_mesh(value)
    except (TypeError, ValueError):
        return False
    return True


mesh_shape = Condition(
    "'auto' or AXIS=SIZE[,AXIS=SIZE] with the axes data and model", parses_as_mesh
)


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


def check_field(field: dataclasses.Field, value: Any) -> None:
    """A `ConfigError` when ``value`` breaks the rule or the choices of ``field``."""
    choices = field.metadata["choices"]
    try:
        if choices is None:
            field.metadata["rule"](field.name, value)
        else:
            one_of(field.name, value, list(choices()))
    except (TypeError, ValueError) as error:
        raise ConfigError(str(error)) from None


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
        rnn_jax.app.config.ConfigError: hidden must be a positive int; got 0
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
        text.optional(),
        metavar="FILE",
    )
    target: str | None = setting(
        None, "the target column of a --data table", "task", text.optional(), metavar="COL"
    )
    id_column: str | None = setting(
        None,
        "the sequence-id column of a --data table: the rows of one id, in file order, are one "
        "sequence (default: the whole table is one series, to forecast)",
        "task",
        text.optional(),
        flag="id",
        metavar="COL",
    )
    features: list[str] | None = setting(
        None,
        "the input columns of a --data table, comma-separated (default: all but --id and "
        "--target; to forecast, the target's past too)",
        "task",
        column_names.optional(),
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
    hidden: int = setting(64, "units per layer", "model", positive_int)
    layers: int = setting(1, "stacked layers", "model", positive_int)
    embed: int = setting(32, "embedding size of token inputs", "model", positive_int)
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
    warmup: int = setting(0, "linear warmup steps", "training", non_negative_int)
    clip: float = setting(
        1.0, "clip gradients to this global norm, 0 for none", "training", non_negative_number
    )
    weight_decay: float = setting(
        0.0, "weight decay (decoupled for adamw)", "training", non_negative_number
    )
    batch: int = setting(64, "sequences per update", "training", positive_int)
    steps: int | None = setting(
        None, f"updates (default {DEFAULT_STEPS})", "training", optional_positive_int
    )
    epochs: float | None = setting(
        None,
        "passes over the training data, instead of steps",
        "training",
        positive_number.optional(),
    )
    eval_every: int | None = setting(
        None,
        "updates between validations (default: a twentieth of the run)",
        "training",
        optional_positive_int,
    )
    patience: int | None = setting(
        None,
        "early stopping: validations without improvement",
        "training",
        optional_positive_int,
    )
    seed: int = setting(
        0, "seed of the initial params, batches and dropout", "training", non_negative_int
    )
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
            check_field(field, getattr(self, field.name))
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
