"""Shared test configuration: a hypothesis profile and the ``backend`` parameter.

A test that takes a ``backend`` argument runs once per registered scan
backend that runs on a CPU (``HARDWARE_BACKENDS`` have their own tests on
their hardware, or in interpret mode, which is too slow to repeat here); one
that takes ``core_backend`` once per ``CORE_BACKENDS``, ``other_backend``
once per CPU backend outside them. Use
the ``scan_or_skip`` fixture to run ``rj.scan`` so that a backend refusing a
cell (a ValueError naming the backend) skips the case instead of failing it.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

import rnn_jax as rj

HARDWARE_BACKENDS = {"cudnn", "pallas"}
# The backends every cell runs through in the cell-by-cell tests; the others get
# representative cells there, and every cell in their own test modules.
CORE_BACKENDS = ("reference", "sequential")

settings.register_profile(
    "ci",
    deadline=None,
    max_examples=25,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough",
    deadline=None,
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def cpu_backends() -> list[str]:
    """Registered backends that run on a CPU, sorted."""
    return [name for name in rj.backend_names() if name not in HARDWARE_BACKENDS]


def pytest_generate_tests(metafunc):
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", cpu_backends())
    if "core_backend" in metafunc.fixturenames:
        metafunc.parametrize("core_backend", CORE_BACKENDS)
    if "other_backend" in metafunc.fixturenames:
        others = [name for name in cpu_backends() if name not in CORE_BACKENDS]
        metafunc.parametrize("other_backend", others)


def refused(error: ValueError, backend: str) -> bool:
    """Whether ``error`` is ``backend`` declining a cell (the message names the backend)."""
    return backend in str(error)


@pytest.fixture(scope="session")
def scan_or_skip():
    """``rj.scan`` that skips the test when the backend declines the cell."""

    def run(cell, params, xs, *, backend, **kwargs):
        try:
            return rj.scan(cell, params, xs, backend=backend, **kwargs)
        except ValueError as error:
            if refused(error, backend):
                pytest.skip(f"backend {backend} declines the {cell.name} cell: {error}")
            raise

    return run
