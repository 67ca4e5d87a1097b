"""LSTM gate forms under the ``sequential`` kernel: one sigmoid over the ``[B, 4H]`` row
(the default, tanh g = 2 sigmoid(2g) - 1) against four split activations.

The split form is forced by a gate activation that is not ``jax.nn.sigmoid`` itself
(``lambda v: jax.nn.sigmoid(v)``), so both run the same loop, settings and parameters.
Forward and forward+backward at the CPU suite's shapes, interleaved in one process;
medians and the split / one-sigmoid ratio go to ``benchmarks/results/lstm_gates-*.json``.

    python benchmarks/lstm_gates.py [--shapes S,M,L]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import jax  # noqa: E402
from cpu_suite import SHAPES, jax_cases  # noqa: E402

import rnn_jax as rj  # noqa: E402

FORMS = {
    "one_sigmoid": {},
    "split": {"gate_activation": lambda v: jax.nn.sigmoid(v)},
}


def main(argv: list[str] | None = None) -> None:
    args, machine = common.shape_study(__doc__, SHAPES, argv)
    records = []
    for label in args.shapes.split(","):
        shape = SHAPES[label]
        x = common.time_major_inputs(shape)
        runs = {}
        for form, options in FORMS.items():
            cell = rj.lstm(shape.H, **options)
            params = cell.init(jax.random.key(0), shape.I)
            apply = lambda p, x, cell=cell: rj.scan(cell, p, x, backend="sequential")[1]
            for mode, case in jax_cases(apply, params, x).items():
                runs[(form, mode)] = case
        stats = common.interleaved(
            {f"{f} {m}": c for (f, m), c in runs.items()}, rounds=10, per_round=3
        )
        for mode in common.MODES:
            one, split = stats[f"one_sigmoid {mode}"], stats[f"split {mode}"]
            for form, st in (("one_sigmoid", one), ("split", split)):
                rec = common.record(
                    cell="lstm", shape=shape, dtype="float32", mode=mode, stats=st,
                    backend="sequential", gate_form=form, shape_label=label,
                )  # fmt: skip
                rec["split_over_one_sigmoid"] = split.median_s / one.median_s
                records.append(rec)
            print(
                f"lstm {label} {mode}: one sigmoid {one.median_s * 1e3:.2f} ms, "
                f"split {split.median_s * 1e3:.2f} ms ({split.median_s / one.median_s:.2f}x)",
                flush=True,
            )
    print(
        f"wrote {common.write_results('lstm_gates', records, machine=machine, directory=args.out)}"
    )


if __name__ == "__main__":
    main()
