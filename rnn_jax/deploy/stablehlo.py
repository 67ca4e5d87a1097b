"""StableHLO through ``jax.export``: the model's program, serialized with its symbolic sizes.

The file is ``jax.export.Exported.serialize()``'s bytes: any JAX (no rnn_jax
needed) loads it with ``jax.export.deserialize`` and calls it; other runtimes
read its StableHLO module (``mlir_module_serialized``) through PJRT.

With symbolic ``batch`` and ``time`` every scan is the reference loop
(``rj.scan`` picks it where a size is symbolic: the kernels plan chunks, tiles
and measured settings from concrete sizes), which lowers for any platform.
Exported at fixed sizes, each scan is the backend the model was built with,
lowered for ``platforms`` (default the CPU) on a machine without them: the
Pallas kernels lower through Mosaic for ``"tpu"``, whose custom call
``jax.export`` serializes; for ``"cuda"`` they lower through Triton, whose custom
call has no compatibility guarantee across jaxlib versions, and ``jax.export``
refuses to serialize it (its error names the call). So it refuses the
``onednn`` backend's FFI calls (``rnn_onednn_*``), which ``backend="auto"``
runs at some shapes where the ``onednn`` extra is installed
(``rj.explain_auto`` says): export those at symbolic sizes, or build the model
with ``backend="sequential"``.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax

from rnn_jax.deploy.signature import Signature

PLATFORMS = ("cpu",)


def serialize(form: Signature, *, platforms: Sequence[str] = PLATFORMS) -> bytes:
    """``jax.export`` of ``form``'s function for ``platforms``, serialized.

    Example:
        >>> model = rj.models.classifier(rj.gru(4), 2, input_size=1)
        >>> params = model.init(jax.random.key(0))
        >>> form = rj.deploy.sequence_signature(model, params, jnp.zeros((2, 5, 1)), dynamic=True)
        >>> jax.export.deserialize(serialize(form)).in_avals
        (ShapedArray(float32[batch,time,1]), ShapedArray(int32[batch]))
    """
    exported = jax.export.export(jax.jit(form.function), platforms=tuple(platforms))
    return bytes(exported(*form.specs()).serialize())
