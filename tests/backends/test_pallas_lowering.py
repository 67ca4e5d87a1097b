"""The ``pallas`` kernels lower for CUDA (Triton) and TPU (Mosaic) from a CPU, forward,
gradient and vmap, and refuse in words what does not fit the chip.

``jax.export(..., platforms=[p])`` lowers a function for a platform this
machine does not have; lowering is where Pallas checks block shapes, memory
spaces and every operation of the kernel bodies. Each test asserts that the
exported module holds the accelerator kernels by name (the Triton or Mosaic
custom call of ``rnn_jax_fused_forward`` and ``rnn_jax_fused_backward``, or
``rnn_jax_linear_scan``) and no interpret-mode loop in their place.
Nothing here compiles (no XLA run), so many shapes cost little.
"""

from __future__ import annotations

import contextlib
import re
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

import rnn_jax as rj
from rnn_jax.backends.pallas import fused, targets
from rnn_jax.backends.pallas.step_jaxprs import trace_step

CUSTOM_CALLS = {"cuda": "__gpu$xla.gpu.triton", "tpu": "tpu_custom_call"}
PLATFORMS = tuple(CUSTOM_CALLS)
FLASHRNN_HEADS = ((64, 12), (128, 6), (256, 3), (768, 1))  # (head size, heads), hidden 768


def abstract_gpu():
    """JAX 0.11 lowers Triton kernels only for a named GPU; 0.10 needs none."""
    if not hasattr(jax.sharding, "AbstractDevice"):
        return contextlib.nullcontext()
    device = jax.sharding.AbstractDevice(device_kind="NVIDIA H200", num_cores=132, platform="gpu")
    mesh = jax.sharding.AbstractMesh((1,), ("x",), abstract_device=device)
    return jax.sharding.use_abstract_mesh(mesh)


def lowered(fn, platform, *args) -> str:
    """The StableHLO module of ``jit(fn)(*args)`` lowered for ``platform``."""
    checks = [export.DisabledSafetyCheck.custom_call(c) for c in CUSTOM_CALLS.values()]
    with abstract_gpu() if platform == "cuda" else contextlib.nullcontext():
        return export.export(jax.jit(fn), platforms=[platform], disabled_checks=checks)(
            *args
        ).mlir_module()


def kernels(module: str, platform: str) -> list[str]:
    """Names of the accelerator kernels in ``module``, in order; asserts no interpreted loop."""
    assert "stablehlo.while" not in module, "an interpret-mode kernel was lowered"
    key = "name" if platform == "cuda" else "kernel_name"
    calls = re.findall(rf"custom_call @{re.escape(CUSTOM_CALLS[platform])}\(.*", module)
    return [re.search(rf'\b{key} = "(\w+)"', call).group(1) for call in calls]


FUSED = ["rnn_jax_fused_forward", "rnn_jax_fused_forward", "rnn_jax_fused_backward"]
LINEAR = ["rnn_jax_linear_scan"] * 3


def forward_and_gradient(cell, xs, outputs=True, **kwargs):
    """``fn(params, xs)``: the outputs (the forward kernel alone; unless not ``outputs``) and
    the gradient of a loss of the outputs (the forward kernel that keeps residuals, then the
    backward one)."""

    def fn(params, xs):
        ys = rj.scan(cell, params, xs, backend="pallas", **kwargs)[1] if outputs else None

        def loss(params, xs):
            carry, ys = rj.scan(cell, params, xs, backend="pallas", **kwargs)
            total = jnp.sum(jnp.real(ys).astype(jnp.float32) ** 2)
            return total + sum(jnp.sum(jnp.abs(c)) for c in jax.tree.leaves(carry))

        return ys, jax.grad(loss, argnums=(0, 1))(params, xs)

    return fn, cell.init(jax.random.key(0), xs.shape[-1]), xs


def xs_of(steps, batch, features, dtype=jnp.float32):
    return jnp.ones((steps, batch, features), dtype)


@pytest.mark.parametrize("platform", PLATFORMS)
def test_gated_cells_lower_with_lengths_resets_holes_and_reverse(platform):
    T, B = 13, 5  # T not a power of two, an odd batch
    lengths = jnp.array([13, 5, 0, 3, 1])  # a zero length
    resets = jnp.zeros((T, B), bool).at[4].set(True)
    holes = jnp.ones((T, B), bool).at[2, 1].set(False)
    cases = [
        (rj.lstm(64), xs_of(T, B, 16), {"length": lengths, "resets": resets}),
        (rj.gru(48, dtype=jnp.bfloat16), xs_of(T, B, 8, jnp.bfloat16), {"mask": holes}),
        (
            rj.lstm(64, peephole=True, proj_size=32, layer_norm=True),
            xs_of(T, B, 8),
            {"length": lengths, "reverse": True},
        ),
        (rj.multihead_simple(96, 2), xs_of(T, B, 8), {"resets": resets, "reverse": True}),
    ]
    for cell, xs, kwargs in cases:
        fn, params, xs = forward_and_gradient(cell, xs, **kwargs)
        assert kernels(lowered(fn, platform, params, xs), platform) == FUSED, cell.name


