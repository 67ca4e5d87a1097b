"""Deploying a trained model: ``rj.export`` to StableHLO or ONNX, whole sequences or one step.

- `export` builds an `Artifact` from a model, its params and an example input;
  `signature` says what the exported program takes and gives (its `Port`\\ s),
  `stablehlo` and `onnx` serialize it (jax2onnx, with ``rnn_scan`` lowered by
  `onnx_scan`, is imported only for ONNX).
- ``rnn-jax export --run DIR`` exports a trained run (`rnn_jax.app.exporting`).

What exports: every cell of the registry, in every layer and model over one
sequence (``rnn``, ``stack``, ``bidirectional``; classifier, tagger,
forecaster, generator), whatever backend it was built with: StableHLO with
symbolic sizes and ONNX both hold the reference loop, which every backend
equals; StableHLO at fixed sizes holds the backend's own program. Streaming
takes the models that read forwards only. Refused in words: seq2seq models,
streaming a model that reads backwards or pools over the whole sequence, and in
ONNX complex values (the LRU), floats other than float32, and a primitive
jax2onnx cannot convert.
"""

from rnn_jax.deploy.artifacts import FORMATS, Artifact, export
from rnn_jax.deploy.signature import (
    Port,
    Signature,
    sequence_signature,
    streaming_refusal,
    streaming_signature,
)

__all__ = [
    "FORMATS",
    "Artifact",
    "Port",
    "Signature",
    "export",
    "sequence_signature",
    "streaming_refusal",
    "streaming_signature",
]
