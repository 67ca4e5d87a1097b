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


@pytest.mark.parametrize("name", cell_names())
def test_cells_built_with_equal_options_are_equal_and_hash_alike(name):
    """Cells are static arguments of jit and keys of rj.scan's cache: equal options, equal cells."""
    options = OPTIONS.get(name, {})
    first, second = get_cell(name, 8, **options), get_cell(name, 8, **options)
    assert first is not second and first == second and hash(first) == hash(second)
    assert first != get_cell(name, 16, **options)


def test_conv_and_wrapped_cells_are_equal_by_options_too():
    from rnn_jax.layers import dropout

    conv = lambda: rj.conv_lstm(4, (3, 3), padding="valid", strides=(1, 2))
    assert conv() == conv() and hash(conv()) == hash(conv())
    assert conv() != rj.conv_lstm(4, (3, 3), padding="same", strides=(1, 2))
    for wrap in (dropout.recurrent_dropout, lambda c: dropout.zoneout(c, 0.1, stochastic=True)):
        assert wrap(rj.lstm(8)) == wrap(rj.lstm(8))
        assert hash(wrap(rj.lstm(8))) == hash(wrap(rj.lstm(8)))
