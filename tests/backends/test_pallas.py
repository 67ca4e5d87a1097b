"""The ``pallas`` backend equals the reference backend, in values and gradients.

Everything runs in Pallas interpret mode on a CPU (the kernels' bodies
evaluated by XLA); shapes are tiny because interpretation is slow. Each case
compares one jitted function returning the final carry, the outputs and the
gradients of a random linear functional of both with respect to the
parameters, the inputs and the initial state.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_jax as rj
from rnn_jax.backends import contract, pallas
from rnn_jax.backends.pallas import dense_heads, head_view, linear_scan, recurrent_blocks
from rnn_jax.backends.pallas.platform import resolve_interpret, tiling
from rnn_jax.cells.base import LinearRecurrence, zeros_state

T, B, F = 7, 3, 3
LENGTHS = np.array([7, 2, 0])


def random_like(key, tree, scale=1.0):
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(key, len(leaves))
    out = []
    for k, x in zip(keys, leaves, strict=True):
        if jnp.iscomplexobj(x):
            k1, k2 = jax.random.split(k)
            v = jax.random.normal(k1, x.shape) + 1j * jax.random.normal(k2, x.shape)
        else:
            v = jax.random.normal(k, x.shape)
        out.append((scale * v).astype(x.dtype))
    return jax.tree.unflatten(treedef, out)


def outputs_and_grads(cell, params, xs, c0, length, reverse, backend, unroll=1):
    """(carry, ys, d/d(params, xs, c0) of a random linear functional), jitted."""
    carry_shape, ys_shape = jax.eval_shape(
        lambda: rj.scan(cell, params, xs, initial_state=c0, length=length, backend="reference")
    )
    w_carry = random_like(jax.random.key(7), carry_shape)
    w_ys = random_like(jax.random.key(8), ys_shape)

    def loss(params, xs, c0):
        carry, ys = rj.scan(
            cell,
            params,
            xs,
            initial_state=c0,
            length=length,
            reverse=reverse,
            backend=backend,
            unroll=unroll,
        )
        total = jnp.sum(jnp.real(ys * w_ys))
        for c, w in zip(jax.tree.leaves(carry), jax.tree.leaves(w_carry), strict=True):
            total = total + jnp.sum(jnp.real(c * w))
        return total, (carry, ys)

    (_, (carry, ys)), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(
        params, xs, c0
    )
    return carry, ys, grads


def assert_matches(cell, params, xs, c0, length, reverse, backend, *, tol=2e-5, unroll=1):
    got = outputs_and_grads(cell, params, xs, c0, length, reverse, backend, unroll)
    want = outputs_and_grads(cell, params, xs, c0, length, reverse, "reference")
    for path, g, w in zip(
        jax.tree_util.tree_flatten_with_path(want)[0],
        jax.tree.leaves(got),
        jax.tree.leaves(want),
        strict=True,
    ):
        np.testing.assert_allclose(
            np.asarray(g, np.complex128 if jnp.iscomplexobj(w) else np.float64),
            np.asarray(w, np.complex128 if jnp.iscomplexobj(w) else np.float64),
            rtol=tol,
            atol=tol,
            err_msg=f"{cell.name}: {jax.tree_util.keystr(path[0])}",
        )
    return got


def setup(cell, *, batch=(B,), steps=T, features=F, key=0):
    keys = jax.random.split(jax.random.key(key), 3)
    params = cell.init(keys[0], features)
    xs = jax.random.normal(keys[1], (steps, *batch, features))
    c0 = random_like(keys[2], cell.initial_state(params, batch), scale=0.5)
    return params, xs, c0


# ----------------------------------------------------------------------------- fused kernel

GATED = {
    "simple": lambda: rj.simple(5),
    "gru": lambda: rj.gru(4),
    "lstm": lambda: rj.lstm(4),
    "lstm_peephole_proj_norm": lambda: rj.lstm(5, peephole=True, proj_size=3, layer_norm=True),
    "multihead_lstm": lambda: rj.multihead_lstm(8, 2),
    "multihead_gru": lambda: rj.multihead_gru(6, 3),
    "multihead_simple": lambda: rj.multihead_simple(8, 4),
}


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("name", list(GATED))
def test_fused_kernel_equals_reference_with_lengths(name, reverse):
    cell = GATED[name]()
    params, xs, c0 = setup(cell)
    _, ys, _ = assert_matches(cell, params, xs, c0, jnp.asarray(LENGTHS), reverse, "pallas")
    assert np.all(np.asarray(ys)[:, 2] == 0)  # the empty sequence has zero outputs


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_fused_kernel_tiles_and_pads_time_and_batch(reverse):
    # T=10 in blocks of 4 (padded to 12, carry handed over between time blocks) and
    # B=3 in tiles of 2 (padded to 4), without lengths (forward, the in-kernel loop
    # unrolled by 3, not a divisor of the block) and with lengths (reverse).
    cell = rj.lstm(4)
    params, xs, c0 = setup(cell, steps=10)
    tiled = pallas(block_time=4, block_batch=2)
    if reverse:
        assert_matches(cell, params, xs, c0, jnp.array([10, 5, 1]), reverse, tiled)
    else:
        assert_matches(cell, params, xs, c0, None, reverse, tiled, unroll=3)


def test_fused_kernel_any_batch_shape_and_vmap():
    cell = rj.multihead_gru(4, 2)
    params, xs, c0 = setup(cell, batch=(2, 2))
    assert_matches(cell, params, xs, c0, jnp.array([[7, 3], [0, 5]]), True, "pallas")

    # Batch-major data through jax.vmap over single sequences (batch shape ()).
    xs_btf = jnp.swapaxes(xs[:, 0], 0, 1)
    lengths = jnp.array([7, 3])

    def run(backend):
        def loss(params, xs_btf):
            scan = lambda x, n: rj.scan(cell, params, x, length=n, backend=backend)  # noqa: E731
            carry, ys = jax.vmap(scan)(xs_btf, lengths)
            return jnp.sum(jnp.sin(ys)) + jnp.sum(carry**2), (carry, ys)

        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(params, xs_btf)

    got, want = jax.tree.leaves(run("pallas")), jax.tree.leaves(run("reference"))
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-5)


def test_fused_kernel_bfloat16_inputs_keep_a_float32_state():
    cell = rj.lstm(4, dtype=jnp.bfloat16)
    params, xs, c0 = setup(cell)
    xs = xs.astype(jnp.bfloat16)
    assert c0.h.dtype == jnp.float32
    carry, ys, grads = assert_matches(
        cell, params, xs, c0, jnp.asarray(LENGTHS), False, "pallas", tol=2e-2
    )
    assert carry.c.dtype == jnp.float32
    assert grads[0].recurrent_kernel.dtype == jnp.bfloat16
    assert grads[1].dtype == jnp.bfloat16


def test_fused_kernel_refuses_cells_without_gates():
    for cell in (rj.mgu(4), rj.indrnn(4), rj.gru(4, reset_after=False)):
        params, xs, _ = setup(cell)
        with pytest.raises(ValueError, match=rf"pallas backend cannot run the {cell.name}"):
            rj.scan(cell, params, xs, backend="pallas")
        with pytest.raises(ValueError, match="gates"):
            rj.scan(cell, params, xs, backend=pallas(kernel="fused"))


def test_recurrent_blocks_are_the_heads_of_the_recurrent_matrix():
    dense = rj.lstm(6)
    params = dense.init(jax.random.key(0), 3)
    blocks = recurrent_blocks(dense, params)
    assert blocks.shape == (1, 6, 24)
    np.testing.assert_array_equal(blocks[0], params.recurrent_kernel)
    assert head_view(dense).num_heads == 1
    assert dense_heads(dense.gates).gates is dense.gates

    multi = rj.multihead_lstm(12, 3)
    params = multi.init(jax.random.key(0), 3)
    assert head_view(multi).num_heads == 3
    np.testing.assert_array_equal(recurrent_blocks(multi, params), params.recurrent_kernel)
    # The dense Gates contract of a multi-head cell is the block-diagonal matrix.
    dense_kernel = multi.gates.kernel(params)
    assert dense_kernel.shape == (12, 48)
    np.testing.assert_array_equal(dense_kernel[4:8, 16:32], params.recurrent_kernel[1])
    assert not np.any(np.asarray(dense_kernel[4:8, :16]))


# ----------------------------------------------------------------------------- linear scan


class DiagParams(NamedTuple):
    kernel: jax.Array  # [F, 2H]
    bias: jax.Array  # [2H]


def diagonal_cell(hidden_size: int) -> rj.Cell:
    """A small diagonal linear cell: ``h = sigmoid(x Wa) * h + tanh(x Wb)``, ``y = 2 h + 1``."""
    H = hidden_size

    def init(key, input_size):
        return DiagParams(jax.random.normal(key, (input_size, 2 * H)), jnp.zeros(2 * H))

    def coefficients(params, xs):
        z = xs @ params.kernel + params.bias
        return jax.nn.sigmoid(z[..., :H]), jnp.tanh(z[..., H:])

    def output(params, hs, xs):
        return 2.0 * hs + 1.0

    def step(params, h, x):
        a, b = coefficients(params, x)
        h = a * h + b
        return h, output(params, h, x)

    return rj.Cell(
        init=init,
        initial_state=zeros_state(H),
        step=step,
        input_size=lambda p: p.kernel.shape[0],
        linear=LinearRecurrence(coefficients=coefficients, output=output),
        name="diagonal",
    )


LINEAR = {
    "diagonal": lambda: diagonal_cell(4),
    "min_gru": lambda: rj.min_gru(4),
    "min_lstm": lambda: rj.min_lstm(4),
    "lru": lambda: rj.lru(4),
    "rg_lru": lambda: rj.rg_lru(4),
}


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("name", list(LINEAR))
def test_linear_scan_kernel_equals_reference_with_lengths(name, reverse):
    cell = LINEAR[name]()
    params, xs, c0 = setup(cell)
    _, ys, _ = assert_matches(cell, params, xs, c0, jnp.asarray(LENGTHS), reverse, "pallas")
    assert np.all(np.asarray(ys)[:, 2] == 0)


def test_linear_scan_kernel_tiles_time_batch_and_features():
    cell = rj.lru(5)  # complex state, as real and imaginary parts
    params, xs, c0 = setup(cell, steps=10)
    tiled = pallas(block_time=4, block_batch=2, block_features=2)
    assert_matches(cell, params, xs, c0, None, True, tiled)
    cell = diagonal_cell(5)
    params, xs, c0 = setup(cell, steps=10)
    assert_matches(cell, params, xs, c0, jnp.array([10, 4, 0]), False, tiled)


def test_linear_scan_function():
    a = jnp.full((4, 1, 2), 0.5)
    b = jnp.ones((4, 1, 2))
    hs, h = linear_scan(a, b, jnp.zeros((1, 2)))
    np.testing.assert_allclose(hs[:, 0, 0], [1.0, 1.5, 1.75, 1.875])
    np.testing.assert_allclose(h, hs[-1])
    hs, h = linear_scan(a, b, jnp.zeros((1, 2)), reverse=True)
    np.testing.assert_allclose(hs[:, 0, 0], [1.875, 1.75, 1.5, 1.0])
    np.testing.assert_allclose(h, hs[0])
    # bfloat16 coefficients, float32 carry.
    hs, _ = linear_scan(a.astype(jnp.bfloat16), b.astype(jnp.bfloat16), jnp.zeros((1, 2)))
    assert hs.dtype == jnp.float32
    with pytest.raises(ValueError, match="h0"):
        linear_scan(a, b, jnp.zeros((2, 2)))


def test_linear_kernel_refuses_cells_without_linear():
    cell = rj.lstm(4)
    params, xs, _ = setup(cell)
    with pytest.raises(ValueError, match="pallas backend cannot run the lstm.*linear"):
        rj.scan(cell, params, xs, backend=pallas(kernel="linear"))


# ----------------------------------------------------------------------------- platform


def test_interpret_mode_on_cpu_and_auto_never_picks_pallas_there(monkeypatch):
    assert jax.default_backend() == "cpu"
    assert resolve_interpret(None) is True
    assert resolve_interpret(False) is False

    def refuse(*args, **kwargs):
        raise AssertionError("auto picked a hardware backend on a CPU")

    for name in ("pallas", "cudnn"):
        monkeypatch.setitem(contract._REGISTRY, name, rj.Backend(name, contract.always, refuse))
    for cell in (rj.lstm(4), rj.min_gru(4)):
        params, xs, _ = setup(cell)
        rj.scan(cell, params, xs)


def test_tiling_defaults_and_padding():
    t = tiling(3, 10, block_batch=None, block_time=None, interpret=True)
    assert (t.block_batch, t.block_time, t.padded_batch, t.padded_time) == (3, 10, 3, 10)
    t = tiling(5, 10, block_batch=2, block_time=4, interpret=True)
    assert (t.padded_batch, t.padded_time, t.batch_blocks, t.time_blocks) == (6, 12, 3, 3)
    with pytest.raises(ValueError, match="block_time"):
        pallas(block_time=0)
    with pytest.raises(ValueError, match="kernel"):
        pallas(kernel="magic")


def test_gpu_tiling_and_triton_size_guard(monkeypatch):
    # What a GPU run would choose, and refuse, decided before any lowering.
    from rnn_jax.backends.pallas import fused
    from rnn_jax.backends.pallas import platform as pallas_platform

    monkeypatch.setattr(pallas_platform, "platform", lambda: "gpu")
    t = tiling(3, 1000, block_batch=None, block_time=None, interpret=False)
    assert (t.block_batch, t.block_time, t.time_blocks) == (16, 1024, 1)
    t = tiling(3, 1000, block_batch=None, block_time=None, interpret=False, gpu_min_batch=1)
    assert t.block_batch == 1
    with pytest.raises(ValueError, match="block_time.*GPU"):
        tiling(3, 1000, block_batch=None, block_time=64, interpret=False)

    monkeypatch.setattr(fused, "platform", lambda: "gpu")
    cell = rj.gru(8)  # 3 gates: a [8, 24] recurrent block
    params, xs, c0 = setup(cell)
    with pytest.raises(ValueError, match=r"power-of-two.*\(8, 24\)"):
        rj.scan(cell, params, xs, initial_state=c0, backend=pallas(interpret=False))
