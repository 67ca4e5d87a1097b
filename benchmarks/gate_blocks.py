"""Gate blocks under the ``sequential`` kernel: projected inputs as their gate blocks or whole.

`Gates.blocks` lets the ``sequential`` backend's forward loop carry the
projected inputs ``[*, G*H]`` as ``G`` arrays, joined where ``combine`` reads
them. Each cell runs as declared and as a copy whose `Gates` say otherwise
(``whole``: ``blocks=1``; the LSTM, which declares 1, is given 4 for the
``blocks`` form), with the same settings and parameters: rolled loops (chunks of
16, ``unroll=1``) and whole chunks of 8 unrolled. GRU (3 blocks) and LSTM (its
default one-sigmoid gates, and four split activations), forward and
forward+backward (`common.training_loss`) at the CPU suite's shapes,
interleaved in one process; medians and the blocks / whole ratio go to
``benchmarks/results/gate_blocks-*.json``.

    python benchmarks/gate_blocks.py [--shapes S,M,L] [--cells gru,lstm]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import jax  # noqa: E402
from cpu_suite import SHAPES, jax_cases  # noqa: E402

import rnn_jax as rj  # noqa: E402
from rnn_jax.backends import Sequential  # noqa: E402

LOOPS = {
    "rolled": Sequential(chunk=16, unroll=1, pipeline=False, residuals="recompute"),
    "unrolled": Sequential(chunk=8, unroll=True, pipeline=False, residuals="recompute"),
}
CELLS = {
    "gru": (lambda H: rj.gru(H), 3),
    "lstm": (lambda H: rj.lstm(H), 4),
    "lstm_split": (lambda H: rj.lstm(H, gate_activation=lambda v: jax.nn.sigmoid(v)), 4),
}


def with_blocks(cell, blocks: int):
    return cell._replace(gates=cell.gates._replace(blocks=blocks))


def main(argv: list[str] | None = None) -> None:
    args, machine = common.shape_study(__doc__, SHAPES, argv, cells=",".join(CELLS))
    records = []
    for label in args.shapes.split(","):
        shape = SHAPES[label]
        x = common.time_major_inputs(shape)
        runs, meta = {}, {}
        for cell_name in args.cells.split(","):
            make, blocks = CELLS[cell_name]
            for form, n in (("blocks", blocks), ("whole", 1)):
                cell = with_blocks(make(shape.H), n)
                params = cell.init(jax.random.key(0), shape.I)
                for loop, backend in LOOPS.items():

                    def apply(p, x, cell=cell, backend=backend):
                        return rj.scan(cell, p, x, backend=backend)[1]

                    for mode, case in jax_cases(apply, params, x).items():
                        name = f"{cell_name} {loop} {form} {mode}"
                        runs[name] = case
                        meta[name] = (cell_name, loop, form, mode)
        stats = common.interleaved(runs, rounds=10, per_round=3)
        for name, (cell_name, loop, form, mode) in meta.items():
            other = "whole" if form == "blocks" else "blocks"
            pair = stats[name.replace(f" {form} ", f" {other} ")]
            blocks_s, whole_s = (
                (stats[name].median_s, pair.median_s)
                if form == "blocks"
                else (pair.median_s, stats[name].median_s)
            )
            rec = common.record(
                cell=cell_name.split("_")[0], shape=shape, dtype="float32", mode=mode,
                stats=stats[name], backend="sequential", loops=loop, form=form,
                gates=cell_name, shape_label=label,
            )  # fmt: skip
            rec["blocks_over_whole"] = blocks_s / whole_s
            records.append(rec)
            if form == "blocks":
                print(
                    f"{cell_name} {label} {loop} {mode}: blocks {blocks_s * 1e3:.2f} ms, "
                    f"whole {whole_s * 1e3:.2f} ms ({blocks_s / whole_s:.2f}x)",
                    flush=True,
                )
    print(
        f"wrote {common.write_results('gate_blocks', records, machine=machine, directory=args.out)}"
    )


if __name__ == "__main__":
    main()
