"""``rj.export``: a trained model as a StableHLO or ONNX program, and what that program takes."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

from rnn_jax.deploy import onnx, stablehlo
from rnn_jax.deploy.signature import Port, sequence_signature, streaming_signature

FORMATS = ("stablehlo", "onnx")


class Artifact(NamedTuple):
    """An exported model: the serialized program and its ports, in the order it takes and
    gives them (`Port`: name, shape with ``"batch"``/``"time"`` for symbolic sizes, dtype)."""

    format: str  # "stablehlo" or "onnx"
    data: bytes
    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]
    streaming: bool  # one step, the state in and out, from zeros; else the whole sequence
    opset: int | None = None  # the ONNX opset (None for StableHLO)

    def save(self, path: str | os.PathLike) -> Path:
        """Writes the program's bytes to ``path``; returns it."""
        path = Path(path)
        path.write_bytes(self.data)
        return path

    def describe(self) -> dict[str, Any]:
        """The format, form and ports as JSON-ready values."""

        def ports(items):
            return [{"name": p.name, "shape": list(p.shape), "dtype": p.dtype} for p in items]

        described = {"format": self.format, "streaming": self.streaming}
        if self.opset is not None:
            described["opset"] = self.opset
        return {**described, "inputs": ports(self.inputs), "outputs": ports(self.outputs)}


def export(
    model: Any,
    params: Any,
    example: Any,
    *,
    format: Literal["stablehlo", "onnx"] = "stablehlo",
    streaming: bool = False,
    dynamic: bool = True,
    platforms: Sequence[str] = stablehlo.PLATFORMS,
    opset: int = onnx.OPSET,
) -> Artifact:
    """Exports ``model`` with ``params`` as a program that runs without rnn_jax.

    Args:
        model: an rnn_jax `Model` or `Layer`, or an ``apply(params, inputs, *,
            length=None, initial_state=None) -> (state, outputs)`` over time-major
            inputs (not for ``streaming``, which reads the model's spec).
        params: its parameters.
        example: inputs of the shape and dtype the program takes, batch first:
            ``[batch, time, *features]`` floats or ``[batch, time]`` token ids (an
            array or a ``jax.ShapeDtypeStruct``).
        format: ``"stablehlo"`` (`rnn_jax.deploy.stablehlo`: ``jax.export``, loaded
            by any JAX) or ``"onnx"`` (`rnn_jax.deploy.onnx`: run by onnxruntime).
        streaming: export one step with the state as explicit inputs and outputs
            (``(inputs [batch, *features], *state) -> (outputs, *state)``, the
            stream starting from zeros) instead of the whole sequence
            (``(inputs, length [batch]) -> outputs``, batch first; outputs past a
            length are zero as in ``rj.scan``). A model that reads backwards
            (bidirectional, reversed) or pools over the whole sequence is refused.
        dynamic: ``batch`` and ``time`` symbolic (chosen when the program runs);
            False fixes them to ``example``'s sizes.
        platforms: StableHLO only: the platforms lowered for (``"cpu"``,
            ``"cuda"``, ``"tpu"``); at fixed sizes they choose the Pallas
            backend's kernels (`rnn_jax.deploy.stablehlo`).
        opset: ONNX only: the opset of the graph.

    Returns:
        An `Artifact`; ``artifact.save(path)`` writes it.

    Example:
        >>> model = rj.models.classifier(rj.lstm(8), 3, input_size=2)
        >>> params = model.init(jax.random.key(0))
        >>> artifact = rj.export(model, params, jnp.zeros((1, 10, 2)))
        >>> [(port.name, port.shape) for port in artifact.inputs]
        [('inputs', ('batch', 'time', 2)), ('length', ('batch',))]
        >>> program = jax.export.deserialize(artifact.data)  # in a process without rnn_jax too
        >>> program.call(jnp.ones((4, 6, 2)), jnp.array([6, 3, 1, 0]))[0].shape
        (4, 3)
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}; got {format!r}")
    signature = streaming_signature if streaming else sequence_signature
    form = signature(model, params, example, dynamic=dynamic)
    if format == "onnx":
        return Artifact(format, onnx.serialize(form, opset=opset), *form[1:], streaming, opset)
    data = stablehlo.serialize(form, platforms=platforms)
    return Artifact(format, data, *form[1:], streaming)
