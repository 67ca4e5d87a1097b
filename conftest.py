"""Docstring examples (``pytest --doctest-modules rnn_jax``) see ``rj``, ``jax``, ``jnp``
and ``np``.

The suite compiles thousands of small programs and runs most of them once, so XLA's
optimisation passes, not the runs, took most of its time (measured: tests/train/test_fit.py
with tests/backends/test_sequential.py 154 s of CPU optimised, 90 s without). The tests
check values against the reference, which holds either way; the benchmarks, which time
the optimised programs, do not run under pytest. Set before JAX is imported, so the
processes the tests start inherit it; ``JAX_DISABLE_MOST_OPTIMIZATIONS=0`` overrides.
"""

import os

os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
# The command line caches compiled programs under ~/.cache; tests write nothing outside their
# temporary directories (the cache's own test names one).
os.environ.setdefault("RNN_JAX_COMPILATION_CACHE", "off")
# The tests run on the CPU. With the ``aot`` extra installed, JAX would otherwise start the
# CUDA and TPU runtimes it finds (and, with no GPU or TPU here, log their failures) in every
# process the tests start; the compile tests reach the GPU and TPU compilers without them.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import rnn_jax as rj  # noqa: E402


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace):
    doctest_namespace.update(rj=rj, jax=jax, jnp=jnp, np=np)


def pytest_configure(config):
    """With ``-n N``, tests that share an ``xdist_group`` run in one worker (``--dist
    loadgroup``, otherwise ``load``): the compile tests group by compiler, so that the CUDA
    plugin and libtpu each start in one process (tests/compile/conftest.py)."""
    if getattr(config.option, "dist", "no") == "load":
        config.option.dist = "loadgroup"
    if hasattr(config, "workerinput"):  # a worker names tests by group, as the controller deals
        config.option.loadgroup = True