@pytest.mark.parametrize("platform", PLATFORMS)
def test_vmap_lowers_the_same_kernels(platform):
    cell = rj.gru(32)
    params = cell.init(jax.random.key(0), 8)
    xs_btf, lengths = jnp.ones((6, 11, 8)), jnp.array([11, 0, 3, 7, 11, 1])

    def fn(params, xs_btf):
        def loss(params):
            scan = lambda x, n: rj.scan(cell, params, x, length=n, backend="pallas")  # noqa: E731
            return jnp.sum(jax.vmap(scan)(xs_btf, lengths)[1] ** 2)

        return jax.grad(loss)(params)

    assert kernels(lowered(fn, platform, params, xs_btf), platform) == FUSED[1:]


# GRU heads on CUDA, where Triton's power-of-two tiles are what 3 gates must be padded to;
# the TPU's 128-lane tiles pad both kinds alike (GRUs lower for TPU in the gated-cells test).
@pytest.mark.parametrize(("platform", "kind"), [("cuda", "lstm"), ("cuda", "gru"), ("tpu", "lstm")])
def test_flashrnn_heads_lower_in_bfloat16(platform, kind):
    """FlashRNN's head layouts of a 768-wide layer at B=16, with gradients; the dense 768
    head forward (its backward does not fit one GPU program: refused in words, below)."""
    factory = {"lstm": (rj.lstm, rj.multihead_lstm), "gru": (rj.gru, rj.multihead_gru)}[kind]
    xs = xs_of(9, 16, 32, jnp.bfloat16)
    for head_size, heads in FLASHRNN_HEADS:
        if heads == 1:
            cell = factory[0](768, dtype=jnp.bfloat16)
            forward = lambda p, x, c=cell: rj.scan(c, p, x, backend="pallas")[1]  # noqa: E731
            params = cell.init(jax.random.key(0), 32)
            assert kernels(lowered(forward, platform, params, xs), platform) == FUSED[:1]
            continue
        cell = factory[1](768, heads, dtype=jnp.bfloat16)
        fn, params, xs = forward_and_gradient(cell, xs, outputs=False)
        assert kernels(lowered(fn, platform, params, xs), platform) == FUSED[1:], head_size


@pytest.mark.parametrize("platform", PLATFORMS)
def test_linear_cells_lower(platform):
    T, B = 10, 3
    resets = jnp.zeros((T, B), bool).at[3].set(True)
    cases = [
        (rj.min_gru(48), xs_of(T, B, 8), {"length": jnp.array([10, 0, 4]), "resets": resets}),
        (rj.lru(24), xs_of(T, B, 8), {"reverse": True}),  # complex: real and imaginary parts
        (rj.rg_lru(200), xs_of(T, B, 8), {"mask": jnp.ones((T, B), bool)}),
    ]
    for cell, xs, kwargs in cases:
        fn, params, xs = forward_and_gradient(cell, xs, **kwargs)
        assert kernels(lowered(fn, platform, params, xs), platform) == LINEAR, cell.name


def test_the_gpu_lowering_is_named_triton_with_the_planned_warps():
    cell = rj.multihead_lstm(256, 2, dtype=jnp.bfloat16)
    fn, params, xs = forward_and_gradient(cell, xs_of(5, 16, 8, jnp.bfloat16))
    module = lowered(fn, "cuda", params, xs)
    planned = [
        launch_of(cell, targets.GPU, steps=5, backward=b).blocks.num_warps for b in (0, 0, 1)
    ]
    assert re.findall(r"num_warps = (\d+)", module) == [str(w) for w in planned]
    assert planned[2] == 8  # the backward's values and cotangents need 8 warps' registers
    assert "tpu_custom_call" not in module


def test_a_launch_over_the_gpu_budget_is_refused_in_words_at_lowering():
    cell = rj.lstm(1024)  # 16 rows of a float32 step: 704 KB, over 227 KB + 256 KB
    forward = lambda p, x: rj.scan(cell, p, x, backend="pallas")[1]  # noqa: E731
    params = jax.eval_shape(lambda key: cell.init(key, 8), jax.random.key(0))
    xs = jax.ShapeDtypeStruct((4, 16, 8), jnp.float32)
    with pytest.raises(ValueError, match=r"forward pass would hold 7\d\d KB .* over the 483 KB"):
        lowered(forward, "cuda", params, xs)
    dense = launch_of(rj.lstm(768, dtype=jnp.bfloat16), targets.GPU, backward=True)
    assert "on GPU one program of the backward pass would hold" in dense


