"""Why a kernel cannot run a case, as a value the backend passes on in words.

`Refusal` is raised where a plan finds that a case does not fit a target (a
launch over the chip's memory, a block size the compiler cannot take, an
operation the lane tiles cannot express); ``supports`` returns its message.
Where the program is lowered for several platforms at once, a platform whose
plan refused gets a `refused` branch instead of a kernel: lowering that branch
stops with the same words, while the other platforms' branches lower as usual.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from jax.extend.core import Primitive
from jax.interpreters import mlir


class Refusal(ValueError):
    """A case a kernel cannot run on a target; the message says why, in words."""


refused_p = Primitive("rnn_jax_pallas_refused")
refused_p.multiple_results = True


@refused_p.def_abstract_eval
def _refused_abstract(*args, outputs, reason):
    del args, reason
    return outputs


def _refused_lowering(ctx, *args, outputs, reason):
    raise Refusal(reason)


mlir.register_lowering(refused_p, _refused_lowering)


def refused(reason: str, outputs: Any) -> Callable[..., Any]:
    """A branch with the avals ``outputs`` (a pytree of ShapeDtypeStructs) that stops the
    lowering for its platform with ``reason``.

    Example:
        >>> branch = refused("too wide", jax.ShapeDtypeStruct((2,), jnp.float32))
        >>> try:
        ...     jax.jit(branch).lower(jnp.ones(3))
        ... except Refusal as refusal:
        ...     print(refusal)
        too wide
    """
    leaves, treedef = jax.tree.flatten(outputs)
    avals = tuple(jax.core.ShapedArray(x.shape, x.dtype) for x in leaves)

    def branch(*args):
        flat = refused_p.bind(*jax.tree.leaves(args), outputs=avals, reason=reason)
        return jax.tree.unflatten(treedef, flat)

    return branch
