"""StableHLO through ``jax.export``: the model's program, serialized with its symbolic sizes.

The file is ``jax.export.Exported.serialize()``'s bytes: any JAX (no rnn_jax
needed) loads it with ``jax.export.deserialize`` and calls it; other runtimes
read its StableHLO module (``mlir_module_serialized``) through PJRT.

Each scan in it is the backend's program for the platforms it is lowered for
(``platforms``, default the CPU): ``jax.export(..., platforms=["cuda"])`` lowers
the Pallas kernels through Triton, ``["tpu"]`` through Mosaic, on a machine
without either. With symbolic ``batch`` and ``time`` every scan is the reference
loop (``rj.scan`` picks it where a size is symbolic: the kernels plan chunks,
tiles and measured settings from concrete sizes); exporting at fixed sizes keeps
the backend the model was built with.
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
        >>> program = jax.export.deserialize(serialize(form))
        >>> program.call(jnp.ones((3, 7, 1)), jnp.array([7, 2, 0]))[0].shape
        (3, 2)
    """
    exported = jax.export.export(jax.jit(form.function), platforms=tuple(platforms))
    return bytes(exported(*form.specs()).serialize())