def test_a_recurrent_block_over_the_vmem_budget_is_refused_in_words_at_lowering():
    cell = rj.lstm(2048)  # 2048 x 8192 float32: 64 MiB, four times the 16 MiB of VMEM
    forward = lambda p, x: rj.scan(cell, p, x, backend="pallas")[1]  # noqa: E731
    params = jax.eval_shape(lambda key: cell.init(key, 8), jax.random.key(0))
    with pytest.raises(ValueError, match=r"on TPU one program of the forward pass would hold"):
        lowered(forward, "tpu", params, jax.ShapeDtypeStruct((4, 8, 8), jnp.float32))


def launch_of(cell, target, *, batch=16, steps=1024, backward=False, **options):
    params = jax.eval_shape(lambda key: cell.init(key, 8), jax.random.key(0))
    heads = fused.head_view(cell)
    hp = jax.eval_shape(heads.head_params, params)
    W = jax.eval_shape(jax.vmap(heads.gates.kernel), hp)
    xp = jax.eval_shape(cell.project, params, jax.ShapeDtypeStruct((steps, batch, 8), jnp.float32))
    carry = jax.eval_shape(lambda p: cell.initial_state(p, (batch,)), params)
    to_heads = partial(jax.eval_shape, heads.to_heads)
    step = trace_step(heads.gates, W, hp, to_heads(xp), to_heads(carry))
    return fused.plan_launch(
        step,
        fused.Sizes(W.shape[0], steps, batch, False, False, False, 1),
        target,
        fused.FusedOptions(**options),
        backward=backward,
    )


def test_block_plans_fit_the_chips():
    gpu, tpu = targets.GPU, targets.TPU
    small = launch_of(rj.multihead_lstm(768, 12, dtype=jnp.bfloat16), gpu)
    assert small.blocks.rows == 16 and small.blocks.resident_weights  # 64 x 256 bf16: 32 KB
    assert small.time_blocks == 1 and (small.lanes.chunk, small.lanes.width) == (64, 64)
    wide = launch_of(rj.multihead_lstm(768, 3, dtype=jnp.bfloat16), gpu)
    assert not wide.blocks.resident_weights  # 256 x 1024 bf16 is 512 KB: tiles from L2
    assert wide.lanes.width == 128
    gru = launch_of(rj.gru(100), gpu, batch=40)  # 3 gates of 100 units: tiles of 100 in 128
    assert (gru.lanes.chunk, gru.lanes.width, gru.padded_batch) == (100, 128, 48)
    forced = launch_of(rj.multihead_lstm(768, 12, dtype=jnp.bfloat16), gpu, weights="streamed")
    assert not forced.blocks.resident_weights
    on_tpu = launch_of(rj.lstm(768, dtype=jnp.bfloat16), tpu, backward=True)
    assert on_tpu.blocks.rows % 8 == 0 and on_tpu.lanes.width % 128 == 0
    assert on_tpu.padded_time % on_tpu.blocks.block_time == 0 and on_tpu.time_blocks > 1
    assert "power of two" in launch_of(rj.lstm(8), gpu, block_batch=24)
    assert "multiple of 8" in launch_of(rj.lstm(8), tpu, block_batch=12)


def test_supports_refuses_in_words_what_lane_tiles_cannot_express():
    cell = rj.simple(6)
    running = lambda p, c, xp, hu: (jnp.cumsum(xp + hu, -1),) * 2  # noqa: E731
    odd = cell._replace(gates=cell.gates._replace(combine=running))
    params = cell.init(jax.random.key(0), 3)
    problem = rj.backends.problem.describe(odd, params, jnp.ones((4, 2, 3)))
    assert "`cumsum` operation has no tiled form" in rj.backends.Pallas().supports(odd, problem)
    assert rj.backends.Pallas().supports(cell, problem) is None


def test_every_variant_returns_the_same_shapes():
    # Each platform pads inside and slices back: one shape for the switch of branches.
    cell = rj.gru(20)
    params = cell.init(jax.random.key(0), 3)
    xs = np.ones((9, 5, 3), np.float32)
    jaxpr = jax.make_jaxpr(lambda p, x: rj.scan(cell, p, x, backend="pallas"))(params, xs)
    assert [v.aval.shape for v in jaxpr.jaxpr.outvars] == [(5, 20), (9, 5, 20)]
