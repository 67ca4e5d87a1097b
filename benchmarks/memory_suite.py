"""Long sequences and large batches: each backend's time and XLA's temporaries, for ``auto``.

For LSTM and GRU at long ``T`` (1,000 to 100,000 steps of B8 I32 H64) and one
large ``B x H`` (B32 T2048 I64 H256), forward and forward+backward of the
training loss (`common.training_loss`), every backend that supports the cell:
the median time (interleaved, after compilation) and the bytes of temporaries
XLA allocates for the compiled program (``compiled.memory_analysis()``,
which does not depend on the machine's load). ``python
benchmarks/dispatch_table.py`` then puts both in ``auto``'s table: ``auto``
keeps a backend's estimated temporaries within its memory budget
(`rnn_jax.backends.auto.memory_budget`).

    python benchmarks/memory_suite.py          # ~5 min on 2 cores
    python benchmarks/memory_suite.py --quick  # a smoke run (T <= 1,000), not for dispatch

Writes ``benchmarks/results/memory_suite-PLATFORM-TIME.json``. Time it on a quiet machine.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import rnn_jax as rj  # noqa: E402
from rnn_jax.backends import contract  # noqa: E402
from rnn_jax.backends.problem import describe  # noqa: E402

CELLS = ("lstm", "gru")
BACKENDS = ("sequential", "checkpointed")
SHAPES = {
    "T1k": common.Shape(B=8, T=1_000, I=32, H=64),
    "T10k": common.Shape(B=8, T=10_000, I=32, H=64),
    "T100k": common.Shape(B=8, T=100_000, I=32, H=64),
    "BxH": common.Shape(B=32, T=2_048, I=64, H=256),
}
QUICK_SHAPES = ("T1k",)


def compiled_modes(cell_name: str, shape: common.Shape, backend: str) -> dict[str, tuple]:
    """``mode -> (compiled, args)`` for the forward and the training loss's gradient."""
    cell = getattr(rj, cell_name)(shape.H)
    params = cell.init(jax.random.key(0), shape.I)
    x = jax.random.normal(jax.random.key(1), (shape.T, shape.B, shape.I))

    def apply(p, x):
        return rj.scan(cell, p, x, backend=backend)[1]

    gradient = jax.grad(common.training_loss(apply, params, x), argnums=(0, 1))
    return {
        "forward": (jax.jit(apply).lower(params, x).compile(), (params, x)),
        "forward_backward": (jax.jit(gradient).lower(params, x).compile(), (params, x)),
    }


def supported(cell_name: str, shape: common.Shape, backend: str) -> bool:
    """Whether ``backend`` runs the cell at ``shape`` (its refusal printed where not)."""
    cell = getattr(rj, cell_name)(shape.H)
    params = jax.eval_shape(lambda key: cell.init(key, shape.I), jax.random.key(0))
    xs = jax.ShapeDtypeStruct((shape.T, shape.B, shape.I), jnp.float32)
    refusal = contract.refusal(rj.backends.get(backend), cell, describe(cell, params, xs))
    if refusal is not None:
        print(f"  {backend} refuses {cell_name}: {refusal}")
    return refusal is None


def measure_shape(cell_name, label, shape, args) -> list[dict]:
    records = []
    programs = {
        b: compiled_modes(cell_name, shape, b)
        for b in args.backends
        if supported(cell_name, shape, b)
    }
    for mode in common.MODES:
        runs = {b: common.blocking(p[mode][0], *p[mode][1]) for b, p in programs.items()}
        stats = common.interleaved(runs, rounds=args.rounds, per_round=1, warmup=1, budget_s=60)
        for name, st in stats.items():
            temp = programs[name][mode][0].memory_analysis().temp_size_in_bytes
            rec = common.record(
                cell=cell_name, shape=shape, dtype="float32", mode=mode, stats=st, backend=name
            )
            rec.update(shape_label=label, temp_bytes=int(temp))
            records.append(rec)
            print(
                f"  {cell_name} {label} {mode} {name}: {st.median_s * 1e3:.1f} ms, "
                f"{st.median_s / shape.T * 1e6:.1f} us/step, {temp / 2**20:,.0f} MiB temporaries",
                flush=True,
            )
    return records


def main(argv: list[str] | None = None) -> None:
    parser = common.suite_parser(
        __doc__, SHAPES, cells=CELLS, quick_help="short sequences; not for dispatch"
    )
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    args.backends = args.backends.split(",")
    labels = QUICK_SHAPES if args.quick else args.shapes.split(",")
    if args.quick:
        args.rounds = 3
    common.run_suite("memory_suite", args, labels, SHAPES, measure_shape, common.machine_info())


if __name__ == "__main__":
    main()
