"""JAX warns of nothing we use: ``import rnn_jax`` (the modules loaded on first use too) and
a scan through every rule of the scan primitive run with every ``DeprecationWarning``
attributed to an ``rnn_jax`` module turned into an error, in a fresh process (a warning is
shown once per place, so one already seen in this process would go unnoticed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import warnings

warnings.filterwarnings("error", category=DeprecationWarning, module=r"rnn_jax(\.|$)")

# the filter works: a deprecation attributed to one of our modules is an error
try:
    exec("import warnings; warnings.warn('old', DeprecationWarning)", {"__name__": "rnn_jax.x"})
except DeprecationWarning:
    print("the filter catches our deprecations")

import jax
import jax.numpy as jnp

import rnn_jax as rj
from rnn_jax.backends import Cudnn, Pallas  # loaded on first use

xs = jnp.ones((3, 2, 2))
cell = rj.lstm(2)
params = cell.init(jax.random.key(0), 2)
run = lambda p, x: rj.scan(cell, p, x)[1]  # every rule of the scan primitive:
run(params, xs)  # eager
loss = lambda p, x: jnp.sum(run(p, x) ** 2)
jax.jit(jax.grad(loss, argnums=(0, 1)))(params, xs)  # jvp, transpose
jax.vmap(run, in_axes=(None, 1), out_axes=1)(params, xs)  # batching
jax.jvp(lambda x: run(params, x), (xs,), (xs,))  # forward mode
print("done")
"""


def test_jax_warns_of_nothing_we_use():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.splitlines() == ["the filter catches our deprecations", "done"]
