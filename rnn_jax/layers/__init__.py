"""Sequence-level combinators: each returns a `Layer(init, apply)` whose ``spec`` is typed."""

from rnn_jax.layers.base import Layer
from rnn_jax.layers.bidirectional import (
    BidirectionalParams,
    BidirectionalSpec,
    ReversedSpec,
    bidirectional,
    reversed_layer,
)
from rnn_jax.layers.rnn import RNNSpec, as_layer, rnn
from rnn_jax.layers.stack import StackSpec, stack

__all__ = [
    "BidirectionalParams",
    "BidirectionalSpec",
    "Layer",
    "RNNSpec",
    "ReversedSpec",
    "StackSpec",
    "as_layer",
    "bidirectional",
    "reversed_layer",
    "rnn",
    "stack",
]
