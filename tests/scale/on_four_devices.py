"""Checks on four CPU devices, run by ``test_scale.py`` in a process of their own (started
with ``XLA_FLAGS=--xla_force_host_platform_device_count=4``, so every other test keeps one
device): the time-sharded scan against the reference, a data-parallel training step
against the single-device one, resuming from a sharded checkpoint, and streamed
inference against the plain call.

The file is not named ``test_*.py``: the test command collects it only through
``test_scale.py``.
"""

from __future__ import annotations

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh
from scan_helpers import random_case

import rnn_jax as rj
from rnn_jax.train import sharding

DEVICES = 4
if jax.device_count() != DEVICES:
    pytest.skip(
        f"needs {DEVICES} devices (run through test_scale.py); {jax.device_count()} visible",
        allow_module_level=True,
    )

# ----------------------------------------------------------------------------- the time axis

T, B, F, H = 7, 4, 2, 3  # T = 7 on 4 devices: the last stretch is padded
LENGTH = np.array([7, 5, 0, 3])
RESETS = np.zeros((T, B), bool)
RESETS[[0, 3, 6], 0] = True
RESETS[[2, 4], 1] = True
RESETS[1, 2] = True  # in a sequence of length 0: counts for nothing
RESETS[[2, 3], 3] = True
HOLES = np.ones((T, B), bool)
HOLES[[1, 4], 0] = False
HOLES[[0, 2, 3], 1] = False

TIME_BY_BATCH = Mesh(np.array(jax.devices()).reshape(2, 2), ("time", "batch"))
BACKENDS = {
    "time4": rj.backends.Sharded(),
    "time2_batch2": rj.backends.Sharded(
        mesh=TIME_BY_BATCH, batch_axis="batch", method="associative"
    ),
    "one_device": rj.backends.Sharded(mesh=Mesh(np.array(jax.devices()[:1]), ("time",))),
}


def draw(cell, seed=0):
    return random_case(cell, T, B, F, seed)


def loss_and_grads(cell, backend, params, xs, h0, reverse):
    """A loss whose cotangent depends on every output and the final carry, its gradients with
    respect to params, inputs and initial state, with lengths, resets and (reversed) holes."""
    extra = {"length": jnp.asarray(LENGTH), "resets": jnp.asarray(RESETS)}
    if reverse:
        extra["mask"] = jnp.asarray(HOLES)

    def loss(params, xs, h0):
        final, ys = rj.scan(
            cell, params, xs, initial_state=h0, reverse=reverse, backend=backend, **extra
        )
        weights = jnp.cos(jnp.arange(ys.size, dtype=jnp.float32)).reshape(ys.shape)
        total = jnp.sum(jnp.real(ys * weights) ** 2) + jnp.sum(jnp.real(final) * jnp.imag(final))
        return total + jnp.sum(jnp.real(final)), (final, ys)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(params, xs, h0)


def close(got, want, tol):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=tol, atol=tol), got, want)


@pytest.mark.parametrize(
    "name, backend, reverse",
    [
        ("min_gru", "time4", False),
        ("min_gru", "time4", True),
        ("lru", "time4", True),  # complex states
        ("min_gru", "time2_batch2", True),
        ("min_gru", "one_device", False),
    ],
)
def test_the_time_sharded_scan_equals_the_reference(name, backend, reverse):
    cell = {"min_gru": rj.min_gru(H), "lru": rj.lru(H)}[name]
    params, xs, h0 = draw(cell)
    got = loss_and_grads(cell, BACKENDS[backend], params, xs, h0, reverse)
    want = loss_and_grads(cell, "reference", params, xs, h0, reverse)
    close(got, want, 5e-5)


def test_the_time_axis_is_split_and_only_summaries_are_gathered():
    cell = rj.min_gru(H)
    params, _, h0 = draw(cell)
    xs = jnp.ones((4096, B, F))
    scan = jax.jit(lambda xs: rj.scan(cell, params, xs, initial_state=h0, backend="sharded")[1])
    text = scan.lower(xs).compile().as_text()
    gathers = [line for line in text.splitlines() if "all-gather" in line and "=" in line]
    assert gathers, "no all-gather: the stretches were not combined across devices"
    # what travels is [4 devices, B, H] summaries, never the [4096, ...] time axis
    assert all("4096" not in line for line in gathers), gathers
    want = rj.scan(cell, params, xs, initial_state=h0, backend="reference")[1]
    np.testing.assert_allclose(scan(xs), want, atol=1e-5)
    eager = rj.scan(cell, params, xs, initial_state=h0, backend="sharded")[1]  # jit inside
    np.testing.assert_allclose(eager, want, atol=1e-5)


def test_the_backend_refuses_what_it_cannot_shard():
    problem = rj.backends.Problem(
        jnp.ones((8, 3, F)), jnp.zeros((3, H)), None, None, None, None, False, None
    )
    assert "this cell has none" in rj.backends.Sharded().supports(rj.gru(H), problem)
    reason = rj.backends.Sharded(mesh=TIME_BY_BATCH, axis="t").supports(rj.min_gru(H), problem)
    assert reason == "its axis 't' is not an axis of the mesh ('time', 'batch')", reason


# ----------------------------------------------------------------------------- training

STEPS = 6
TASK = rj.data.adding(length=10)
MODEL = rj.models.classifier(rj.min_gru(8), 1, input_size=2)
OPTIMIZER, _ = rj.train.make_optimizer("adam", 1e-2)


