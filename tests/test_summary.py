"""``rj.summary`` and ``rj.count_params``."""

from __future__ import annotations

import doctest
import importlib

import jax
import jax.numpy as jnp

import rnn_jax as rj


def shapes_of(layer_or_cell, input_size):
    """Parameter shapes without computing any parameter."""
    return jax.eval_shape(lambda key: layer_or_cell.init(key, input_size), jax.random.key(0))


def test_lstm_table_as_keras_prints_it():
    table = rj.summary(shapes_of(rj.lstm(128), 64))
    assert table == "\n".join(
        [
            "parameter         shape       dtype     count",
            "---------------------------------------------",
            "kernel            (64, 512)   float32  32,768",
            "recurrent_kernel  (128, 512)  float32  65,536",
            "bias              (512,)      float32     512",
            "---------------------------------------------",
            "total                                  98,816",
        ]
    )


def test_nested_layers_name_every_leaf_and_skip_absent_options():
    layer = rj.stack([rj.bidirectional(rj.gru(4)), rj.lstm(3, proj_size=2)])
    params = shapes_of(layer, 2)
    lines = rj.summary(params).splitlines()
    names = [line.split()[0] for line in lines[2:-2]]
    assert names[:4] == [
        "[0].forward.kernel",
        "[0].forward.recurrent_kernel",
        "[0].forward.bias",
        "[0].forward.recurrent_bias",
    ]
    assert names[4].startswith("[0].backward.") and names[-1] == "[1].projection"
    assert "[1].peephole" not in names and len(names) == 12  # None fields are no parameters
    counts = [int(line.split()[-1].replace(",", "")) for line in lines[2:-2]]
    assert sum(counts) == rj.count_params(params) == 330
    assert lines[-1].split() == ["total", "330"]
    assert len({len(line) for line in lines[:2]}) == 1  # the rule spans the header


def test_dtypes_scalars_and_dicts():
    params = {"w": jnp.ones((2, 3), jnp.bfloat16), "s": jnp.float32(1.0)}
    lines = rj.summary(params).splitlines()
    assert lines[2].split() == ["['s']", "()", "float32", "1"]
    assert lines[3].split() == ["['w']", "(2,", "3)", "bfloat16", "6"]
    assert rj.count_params(params) == 7


def test_empty_and_huge_parameter_trees():
    assert rj.count_params({}) == 0 and rj.summary({}).splitlines()[-1].split() == ["total", "0"]
    huge = jax.ShapeDtypeStruct((100_000, 100_000), jnp.float32)  # never allocated
    count = rj.count_params([huge, huge])
    assert count == 20_000_000_000 and isinstance(count, int)
    assert rj.summary(huge).splitlines()[2].split()[-1] == "10,000,000,000"


def test_docstring_examples_show_what_the_functions_print():
    """The docstrings' examples, checked against the same calls on parameter shapes."""
    module = importlib.import_module("rnn_jax.summary")  # rj.summary is the function
    examples = {
        name: doctest.DocTestParser().get_examples(getattr(module, name).__doc__)
        for name in ("summary", "count_params")
    }
    (table,) = examples["summary"]
    (count,) = examples["count_params"]
    checker = doctest.OutputChecker()
    got = rj.summary(shapes_of(rj.lstm(128), 64)) + "\n"
    assert checker.check_output(table.want, got, doctest.ELLIPSIS), (table.want, got)
    assert "rj.lstm(128).init(jax.random.key(0), 64)" in table.source
    assert count.want.strip() == str(rj.count_params(shapes_of(rj.simple(32), 32)))
