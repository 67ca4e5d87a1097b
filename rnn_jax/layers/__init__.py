"""Sequence-level combinators: each returns a `Layer(init, apply)`."""

from rnn_jax.layers.base import Layer, as_layer
from rnn_jax.layers.bidirectional import BidirectionalParams, bidirectional, reversed_layer
from rnn_jax.layers.rnn import rnn
from rnn_jax.layers.stack import stack

__all__ = [
    "BidirectionalParams",
    "Layer",
    "as_layer",
    "bidirectional",
    "reversed_layer",
    "rnn",
    "stack",
]
