"""The cells known by name: each factory whose first argument is ``hidden_size``, listed by hand.

Run configs, the command line and the diagnostics name cells by these keys;
a cell added here is available to all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from rnn_jax.cells.cell import Cell
from rnn_jax.cells.gru import gru
from rnn_jax.cells.indrnn import indrnn
from rnn_jax.cells.lru import lru
from rnn_jax.cells.lstm import lstm
from rnn_jax.cells.mgu import mgu
from rnn_jax.cells.min_gru import min_gru
from rnn_jax.cells.min_lstm import min_lstm
from rnn_jax.cells.mlstm import mlstm
from rnn_jax.cells.multihead import multihead_gru, multihead_lstm, multihead_simple
from rnn_jax.cells.rg_lru import rg_lru
from rnn_jax.cells.simple import simple
from rnn_jax.cells.slstm import slstm

CELLS: Mapping[str, Callable[..., Cell]] = MappingProxyType(
    {
        "simple": simple,
        "lstm": lstm,
        "gru": gru,
        "mgu": mgu,
        "indrnn": indrnn,
        "min_gru": min_gru,
        "min_lstm": min_lstm,
        "lru": lru,
        "rg_lru": rg_lru,
        "multihead_simple": multihead_simple,  # the multi-head cells need num_heads=...
        "multihead_lstm": multihead_lstm,
        "multihead_gru": multihead_gru,
        "slstm": slstm,  # num_heads=1 unless given
        "mlstm": mlstm,
    }
)


def cell_names() -> list[str]:
    """The names `cell_factory` knows, sorted."""
    return sorted(CELLS)


def cell_factory(name: str) -> Callable[..., Cell]:
    """The factory called ``name``; a ValueError naming it and the known names otherwise.

    Example:
        >>> rj.cells.cell_factory("gru") is rj.gru
        True
    """
    if name not in CELLS:
        raise ValueError(f"cell must be one of {cell_names()}; got {name!r}")
    return CELLS[name]


def get_cell(name: str, hidden_size: int, **options: Any) -> Cell:
    """The cell ``name`` of ``hidden_size`` units built with ``options``.

    Options the factory does not take, or values it refuses, raise a
    ValueError naming the cell and the options.

    Example:
        >>> rj.cells.get_cell("multihead_lstm", 64, num_heads=4).name
        'multihead_lstm'
    """
    factory = cell_factory(name)
    try:
        return factory(hidden_size, **options)
    except (TypeError, ValueError) as error:
        raise ValueError(f"cell {name} with options {options}: {error}") from None
