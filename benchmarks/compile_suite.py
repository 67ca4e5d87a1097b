"""Compile time of the default training step: rnn_jax against Flax, Equinox and ``lax.scan``.

What a user waits for before the first step: ``jax.jit(jax.grad(loss))`` of
the mean squared error of a layer's outputs (`common.training_loss`: the
gradient with respect to the parameters and the inputs), lowered and
compiled, and the time to the first result (trace, compile and one call).
LSTM and GRU at S (B16 T256 I32 H64), M (B32 T128 I64 H256) and L (B64 T64
I128 H512), float32:

- ``rnn_jax``: ``rj.scan(cell, params, x)``, ``backend="auto"`` (the default);
- ``flax``: Linen ``nn.RNN`` of ``OptimizedLSTMCell``/``GRUCell``;
- ``equinox``: ``eqx.nn.LSTMCell``/``GRUCell`` vmapped over the batch in ``lax.scan``;
- ``lax.scan``: a hand-written step (one fused matmul per step) in ``lax.scan``.

Each repeat builds a fresh function for every implementation (nothing cached
in memory; JAX's persistent cache is off), in a shuffled order; every
implementation compiles once first (LLVM and JAX warm up on the first
compile of a process). Medians of ``--repeats``, and the run time of the
compiled step (median of 10 calls) beside them. Writes
``benchmarks/results/compile_suite-PLATFORM-TIME.json``.

    python benchmarks/compile_suite.py          # ~8 min on 2 cores
    python benchmarks/compile_suite.py --quick  # S only, 2 repeats
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import random  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import rnn_jax as rj  # noqa: E402

SHAPES = {
    "S": common.Shape(B=16, T=256, I=32, H=64),
    "M": common.Shape(B=32, T=128, I=64, H=256),
    "L": common.Shape(B=64, T=64, I=128, H=512),
}
CELLS = ("lstm", "gru")
LIBRARIES = ("rnn_jax", "flax", "equinox", "lax.scan")
# (apply, params, x): a fresh layer function each call, so nothing compiled is reused.
Build = Callable[[str, common.Shape], tuple[Callable, object, jax.Array]]


def inputs(shape, batch_major=False):
    dims = (shape.B, shape.T, shape.I) if batch_major else (shape.T, shape.B, shape.I)
    return jax.random.normal(jax.random.key(1), dims)


def rnn_jax_layer(cell_name, shape):
    cell = getattr(rj, cell_name)(shape.H)
    params = cell.init(jax.random.key(0), shape.I)
    return (lambda p, x: rj.scan(cell, p, x)[1]), params, inputs(shape)


def flax_layer(cell_name, shape):
    import flax.linen as nn

    cell = (nn.OptimizedLSTMCell if cell_name == "lstm" else nn.GRUCell)(shape.H)
    model = nn.RNN(cell)
    x = inputs(shape, batch_major=True)
    params = model.init(jax.random.key(0), x)
    return (lambda p, x: model.apply(p, x)), params, x


def lax_scan_layer(cell_name, shape):
    gates = 4 if cell_name == "lstm" else 3
    k1, k2 = jax.random.split(jax.random.key(0))
    params = {
        "w": jax.random.normal(k1, (shape.I, gates * shape.H)) / shape.I**0.5,
        "u": jax.random.normal(k2, (shape.H, gates * shape.H)) / shape.H**0.5,
        "b": jnp.zeros(gates * shape.H),
    }

    def lstm_step(p, carry, xw):
        h, c = carry
        i, f, g, o = jnp.split(xw + h @ p["u"], 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h

    def gru_step(p, h, xw):
        xr, xz, xn = jnp.split(xw, 3, axis=-1)
        hr, hz, hn = jnp.split(h @ p["u"], 3, axis=-1)
        r, z = jax.nn.sigmoid(xr + hr), jax.nn.sigmoid(xz + hz)
        n = jnp.tanh(xn + r * hn)
        h = (1 - z) * n + z * h
        return h, h

    step = lstm_step if cell_name == "lstm" else gru_step
    zeros = jnp.zeros((shape.B, shape.H))
    carry0 = (zeros, zeros) if cell_name == "lstm" else zeros

    def apply(p, x):
        xw = x @ p["w"] + p["b"]
        return jax.lax.scan(lambda c, xw_t: step(p, c, xw_t), carry0, xw)[1]

    return apply, params, inputs(shape)


BUILDERS: dict[str, Build] = {
    "rnn_jax": rnn_jax_layer,
    "flax": flax_layer,
    "equinox": common.equinox_layer,
    "lax.scan": lax_scan_layer,
}


def first_step(build: Build, cell_name: str, shape) -> dict[str, float]:
    """Seconds to trace and lower, to compile, and to the first result, for a fresh step."""
    apply, params, x = build(cell_name, shape)
    step = jax.jit(jax.grad(common.training_loss(apply, params, x), argnums=(0, 1)))
    start = time.perf_counter()
    lowered = step.lower(params, x)
    traced = time.perf_counter()
    compiled = lowered.compile()
    done = time.perf_counter()
    jax.block_until_ready(compiled(params, x))
    first = time.perf_counter()
    runs = []
    for _ in range(10):
        runs.append(common.time_once(common.blocking(compiled, params, x)))
    return {
        "lower_s": traced - start,
        "compile_s": done - traced,
        "first_result_s": first - start,
        "step_s": statistics.median(runs),
    }


def measure(cell_name, label, shape, args) -> list[dict]:
    for library in args.libraries:  # warm-up: the process's first compile of each
        first_step(BUILDERS[library], cell_name, shape)
    times: dict[str, list[dict]] = {library: [] for library in args.libraries}
    order = list(args.libraries)
    rng = random.Random(0)
    for _ in range(args.repeats):
        rng.shuffle(order)
        for library in order:
            times[library].append(first_step(BUILDERS[library], cell_name, shape))
    records = []
    for library, runs in times.items():
        medians = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        records.append(
            {
                "cell": cell_name,
                "library": library,
                **shape._asdict(),
                "shape_label": label,
                "dtype": "float32",
                "mode": "forward_backward",
                "median_s": medians["compile_s"],
                "repeats": len(runs),
                **medians,
            }
        )
    flax_compile = next(r["compile_s"] for r in records if r["library"] == "flax")
    for r in records:
        r["compile_over_flax"] = r["compile_s"] / flax_compile
        print(
            f"  {cell_name} {label} {r['library']}: compile {r['compile_s']:.2f} s "
            f"({r['compile_over_flax']:.2f}x Flax), first result {r['first_result_s']:.2f} s, "
            f"step {r['step_s'] * 1e3:.1f} ms",
            flush=True,
        )
    return records


def main(argv: list[str] | None = None) -> None:
    parser = common.suite_parser(__doc__, SHAPES, cells=CELLS, quick_help="S only, 2 repeats")
    parser.add_argument("--libraries", default=",".join(LIBRARIES))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_compilation_cache", False)  # every compile timed in full
    args.libraries = args.libraries.split(",")
    if "flax" not in args.libraries:
        parser.error("--libraries must include flax (the ratios are against it)")
    labels = ["S"] if args.quick else args.shapes.split(",")
    args.repeats = 2 if args.quick else args.repeats
    machine = common.machine_info()
    load = machine["load_average_1min"]
    print(f"machine: {machine['cpu']}, {machine['cores']} cores; load {load}")
    common.run_suite("compile_suite", args, labels, SHAPES, measure, machine)


if __name__ == "__main__":
    main()
