"""JAX's persistent compilation cache, so that a second identical run compiles nothing.

The ``rnn-jax`` command line turns it on for every command but ``bench``
(whose suites time compilation); scripts and notebooks call
`use_compilation_cache` themselves. Every program is cached, however short
its compilation, in

- the directory in ``RNN_JAX_COMPILATION_CACHE``, or
- JAX's own ``JAX_COMPILATION_CACHE_DIR`` when that is set (its settings are then kept), or
- ``$XDG_CACHE_HOME/rnn_jax/jax`` (``~/.cache/rnn_jax/jax`` by default).

``RNN_JAX_COMPILATION_CACHE=off`` turns it off. The directory may be deleted
at any time; it grows by the programs compiled, and JAX trusts what it reads
there, so it must not be writable by others.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

ENVIRONMENT = "RNN_JAX_COMPILATION_CACHE"
OFF = ("off", "0", "false", "no", "none")


def default_directory() -> Path:
    """``$XDG_CACHE_HOME/rnn_jax/jax``, ``~/.cache/rnn_jax/jax`` without ``XDG_CACHE_HOME``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rnn_jax" / "jax"


def use_compilation_cache(directory: str | os.PathLike | None = None) -> Path | None:
    """Turns on JAX's persistent compilation cache for every program from now on.

    ``directory`` None takes the module docstring's order: the
    ``RNN_JAX_COMPILATION_CACHE`` variable (``off`` turns the cache off:
    returns None), JAX's own setting, the default. Returns the directory used.

    Example:
        >>> rj.app.compilation_cache.default_directory().parts[-2:]
        ('rnn_jax', 'jax')
    """
    setting = os.environ.get(ENVIRONMENT, "").strip()
    if directory is None and setting.lower() in OFF:
        return None
    if directory is None and not setting and jax.config.jax_compilation_cache_dir:
        return Path(jax.config.jax_compilation_cache_dir)
    chosen = Path(directory or setting or default_directory()).expanduser()
    jax.config.update("jax_compilation_cache_dir", str(chosen))
    # JAX skips programs that compile in under a second; a run's many small ones add up.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return chosen
