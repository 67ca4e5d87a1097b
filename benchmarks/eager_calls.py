"""Eager calls: an un-jitted ``rj.scan`` against the jitted one and Flax's ``nn.RNN`` eagerly.

An un-jitted ``rj.scan`` compiles once per cell, backend, options and shapes, so every call
after the first should cost what the jitted call costs plus dispatch. Times, interleaved,
medians after the first call (whose time, compilation included, is recorded apart), the
forward pass of a GRU H64 at ``[T50, B8, I16]`` and an LSTM at M (B32 T128 I64 H256):
``rj.scan`` eagerly and under ``jax.jit``, and Flax's ``nn.RNN`` eagerly and jitted. Writes
JSON into ``benchmarks/results/`` (suite ``eager_calls``, which no dispatch choice reads).

    python benchmarks/eager_calls.py            # in a quiet window (~1 min on 2 cores)
    python benchmarks/eager_calls.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import rnn_jax as rj  # noqa: E402

CASES = {"gru": common.Shape(8, 50, 16, 64), "lstm": common.Shape(32, 128, 64, 256)}


def calls(cell_name: str, shape: common.Shape) -> dict:
    """``{name: blocking call}``: rnn_jax and Flax, each eager and jitted."""
    import flax.linen as nn

    cell = {"gru": rj.gru, "lstm": rj.lstm}[cell_name](shape.H)
    params = cell.init(jax.random.key(0), shape.I)
    xs = jax.random.normal(jax.random.key(1), (shape.T, shape.B, shape.I))
    flax_cell = {"gru": nn.GRUCell, "lstm": nn.OptimizedLSTMCell}[cell_name](shape.H)
    model = nn.RNN(flax_cell)
    batch_major = jnp.swapaxes(xs, 0, 1)
    variables = model.init(jax.random.key(0), batch_major)
    scan = lambda p, x: rj.scan(cell, p, x)[1]
    return {
        "rnn_jax_eager": common.blocking(scan, params, xs),
        "rnn_jax_jit": common.blocking(jax.jit(scan), params, xs),
        "flax_eager": common.blocking(model.apply, variables, batch_major),
        "flax_jit": common.blocking(jax.jit(model.apply), variables, batch_major),
    }


def measure(cell_name: str, shape: common.Shape, *, quick: bool) -> list[dict]:
    cases = calls(cell_name, shape)
    first = {name: common.time_once(run) for name, run in cases.items()}
    rounds, per_round = (2, 1) if quick else (10, 3)
    stats = common.interleaved(cases, rounds=rounds, per_round=per_round, warmup=1)
    records = []
    for name, stat in stats.items():
        library, call = name.rsplit("_", 1)
        who = {"backend": "auto"} if library == "rnn_jax" else {"library": library}
        records.append(
            common.record(
                cell=cell_name,
                shape=shape,
                dtype="float32",
                mode="forward",
                stats=stat,
                call=call,
                first_call_s=first[name],
                **who,
            )
        )
        print(f"{cell_name} {name:14s} first {first[name]:8.4f} s  then {stat.median_s:.6f} s")
    return records


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few repetitions")
    parser.add_argument("--out", type=Path, default=common.RESULTS_DIR)
    args = parser.parse_args(argv)
    records = [r for name, shape in CASES.items() for r in measure(name, shape, quick=args.quick)]
    machine = common.machine_info()
    path = common.write_results(
        "eager_calls", records, machine=machine, quick=args.quick, directory=args.out
    )
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