def train(mesh_shape, steps=STEPS, *, devices=None, backend="auto", **options):
    mesh = sharding.make_mesh(mesh_shape, devices)
    if backend == "time_over_model":  # sequences over data, each one's steps over model
        backend = rj.backends.Sharded(mesh=mesh, axis="model", batch_axis="data")
    model = rj.models.classifier(rj.rnn(rj.min_gru(8), backend=backend), 1, input_size=2)
    return rj.train.fit(
        rj.train.supervised(model.apply, "mse"),
        MODEL.init(jax.random.key(0)),
        OPTIMIZER,
        lambda step: TASK.train.batch(step, 8, seed=0),
        steps=steps,
        progress=False,
        mesh=mesh,
        **options,
    )


def host_leaves(tree):
    return [np.asarray(leaf) for leaf in jax.tree.leaves(tree)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same training on one device, on data=4 (checkpointed every 3 steps), on
    data=2,model=2, and with the time axis split over model by the sharded backend."""
    directory = tmp_path_factory.mktemp("checkpoints") / "data4"
    return {
        "one": train("data=1", devices=jax.devices()[:1]),
        "data4": train("data=4", checkpointer=rj.train.Checkpointer(directory), checkpoint_every=3),
        "data2_model2": train("data=2,model=2"),
        "data2_time2": train("data=2,model=2", backend="time_over_model"),
        "directory": directory,
    }


def test_a_sharded_training_run_equals_the_single_device_run(runs):
    one = host_leaves(runs["one"].params)
    for name in ("data4", "data2_model2", "data2_time2"):
        assert runs[name].step == STEPS
        for got, want in zip(host_leaves(runs[name].params), one, strict=True):
            np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)
    replicated = {leaf.sharding.spec for leaf in jax.tree.leaves(runs["data4"].params)}
    assert replicated == {jax.sharding.PartitionSpec()}
    split = [leaf for leaf in jax.tree.leaves(runs["data2_model2"].params) if leaf.ndim == 2]
    wide = jax.sharding.PartitionSpec(None, "model")
    assert any(leaf.sharding.spec == wide for leaf in split)  # wide layers split


def test_a_batch_that_does_not_split_over_the_data_axis_is_refused():
    with pytest.raises(ValueError, match="a batch of 6 sequences does not split over the 4"):
        sharding.batch_shardings(sharding.make_mesh(), TASK.train.batch(0, 6, seed=0))


def test_resuming_a_sharded_checkpoint_continues_exactly(runs, tmp_path):
    killed = tmp_path / "killed"
    shutil.copytree(runs["directory"], killed)
    shutil.rmtree(killed / str(STEPS))  # as if the run had died after its checkpoint at 3
    assert rj.train.Checkpointer(killed).steps() == [3]
    same_mesh = train("data=4", checkpointer=rj.train.Checkpointer(killed), resume=True)
    want = host_leaves(runs["data4"].params)
    for got, expected in zip(host_leaves(same_mesh.params), want, strict=True):
        np.testing.assert_array_equal(got, expected)
    losses = lambda result: [entry["loss"] for entry in result.history["train"]]
    assert losses(same_mesh) == losses(runs["data4"])  # the history carries on, too
    shutil.rmtree(killed / str(STEPS))
    other_mesh = train("data=2,model=2", checkpointer=rj.train.Checkpointer(killed), resume=True)
    for got, expected in zip(host_leaves(other_mesh.params), want, strict=True):
        np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-6)


# ----------------------------------------------------------------------------- inference

SERIES, STEPS_PER_SERIES, SLICE = 8000, 16, 512  # 16 slices, the last one partial


def device_bytes() -> int:
    """Bytes of all live device buffers (each counted once, however many arrays view it)."""
    buffers = {}
    for array in jax.live_arrays():
        for shard in array.addressable_shards:
            buffers[shard.device.id, shard.data.unsafe_buffer_pointer()] = shard.data.nbytes
    return sum(buffers.values())


def test_streamed_predictions_equal_the_plain_call_in_bounded_memory():
    model = rj.models.forecaster(rj.min_gru(8), input_size=1)
    params = model.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    series = rng.standard_normal((SERIES, STEPS_PER_SERIES, 1)).astype(np.float32)
    length = rng.integers(1, STEPS_PER_SERIES + 1, SERIES).astype(np.int32)
    got = rj.train.predict(
        model.apply, params, series, length=length, slice_size=SLICE, progress=False
    )
    assert got.shape == (SERIES, STEPS_PER_SERIES, 1)
    for rows in (slice(0, 64), slice(SERIES - 10, SERIES)):
        _, want = model.apply(
            params, jnp.asarray(series[rows].swapaxes(0, 1)), length=jnp.asarray(length[rows])
        )
        np.testing.assert_allclose(got[rows], np.swapaxes(want, 0, 1), rtol=1e-5, atol=1e-6)

    # While the caller reads a slice's outputs, the devices hold the next slice (inputs and
    # outputs) and the params: never the whole input.
    slice_bytes = SLICE * (STEPS_PER_SERIES * 4 * 2 + 4)  # inputs, outputs, lengths
    fn = rj.train.streaming.sequence_outputs(model.apply)
    before, peak = device_bytes(), 0
    for _, outputs in rj.train.stream(fn, params, (series, length), slice_size=SLICE):
        assert outputs.shape[1:] == (STEPS_PER_SERIES, 1)
        peak = max(peak, device_bytes() - before)
    assert slice_bytes <= peak <= slice_bytes + 10_000, (peak, slice_bytes)
    assert 4 * peak < series.nbytes  # the whole input would be 7.6 slices
