"""The ``pallas`` kernels' plans, and lowering for CUDA (Triton) and TPU (Mosaic) from a CPU.

``jax.export(..., platforms=[p])`` lowers a function for a platform this
machine does not have, without compiling it: cheap enough for FlashRNN's
768-wide head layouts, which the compile tests (``tests/compile``, every
kernel variant through the real compilers) leave out for their compile
time. Also here: the plans' block sizes and their refusals in words at
lowering, and the refusal of operations the lane tiles cannot express.
"""

from __future__ import annotations

import contextlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

import rnn_jax as rj
from rnn_jax.backends.pallas import fused, plans, targets
from rnn_jax.backends.pallas.refusal import Refusal

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


# LSTM heads on CUDA; GRU heads (padded to power-of-two tiles) and the TPU's 128-lane tiles
# compile in tests/compile at smaller sizes, and every layout in gpu_suite.py --compile-only.
@pytest.mark.parametrize(("platform", "kind"), [("cuda", "lstm")])
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


def test_a_launch_over_the_gpu_budget_is_refused_in_words_at_lowering():
    cell = rj.lstm(1024)  # 16 rows of a float32 step: 704 KB, over what registers can hold
    forward = lambda p, x: rj.scan(cell, p, x, backend="pallas")[1]  # noqa: E731
    params = jax.eval_shape(lambda key: cell.init(key, 8), jax.random.key(0))
    xs = jax.ShapeDtypeStruct((4, 16, 8), jnp.float32)
    words = r"forward pass .* would hold 704 KB, over the 403 KB of registers and shared memory"
    with pytest.raises(Refusal, match=words):
        lowered(forward, "cuda", params, xs)
    with pytest.raises(Refusal, match="on GPU one program of the backward pass"):
        launch_of(rj.lstm(768, dtype=jnp.bfloat16), targets.GPU, backward=True)


def test_a_recurrent_block_over_the_vmem_budget_is_refused_in_words_at_lowering():
    cell = rj.lstm(2048)  # 2048 x 8192 float32: 64 MiB, four times the 16 MiB of VMEM
    forward = lambda p, x: rj.scan(cell, p, x, backend="pallas")[1]  # noqa: E731
    params = jax.eval_shape(lambda key: cell.init(key, 8), jax.random.key(0))
    words = r"on TPU one program of the forward pass .* over the 16384 KB of VMEM"
    with pytest.raises(Refusal, match=words):
        lowered(forward, "tpu", params, jax.ShapeDtypeStruct((4, 8, 8), jnp.float32))


def launch_of(cell, target, *, batch=16, steps=1024, backward=False, **options):
    params = jax.eval_shape(lambda key: cell.init(key, 8), jax.random.key(0))
    xs = jax.ShapeDtypeStruct((steps, batch, 8), jnp.float32)
    carry = jax.eval_shape(lambda p: cell.initial_state(p, (batch,)), params)
    return plans.plan_launch(
        fused.cell_step(cell, xs, carry),
        plans.Sizes(fused.head_view(cell).num_heads, steps, batch, False, False, False, 1),
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
    with pytest.raises(Refusal, match="power of two"):
        launch_of(rj.lstm(8), gpu, block_batch=24)
    with pytest.raises(Refusal, match="multiple of 8"):
        launch_of(rj.lstm(8), tpu, block_batch=12)


def test_the_gpu_plan_doubles_its_warps_for_a_backward_that_needs_their_registers():
    # LSTM(64), 16 rows: the forward's values take 44 KB, the backward's (with cotangents) 84 KB,
    # over the 64 KB that 4 warps' registers hold at half occupancy (tests/compile: 128 and
    # 256 threads per block in the compiled kernels).
    planned = [launch_of(rj.lstm(64), targets.GPU, steps=5, backward=b) for b in (False, True)]
    assert [launch.blocks.num_warps for launch in planned] == [4, 8]


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
