"""The cell registry: every name builds its own cell; unknown names and options in words."""

import pytest

import rnn_jax as rj
from rnn_jax.cells import CELLS, cell_factory, cell_names, get_cell

MULTIHEAD = ("multihead_simple", "multihead_lstm", "multihead_gru")
OPTIONS = {name: {"num_heads": 2} for name in MULTIHEAD}


@pytest.mark.parametrize("name", cell_names())
def test_each_name_builds_the_cell_of_that_name(name):
    cell = get_cell(name, 8, **OPTIONS.get(name, {}))
    assert cell.name == name and cell_factory(name) is getattr(rj, name)


def test_an_unknown_name_is_refused_with_the_known_ones():
    with pytest.raises(
        ValueError, match=r"cell must be one of \['gru', .*'simple', 'slstm'\]; got 'nope'"
    ):
        cell_factory("nope")


def test_bad_options_name_the_cell_and_the_options():
    with pytest.raises(ValueError, match=r"cell lstm with options \{'heads': 2\}: .*'heads'"):
        get_cell("lstm", 8, heads=2)


def test_the_registry_is_read_only():
    with pytest.raises(TypeError):
        CELLS["mine"] = rj.lstm
