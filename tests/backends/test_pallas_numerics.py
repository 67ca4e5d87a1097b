"""The ``pallas`` kernels in interpret mode equal the reference backend, in values and gradients.

On a CPU the backend runs the GPU kernel's tiling in plain interpret mode
(``interpret="gpu"``, the default: lane tiles padded to powers of two, 16
rows per program) or the TPU kernel's under TPU interpret mode
(``interpret="tpu"``: time blocks, (8, 128) tiles, NaN-filled VMEM, bounds
checks and a shuffled order of the parallel grid axes). Each case compares
one jitted function returning the final carry, the outputs and the
gradients of a loss whose cotangents depend on both; several features share
a case (odd batch, T not a power of two, lengths with zeros, resets, holes,
reverse), because every interpret-mode compile costs seconds.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_jax as rj
from rnn_jax.backends.pallas import dense_heads, head_view, linear_scan, recurrent_blocks
from rnn_jax.backends.pallas.lanes import Lanes, Tiled, choose_lanes, evaluate, is_rows, tiled
from rnn_jax.backends.pallas.step_jaxprs import trace_step
from rnn_jax.cells.arrays import add_bias, zeros_state
from rnn_jax.cells.capabilities import LinearRecurrence

# Interpret mode is checked for its numbers, not for XLA's optimisations, which cost most
# of the compile time of its large loop programs.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}

T, B, F = 7, 3, 3
LENGTHS = jnp.array([7, 2, 0])
RESETS = jnp.zeros((T, B), bool).at[3, 0].set(True).at[0, 1].set(True).at[6, 0].set(True)
HOLES = jnp.ones((T, B), bool).at[1, 0].set(False).at[4, 0].set(False).at[:, 2].set(False)


def random_like(key, tree, scale=1.0):
    leaves, treedef = jax.tree.flatten(tree)
    out = []
    for k, x in zip(jax.random.split(key, len(leaves)), leaves, strict=True):
        v = jax.random.normal(k, x.shape)
        if jnp.iscomplexobj(x):
            v = v + 1j * jax.random.normal(jax.random.fold_in(k, 1), x.shape)
        out.append((scale * v).astype(x.dtype))
    return jax.tree.unflatten(treedef, out)


def setup(cell, *, batch=(B,), steps=T, features=F, dtype=jnp.float32):
    keys = jax.random.split(jax.random.key(0), 3)
    params = cell.init(keys[0], features)
    xs = jax.random.normal(keys[1], (steps, *batch, features)).astype(dtype)
    c0 = random_like(keys[2], cell.initial_state(params, batch), scale=0.5)
    return params, xs, c0


def outputs_and_grads(cell, params, xs, c0, backend, **kwargs):
    """(carry, ys, d/d(params, xs, c0)) of a loss of the outputs and the final carry, jitted."""

    def loss(params, xs, c0):
        carry, ys = rj.scan(cell, params, xs, initial_state=c0, backend=backend, **kwargs)
        weights = jnp.cos(jnp.arange(ys.size, dtype=jnp.float32)).reshape(ys.shape)
        total = jnp.sum(jnp.real(ys).astype(jnp.float32) * weights)
        for c in jax.tree.leaves(carry):
            total = total + jnp.sum(jnp.sin(jnp.real(c)))
        return total, (carry, ys)

    grad = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)
    (_, (carry, ys)), grads = jax.jit(grad, compiler_options=FAST_COMPILE)(params, xs, c0)
    return carry, ys, grads


def assert_matches(cell, params, xs, c0, backend="pallas", *, tol=3e-5, **kwargs):
    got = outputs_and_grads(cell, params, xs, c0, backend, **kwargs)
    want = outputs_and_grads(cell, params, xs, c0, "reference", **kwargs)
    paths = jax.tree_util.tree_flatten_with_path(want)[0]
    for (path, w), g in zip(paths, jax.tree.leaves(got), strict=True):
        assert g.dtype == w.dtype, jax.tree_util.keystr(path)
        kind = np.complex128 if jnp.iscomplexobj(w) else np.float64
        np.testing.assert_allclose(
            np.asarray(g, kind),
            np.asarray(w, kind),
            rtol=tol,
            atol=tol,
            err_msg=f"{cell.name}: {jax.tree_util.keystr(path)}",
        )
    return got


# ----------------------------------------------------------------------------- fused kernel


def test_lstm_with_lengths_and_resets():
    cell = rj.lstm(4)
    params, xs, c0 = setup(cell)
    _, ys, _ = assert_matches(cell, params, xs, c0, length=LENGTHS, resets=RESETS)
    assert not np.asarray(ys)[:, 2].any()  # the empty sequence has zero outputs


def test_gru_reversed_with_holes_and_resets():
    cell = rj.gru(4)  # three gates: the backward regroups three tiles per row
    params, xs, c0 = setup(cell)
    _, ys, _ = assert_matches(cell, params, xs, c0, mask=HOLES, resets=RESETS, reverse=True)
    assert not np.asarray(ys)[~np.asarray(HOLES)].any()  # masked steps output zeros


def test_lstm_peephole_projection_layer_norm():
    # Reductions over padded lanes (layer norm), row slices (peepholes) and a matmul inside
    # combine (the projection): the lane tiles mask their padding for each.
    cell = rj.lstm(8, peephole=True, proj_size=4, layer_norm=True)
    params, xs, c0 = setup(cell)
    assert_matches(cell, params, xs, c0, length=LENGTHS, tol=5e-5)


def test_multihead_lstm_in_bfloat16_keeps_a_float32_state():
    cell = rj.multihead_lstm(8, 2, dtype=jnp.bfloat16)
    params, xs, c0 = setup(cell, dtype=jnp.bfloat16)
    carry, _, grads = assert_matches(cell, params, xs, c0, length=LENGTHS, reverse=True, tol=3e-2)
    assert carry.c.dtype == jnp.float32
    assert grads[0].recurrent_kernel.dtype == jnp.bfloat16
    assert grads[1].dtype == jnp.bfloat16


def test_multihead_gru_vmapped_over_batch_major_sequences():
    cell = rj.multihead_gru(6, 3)
    params, xs, _ = setup(cell, batch=(2,))
    xs_btf, lengths = jnp.swapaxes(xs, 0, 1), jnp.array([7, 3])

    def run(backend):
        def loss(params, xs_btf):
            scan = lambda x, n: rj.scan(cell, params, x, length=n, backend=backend)  # noqa: E731
            carry, ys = jax.vmap(scan)(xs_btf, lengths)
            return jnp.sum(jnp.sin(ys)) + jnp.sum(carry**2), (carry, ys)

        grad = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)
        return jax.jit(grad, compiler_options=FAST_COMPILE)(params, xs_btf)

    for g, w in zip(jax.tree.leaves(run("pallas")), jax.tree.leaves(run("reference")), strict=True):
        np.testing.assert_allclose(g, w, rtol=3e-5, atol=3e-5)


def test_two_batch_tiles_and_an_unrolled_loop():
    cell = rj.simple(5)  # 20 rows: two programs of 16 rows per head, the second padded
    params, xs, c0 = setup(cell, batch=(20,), steps=5)
    assert_matches(cell, params, xs, c0, unroll=3)


def test_tpu_kernel_in_tpu_interpret_mode():
    # Time blocks of 4 (T=10 padded to 12, the carry handed on in VMEM) and two batch tiles
    # of 8 rows: TPU interpret mode fills VMEM with NaN (a block read before it is written
    # shows), raises on reads out of bounds and runs the parallel grid axes shuffled, so a
    # program that depended on another one's blocks would fail here.
    cell = rj.lstm(4)
    params, xs, c0 = setup(cell, batch=(10,), steps=10)
    lengths = jnp.array([10, 4, 0, 9, 1, 10, 10, 3, 7, 8])
    resets = jnp.zeros((10, 10), bool).at[5].set(True)
    tpu = rj.backends.Pallas(interpret="tpu", block_time=4, block_batch=8)
    assert_matches(cell, params, xs, c0, tpu, length=lengths, resets=resets, reverse=True)


def test_cells_without_gates_are_refused_in_words():
    for cell in (rj.mgu(4), rj.indrnn(4), rj.gru(4, reset_after=False)):
        params, xs, _ = setup(cell)
        with pytest.raises(ValueError, match=rf"pallas backend cannot run the {cell.name}"):
            rj.scan(cell, params, xs, backend="pallas")
        with pytest.raises(ValueError, match="gates"):
            rj.scan(cell, params, xs, backend=rj.backends.Pallas(kernel="fused"))
    with pytest.raises(ValueError, match="kernel must be one of"):
        rj.backends.Pallas(kernel="magic")
    with pytest.raises(ValueError, match="block_time"):
        rj.backends.Pallas(block_time=0)


def test_recurrent_blocks_are_the_heads_of_the_recurrent_matrix():
    dense = rj.lstm(6)
    params = dense.init(jax.random.key(0), 3)
    np.testing.assert_array_equal(recurrent_blocks(dense, params)[0], params.recurrent_kernel)
    assert head_view(dense).num_heads == 1
    assert dense_heads(dense.gates).gates is dense.gates
    multi = rj.multihead_lstm(12, 3)
    params = multi.init(jax.random.key(0), 3)
    np.testing.assert_array_equal(recurrent_blocks(multi, params), params.recurrent_kernel)
    dense_kernel = multi.gates.kernel(params)  # the block-diagonal matrix of the dense contract
    np.testing.assert_array_equal(dense_kernel[4:8, 16:32], params.recurrent_kernel[1])
    assert not np.asarray(dense_kernel[4:8, :16]).any()


# ----------------------------------------------------------------------------- lane tiles


def cut(x: jax.Array, shape, lanes: Lanes) -> Tiled:
    """``x`` (batch axis first where ``shape`` has `ROWS`) as tiles, the padding NaN."""

    def tile(index):
        parts = []
        for n, i in zip(shape, index, strict=True):
            c = None if is_rows(n) else lanes.cut(n)[0]
            parts.append(slice(None) if c is None else slice(i * c, (i + 1) * c))
        piece = x[tuple(parts)]
        widths = [(0, 0) if is_rows(n) else (0, lanes.cut(n)[1] - lanes.cut(n)[0]) for n in shape]
        return jnp.pad(piece, widths, constant_values=np.nan)

    return tiled(shape, tile, lanes)


def joined(value: Tiled, lanes: Lanes) -> np.ndarray:
    pieces = np.empty(value.tiles.shape, dtype=object)
    for index in np.ndindex(*value.tiles.shape):
        keep = tuple(slice(None) if is_rows(n) else slice(0, lanes.cut(n)[0]) for n in value.shape)
        pieces[index] = np.asarray(value.tiles[index])[keep]
    return np.block(pieces.tolist())


@pytest.mark.parametrize("width", [lambda c: 1 << (c - 1).bit_length(), lambda c: 128])
def test_lane_tiles_compute_the_step_and_its_vjp_with_nan_padding(width):
    # A GRU of 6 units: tiles of 6 lanes padded to 8 (GPU) or 128 (TPU) with NaN; the step
    # and its VJP (which concatenates the three gates again and sums over rows) are exact.
    cell, rows = rj.gru(6), 5
    params = cell.init(jax.random.key(0), 3)
    heads = head_view(cell)
    hp = heads.head_params(params)
    W = jax.vmap(heads.gates.kernel)(hp)
    xp = jax.random.normal(jax.random.key(1), (1, 1, rows, 18))
    h = jax.random.normal(jax.random.key(2), (1, rows, 6))
    step = trace_step(heads.gates, W, hp, xp, h)
    lanes = choose_lanes(step.feature_sizes(), rows=rows, width_of=width, max_width=128)
    assert (lanes.chunk, lanes.width) == (6, width(6))
    hu = jax.random.normal(jax.random.key(3), (rows, 18))
    used = [p[0] for p, u in zip(jax.tree.leaves(hp), step.used, strict=True) if u]
    args = (used, h[0], xp[0, 0], hu)
    shapes = [v.aval.shape for v in step.combine.jaxpr.invars]
    flat = jax.tree.leaves(args)
    got = evaluate(
        step.combine, lanes, *(cut(x, s, lanes) for x, s in zip(flat, shapes, strict=True))
    )
    want = jax.tree.leaves(cell.gates.combine(params, h[0], xp[0, 0], hu))
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(joined(g, lanes), w, rtol=1e-6, atol=1e-6)
    d_new = jax.random.normal(jax.random.key(4), (rows, 6))
    flat = [*flat, d_new, d_new]
    shapes = [v.aval.shape for v in step.combine_vjp.jaxpr.invars]
    got = evaluate(
        step.combine_vjp, lanes, *(cut(x, s, lanes) for x, s in zip(flat, shapes, strict=True))
    )
    _, vjp = jax.vjp(cell.gates.combine, params, h[0], xp[0, 0], hu)
    d_params, *d_rest = vjp((d_new, d_new))
    picked = [d for d, u in zip(jax.tree.leaves(d_params), step.used, strict=True) if u]
    want = [*picked, *d_rest]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(joined(g, lanes), w, rtol=1e-5, atol=1e-5)


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
        z = add_bias(xs @ params.kernel, params.bias)
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


def test_linear_scan_of_a_custom_diagonal_cell_with_lengths():
    cell = diagonal_cell(4)
    params, xs, c0 = setup(cell)
    _, ys, _ = assert_matches(cell, params, xs, c0, length=LENGTHS)
    assert not np.asarray(ys)[:, 2].any()


def test_linear_scan_min_gru_reversed_with_holes_and_resets():
    cell = rj.min_gru(4)
    params, xs, c0 = setup(cell)
    assert_matches(cell, params, xs, c0, mask=HOLES, resets=RESETS, reverse=True)


def test_linear_scan_complex_lru_in_tpu_interpret_mode():
    # Complex coefficients as two parts; time blocks of 4 over T=10, so the padded steps must
    # pass the carry through (a = 1 + 0i): a padding of 1 + 1i would turn the state.
    cell = rj.lru(5)
    params, xs, c0 = setup(cell, steps=10)
    tpu = rj.backends.Pallas(interpret="tpu", block_time=4, block_batch=8)
    assert_matches(cell, params, xs, c0, tpu, length=jnp.array([10, 4, 0]))


def test_linear_scan_rg_lru_with_several_tiles():
    cell = rj.rg_lru(5)  # 5 lanes in tiles of 2 (padded to 6), 3 rows in tiles of 2
    params, xs, c0 = setup(cell)
    tiled_backend = rj.backends.Pallas(block_batch=2, block_features=2)
    assert_matches(cell, params, xs, c0, tiled_backend, resets=RESETS, reverse=True)


def test_linear_scan_function():
    a, b = jnp.full((4, 1, 2), 0.5), jnp.ones((4, 1, 2))
    hs, h = linear_scan(a, b, jnp.zeros((1, 2)))
    np.testing.assert_allclose(hs[:, 0, 0], [1.0, 1.5, 1.75, 1.875])
    np.testing.assert_allclose(h, hs[-1])
    hs, h = linear_scan(a, b, jnp.zeros((1, 2)), reverse=True)
    np.testing.assert_allclose(hs[:, 0, 0], [1.875, 1.75, 1.5, 1.0])
    np.testing.assert_allclose(h, hs[0])
    hs, _ = linear_scan(a.astype(jnp.bfloat16), b.astype(jnp.bfloat16), jnp.zeros((1, 2)))
    assert hs.dtype == jnp.float32  # the carry's dtype, whatever the coefficients'
    with pytest.raises(ValueError, match="h0"):
        linear_scan(a, b, jnp.zeros((2, 2)))


def test_linear_kernel_refuses_cells_without_linear():
    cell = rj.lstm(4)
    params, xs, _ = setup(cell)
    with pytest.raises(ValueError, match="pallas backend cannot run the lstm.*linear"):
        rj.scan(cell, params, xs, backend=rj.backends.Pallas(kernel="linear"))
