"""`Config`: the hyperparameters of a cell, a layer or a model, as a hashable mapping."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any


class Config(Mapping):
    """An immutable, hashable mapping of hyperparameters (of a cell, a layer or a model).

    Lists become tuples and mappings become `Config`, so the whole value is
    hashable; a value that cannot be hashed is refused with a TypeError
    naming its key.

    Example:
        >>> config = Config(hidden_size=64, activation="tanh")
        >>> config["hidden_size"], hash(config) == hash(Config(activation="tanh", hidden_size=64))
        (64, True)
    """

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, Any] | None = None, /, **values: Any):
        merged = {**dict(items or {}), **values}
        frozen = {key: _frozen(key, value) for key, value in merged.items()}
        object.__setattr__(self, "_items", tuple(frozen.items()))

    def __getitem__(self, key: str) -> Any:
        for name, value in self._items:
            if name == key:
                return value
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(frozenset(self._items))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        return dict(self._items) == dict(other.items())

    def __setattr__(self, name: str, value: Any):
        raise AttributeError("a Config is immutable; use replace")

    def __repr__(self) -> str:
        return f"Config({dict(self._items)!r})"

    def replace(self, **values: Any) -> Config:
        """A copy with ``values`` set."""
        return Config(self, **values)


def _frozen(key: str, value: Any) -> Any:
    if isinstance(value, Mapping) and not isinstance(value, Config):
        return Config(value)
    if isinstance(value, list):
        value = tuple(value)
    try:
        hash(value)
    except TypeError:
        raise TypeError(
            f"config value {key!r} must be hashable (numbers, strings, tuples, cells, functions); "
            f"got {type(value).__name__}"
        ) from None
    return value
