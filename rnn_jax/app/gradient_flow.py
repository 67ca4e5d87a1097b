"""The gradient-flow report (``rnn-jax gradflow``): ``||dL/dh_t||`` over ``t`` for several cells.

`rj.diagnostics` measures; this tabulates the norms, plots them and writes
them in the results schema.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rnn_jax.app.plots import check_plotting, plot_curves
from rnn_jax.app.records import results_document, write_json
from rnn_jax.app.tables import table
from rnn_jax.cells import Cell
from rnn_jax.data import Task
from rnn_jax.diagnostics import gradient_norms, train_probed

TRAINING_LR = 1e-2  # Adam's learning rate when the cells are trained before measuring


def gradflow(
    cells: dict[str, Cell],
    task: Task,
    *,
    batch_size: int = 64,
    seed: int = 0,
    train_steps: int = 0,
    lr: float = TRAINING_LR,
    out_dir: str | Path | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Gradient norms for several cells on one task: a table, and with ``out_dir`` a plot and JSON.

    The table shows ``||dL/dh_t||`` at a few ``t`` and ``log10`` of the ratio
    between the first and the last step: strongly negative is vanishing,
    positive exploding. At initialisation, or after ``train_steps`` of Adam
    at learning rate ``lr`` (`rj.diagnostics.train_probed`). ``norms`` in the
    summary are ``[T]`` per cell.

    Example:
        >>> summary = rj.app.gradflow({"simple": rj.simple(8)}, rj.data.adding(length=20),
        ...                           batch_size=4)
        >>> summary["when"], len(summary["norms"]["simple"])
        ('at initialisation', 20)
    """
    if out_dir is not None:
        check_plotting()
    norms = {}
    for name, cell in cells.items():
        params = None
        if train_steps:
            params = train_probed(cell, task, train_steps, batch_size=batch_size, seed=seed, lr=lr)
        norms[name] = gradient_norms(cell, task, batch_size=batch_size, seed=seed, params=params)
    when = f"after {train_steps} training steps" if train_steps else "at initialisation"
    steps = len(next(iter(norms.values())))
    marks = sorted({1, max(1, steps // 4), max(1, steps // 2), max(1, 3 * steps // 4), steps})
    rows = []
    for name, values in norms.items():
        ratio = float(np.log10(max(values[0], 1e-300) / max(values[-1], 1e-300)))
        rows.append([name, *[float(values[t - 1]) for t in marks], ratio])
    header = ["cell", *[f"t={t}" for t in marks], "log10(first/last)"]
    text = table(rows, header)
    summary = {
        "task": task.name,
        "description": task.description,
        "batch_size": batch_size,
        "seed": seed,
        "train_steps": train_steps,
        "when": when,
        "table": text,
        "norms": {name: values.tolist() for name, values in norms.items()},
    }
    if out_dir is not None:
        out = Path(out_dir)
        document = results_document(f"gradflow-{task.name}", command, **summary)
        write_json(out / "gradflow.json", document)
        curves = {
            name: (list(range(1, steps + 1)), values.tolist()) for name, values in norms.items()
        }
        plot_curves(
            curves,
            out / "gradflow.png",
            title=f"||dL/dh_t|| {when}, {task.description}",
            xlabel="t",
            ylabel="||dL/dh_t||",
        )
    return summary
