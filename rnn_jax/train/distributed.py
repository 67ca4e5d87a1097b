"""Several processes as one run: `jax.distributed` started from the environment.

A run over several hosts (or one process per GPU) starts the same command
once per process, each with three variables::

    JAX_COORDINATOR_ADDRESS=10.0.0.1:1234   # process 0's host and a free port (read by JAX)
    JAX_NUM_PROCESSES=2
    JAX_PROCESS_ID=0                        # 0 .. JAX_NUM_PROCESSES - 1, one per process

`start` then calls ``jax.distributed.initialize`` once, before anything
touches a device; afterwards ``jax.devices()`` lists every process's
devices, and a mesh over them (`rnn_jax.train.sharding.make_mesh`) spans the
hosts. Without ``JAX_NUM_PROCESSES`` it does nothing: one process.
``JAX_LOCAL_DEVICE_IDS`` (read by JAX) limits a process to some of its
host's GPUs, for one process per GPU.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import jax

PROCESSES = "JAX_NUM_PROCESSES"
PROCESS_ID = "JAX_PROCESS_ID"
COORDINATOR = "JAX_COORDINATOR_ADDRESS"


def _integer(environ: Mapping[str, str], name: str, low: int, high: int | None = None) -> int:
    text = environ.get(name, "")
    value = int(text) if text.strip().isdigit() else None
    if value is None or value < low or (high is not None and value >= high):
        expected = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high})"
        raise ValueError(f"{name} must be {expected}; got {text!r}")
    return value


def settings(environ: Mapping[str, str] | None = None) -> dict | None:
    """``jax.distributed.initialize``'s arguments from ``environ`` (default ``os.environ``),
    or None when it asks for one process.

    Example:
        >>> rj.train.distributed.settings({"JAX_COORDINATOR_ADDRESS": "127.0.0.1:1234",
        ...                                "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"})
        {'coordinator_address': '127.0.0.1:1234', 'num_processes': 2, 'process_id': 1}
    """
    environ = os.environ if environ is None else environ
    if PROCESSES not in environ:
        return None
    processes = _integer(environ, PROCESSES, 1)
    process_id = _integer(environ, PROCESS_ID, 0, processes)
    address = environ.get(COORDINATOR, "")
    if ":" not in address:
        raise ValueError(
            f"{COORDINATOR} must be HOST:PORT of process 0 when {PROCESSES} is set; got {address!r}"
        )
    return {"coordinator_address": address, "num_processes": processes, "process_id": process_id}


def start(environ: Mapping[str, str] | None = None) -> bool:
    """Joins the run the environment describes (once per process); True when distributed."""
    arguments = settings(environ)
    if arguments is None:
        return False
    if not jax.distributed.is_initialized():
        jax.distributed.initialize(**arguments)
    return True
