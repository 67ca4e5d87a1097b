"""Docstring examples (``pytest --doctest-modules rnn_jax``) see ``rj``, ``jax``, ``jnp``
and ``np``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_jax as rj


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace):
    doctest_namespace.update(rj=rj, jax=jax, jnp=jnp, np=np)
