"""Shared test configuration: a hypothesis profile and backend parameters.

A test that takes a ``cpu_backend`` argument runs once per registered scan
backend that runs on a CPU (``HARDWARE_BACKENDS`` have their own tests on
their hardware, or in interpret mode, which is too slow to repeat here); one
that takes ``core_backend`` once per ``CORE_BACKENDS``. Where a backend's
``supports`` gives a reason it cannot run a case, tests skip that case
(``scan_helpers.skip_unless_supported``).

The core (cells, backends, layers, models) runs under
``jax_numpy_rank_promotion="raise"``, as Equinox runs its tests, so no
implicit broadcast hides in the library.

``HYPOTHESIS_PROFILE=thorough`` runs the property tests with many more examples.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
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


STRICT_DIRECTORIES = ("cells", "backends", "layers", "models")
TESTS = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def strict_rank_promotion(request):
    """Implicit rank promotion raises in the core's tests."""
    relative = Path(str(request.node.path)).resolve().relative_to(TESTS)
    if relative.parts[0] not in STRICT_DIRECTORIES:
        yield
        return
    with jax.numpy_rank_promotion("raise"):
        yield


def cpu_backends() -> list[str]:
    """Registered backends that run on a CPU, sorted."""
    return [name for name in rj.backends.names() if name not in HARDWARE_BACKENDS]


def pytest_generate_tests(metafunc):
    if "cpu_backend" in metafunc.fixturenames:
        metafunc.parametrize("cpu_backend", cpu_backends())
    if "core_backend" in metafunc.fixturenames:
        metafunc.parametrize("core_backend", CORE_BACKENDS)
