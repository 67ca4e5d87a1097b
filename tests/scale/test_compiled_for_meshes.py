"""Scaling out, compiled for real topologies on a CPU: a 2x2 TPU v5e slice and four H100s.

The data-parallel training step (parameters replicated, sequences split over
``data``) and the time-sharded scan are compiled by the real compilers for
four chips; their collectives are in the compiled programs. A Pallas kernel
is not partitioned by the compiler, so on a mesh it runs inside ``shard_map``,
one kernel per chip; that program compiles too, its gradient summed over the
chips.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "compile"))

import compiling  # noqa: E402

import rnn_jax as rj  # noqa: E402
from rnn_jax import aot  # noqa: E402
from rnn_jax.train import sharding  # noqa: E402

TASK = rj.data.adding(length=16)
BATCH = 8  # sequences: two per chip


def abstract(tree, shardings):
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(np.shape(x), jnp.result_type(x), sharding=s),
        tree,
        shardings,
    )


def collectives(compiled) -> set[str]:
    found = set()
    for op in ("all-reduce", "all-gather", "reduce-scatter", "collective-permute", "all-to-all"):
        if any(f" {op}" in line and "=" in line for line in compiled.as_text().splitlines()):
            found.add(op)
    return found


def data_parallel_step(chip: str):
    """The fit loop's step (loss, gradient, optimizer update) compiled for 4 chips on data=4."""
    mesh = sharding.make_mesh("data=4", aot.devices(chip))
    model = rj.models.classifier(rj.gru(16), 1, input_size=2)
    objective = rj.train.supervised(model.apply, "mse")
    optimizer, _ = rj.train.make_optimizer("adam", 1e-3)
    params = jax.eval_shape(model.init, jax.random.key(0))
    opt_state = jax.eval_shape(optimizer.init, params)
    batch = TASK.train.batch(0, BATCH, seed=0)

    def step(params, opt_state, batch):
        (loss, _), grads = jax.value_and_grad(objective.loss, has_aux=True)(
            params, batch, None, None
        )
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    args = (
        abstract(params, sharding.state_shardings(mesh, params)),
        abstract(opt_state, sharding.state_shardings(mesh, opt_state)),
        abstract(batch, sharding.batch_shardings(mesh, batch)),
    )
    return jax.jit(step).lower(*args).compile()


def time_sharded_scan(chip: str):
    """The sharded backend's scan (and its gradient) of 1,024 steps over 4 chips."""
    mesh = Mesh(np.array(aot.devices(chip)), ("time",))
    cell, backend = rj.min_gru(16), rj.backends.Sharded(mesh=mesh)
    params = jax.eval_shape(lambda: cell.init(jax.random.key(0), 8))
    replicated = NamedSharding(mesh, PartitionSpec())
    xs = jax.ShapeDtypeStruct((1024, BATCH, 8), jnp.float32, sharding=replicated)

    def scan_and_gradient(params, xs):
        loss = lambda p: jnp.sum(rj.scan(cell, p, xs, backend=backend)[1] ** 2)  # noqa: E731
        return rj.scan(cell, params, xs, backend=backend)[1], jax.grad(loss)(params)

    args = (abstract(params, jax.tree.map(lambda _: replicated, params)), xs)
    return jax.jit(scan_and_gradient).lower(*args).compile()


def pallas_in_shard_map(chip: str, gradient: bool):
    """A fused-kernel LSTM over a batch split on 4 chips, each chip running the kernel on its
    sequences (``shard_map``): the forward, or the gradient of a loss summed across the chips.

    The gradient is taken with ``check_vma=False``: under shard_map's type checks the
    gradient of ``rj.scan`` with replicated parameters fails in JAX's transposition for every
    backend (``reference`` too), which is the driver's to fix, not the kernels'."""
    mesh = Mesh(np.array(aot.devices(chip)), ("data",))
    cell = rj.lstm(32)
    params = jax.eval_shape(lambda: cell.init(jax.random.key(0), 8))
    split, replicated = PartitionSpec(None, "data"), PartitionSpec()

    def local(params, xs):
        # Each chip's initial state varies with its sequences, as shard_map's types say.
        zeros = cell.initial_state(params, xs.shape[1:2])
        c0 = jax.tree.map(lambda z: jax.lax.pcast(z, ("data",), to="varying"), zeros)
        ys = rj.scan(cell, params, xs, initial_state=c0, backend="pallas")[1]
        return jax.lax.psum(jnp.sum(ys**2), "data") if gradient else ys

    fn = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(replicated, split),
        out_specs=replicated if gradient else split,
        check_vma=not gradient,
    )
    args = (
        abstract(params, jax.tree.map(lambda _: NamedSharding(mesh, replicated), params)),
        jax.ShapeDtypeStruct((13, BATCH, 8), jnp.float32, sharding=NamedSharding(mesh, split)),
    )
    return jax.jit(jax.grad(fn) if gradient else fn).lower(*args).compile()


@pytest.mark.parametrize(
    "chip",
    [
        pytest.param("v5e", marks=compiling.needs("v5e")),
        pytest.param("h100", marks=compiling.needs("h100")),
    ],
)
def test_the_data_parallel_step_compiles_with_an_all_reduce_of_the_gradients(chip):
    assert "all-reduce" in collectives(data_parallel_step(chip))


@pytest.mark.parametrize(
    "chip",
    [
        pytest.param("v5e", marks=compiling.needs("v5e")),
        pytest.param("h100", marks=compiling.needs("h100")),
    ],
)
def test_the_time_sharded_scan_compiles_gathering_only_summaries(chip):
    compiled = time_sharded_scan(chip)
    assert "all-gather" in collectives(compiled)
    # what travels is [4 chips, B, H] summaries, never the 1,024-step time axis
    lines = compiled.as_text().splitlines()
    gathers = [
        line.split(" all-gather")[0] for line in lines if re.search(r" all-gather\S*\(", line)
    ]
    shapes = [re.findall(r"\[([\d,]*)\]", line) for line in gathers]
    assert all("1024" not in dims.split(",") for found in shapes for dims in found), gathers


@pytest.mark.parametrize(
    "chip",
    [
        pytest.param("v5e", marks=compiling.needs("v5e")),
        pytest.param("h100", marks=compiling.needs("h100")),
    ],
)
def test_pallas_kernels_inside_shard_map_compile_for_four_chips(chip):
    forward = pallas_in_shard_map(chip, gradient=False).as_text()
    assert "rnn_jax_fused_forward" in forward and "rnn_jax_fused_backward" not in forward
    compiled = pallas_in_shard_map(chip, gradient=True)
    assert "all-reduce" in collectives(compiled)  # the parameters' gradients summed
    assert "rnn_jax_fused_backward" in compiled.as_text()
