"""The backends ``rj.scan(backend=<name>)`` knows, by name: one table, loaded on first use.

`BUILT_IN` names every backend of the package and the class that implements
it. A class is imported when its backend is first asked for, so ``import
rnn_jax`` does not import Pallas or ``jax.experimental.rnn``. `register` adds
a user's backend (an instance, with its options) under its name.

Example:
    >>> rj.backends.get("sequential")
    Sequential(unroll=None, chunk=None, residuals=None, pipeline=None, weight_grads=None)
    >>> "pallas" in rj.backends.names()
    True
"""

from __future__ import annotations

import importlib

from rnn_jax import _validate
from rnn_jax.backends.contract import Backend

# name -> "module:Class"
BUILT_IN: dict[str, str] = {
    "reference": "rnn_jax.backends.reference:Reference",
    "sequential": "rnn_jax.backends.sequential:Sequential",
    "checkpointed": "rnn_jax.backends.checkpointed:Checkpointed",
    "parallel": "rnn_jax.backends.parallel:Parallel",
    "newton": "rnn_jax.backends.newton:Newton",
    "sharded": "rnn_jax.backends.sharded:Sharded",
    "pallas": "rnn_jax.backends.pallas.backend:Pallas",
    "cudnn": "rnn_jax.backends.cudnn:Cudnn",
    "onednn": "rnn_jax.backends.onednn:OneDNN",
}
_registered: dict[str, Backend] = {}


def backend_class(name: str) -> type[Backend]:
    """The class of the built-in backend ``name`` (imported now if it was not)."""
    module, attribute = BUILT_IN[name].split(":")
    return getattr(importlib.import_module(module), attribute)


def register(backend: Backend) -> Backend:
    """Makes ``backend`` (an instance, with its options) what its name stands for in
    ``rj.scan(backend=name)``; a later registration under the same name replaces it."""
    _validate.instance_of("backend", backend, Backend, "an instance of rnn_jax.Backend")
    _registered[backend.name] = backend
    return backend


def get(name: str) -> Backend:
    """The backend called ``name``: a registered one, else the built-in with its defaults."""
    if name in _registered:
        return _registered[name]
    if name in BUILT_IN:
        return backend_class(name)()
    raise ValueError(f"backend must be 'auto', a Backend or one of {names()}; got {name!r}")


def registered() -> tuple[Backend, ...]:
    """The backends `register` has made, in the order of their names."""
    return tuple(_registered[name] for name in sorted(_registered))


def names() -> list[str]:
    """The names ``rj.scan(backend=...)`` accepts besides ``"auto"``, sorted."""
    return sorted({*BUILT_IN, *_registered})
