"""Early stopping: the rule (`EarlyStopping`) and what it has seen so far (`StoppingRecord`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from rnn_jax._validate import one_of, positive_int


@dataclass(frozen=True)
class EarlyStopping:
    """Stop when validation ``metric`` has not improved for ``patience`` evaluations.

    ``mode`` ``"min"`` or ``"max"``; an improvement must beat the best by
    ``min_delta``. ``restore_best`` returns the best params seen.

    Example:
        >>> rule = rj.train.EarlyStopping(patience=2, mode="max")
        >>> rule.improved(0.9, best=0.8), rule.improved(0.8, best=0.9)
        (True, False)
    """

    patience: int
    metric: str = "loss"
    mode: Literal["min", "max"] = "min"
    min_delta: float = 0.0
    restore_best: bool = True

    def __post_init__(self):
        positive_int("patience", self.patience)
        one_of("mode", self.mode, ("min", "max"))

    def improved(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        if self.mode == "min":
            return value < best - self.min_delta
        return value > best + self.min_delta


@dataclass(frozen=True)
class StoppingRecord:
    """What early stopping has seen: the best value and its step, the evaluations since
    without improvement, and whether it stopped the run. JSON in every checkpoint."""

    best: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    stopped_early: bool = False

    def after(self, rule: EarlyStopping, metrics: dict[str, float], step: int) -> StoppingRecord:
        """The record once ``metrics`` of step ``step`` have been seen under ``rule``."""
        value = metrics[rule.metric]
        if rule.improved(value, self.best):
            return StoppingRecord(best=value, best_step=step)
        bad_evals = self.bad_evals + 1
        return dataclasses.replace(
            self, bad_evals=bad_evals, stopped_early=bad_evals >= rule.patience
        )

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StoppingRecord:
        return cls(**data)
