"""Cell-variant report: every registered cell on the same tasks, with the same budget.

Each cell of ``rnn_jax/cells/registry.py`` (the multi-head cells with 2
heads) is trained by ``rj.app.compare`` on two small tasks with one
`RunConfig` (units, batch, optimizer, learning rate, steps, seed): the adding
problem and copy memory. Each cell's layer (``rj.rnn(cell)``, ``backend="auto"``)
is then timed on one batch, forward and forward+backward (the gradient, with
respect to the parameters and the inputs, of the mean squared error against a
fixed target: ``common.training_loss``, as every suite times a backward pass),
all cells interleaved, medians after compilation. Writes into
``benchmarks/results/``:

- ``cell_report.md``: the table (parameters, time per step, the best
  validation metric and the test metric of each task) and the plots;
- ``cell_report_<task>.png``: validation curves of every cell, per task;
- ``cell_report_time.png``: time per step of every cell;
- ``cell_report-<platform>-<time>.json``: the results schema (machine,
  versions, timing records) with every run's results and history.

    python benchmarks/cell_report.py               # the report (a few minutes on 2 cores)
    python benchmarks/cell_report.py --cells lstm,gru --steps 100

The timing comes first, on a quiet machine: the script refuses to time where
the 1-minute load average is over half the cores it may use (``--force``
times anyway, and the report states the load).

The budget is small and one learning rate serves every cell, so the metrics
rank cells on this budget only, not at their best.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import jax  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import rnn_jax as rj  # noqa: E402
from rnn_jax.app.plots import plot_curves, save_figure  # noqa: E402

# Factory options a registered cell needs beyond its size.
CELL_OPTIONS = {
    "multihead_simple": {"num_heads": 2},
    "multihead_lstm": {"num_heads": 2},
    "multihead_gru": {"num_heads": 2},
}
# task: (its options, the metric reported, whether larger is better)
TASKS = {
    "adding": ({"length": 32}, "mse", False),
    "copy_memory": ({"length": 8, "memorize": 4}, "nonblank_accuracy", True),
}
CONFIG = rj.app.RunConfig(hidden=32, batch=32, lr=1e-2, steps=300, eval_every=25)
TIMED = common.Shape(B=32, T=64, I=16, H=CONFIG.hidden)


def train_all(cells: list[str], config: rj.app.RunConfig) -> dict[str, dict[str, Any]]:
    """``task -> {description, baselines, solved_when, runs: {cell: results}}`` from
    ``rj.app.compare``, one comparison per set of cell options."""
    groups: dict[tuple, list[str]] = {}
    for cell in cells:
        groups.setdefault(tuple(sorted(CELL_OPTIONS.get(cell, {}).items())), []).append(cell)
    trained = {}
    for task, (task_options, _, _) in TASKS.items():
        runs = {}
        for options, group in groups.items():
            settings = dataclasses.replace(
                config, task=task, task_options=task_options, cell_options=dict(options)
            )
            summary = rj.app.compare(settings, group, progress=False, echo=print)
            runs.update({r["cell"]: r for r in summary["runs"]})
        trained[task] = {
            "options": task_options,
            **{key: summary[key] for key in ("description", "baselines", "solved_when")},
            "runs": {cell: runs[cell] for cell in cells},
        }
    return trained


def best_validation(results: dict[str, Any], metric: str, larger: bool) -> tuple[float, int] | None:
    """The best ``metric`` over the run's validations, and its step; None if it never validated."""
    scored = [
        (v[metric], v["step"]) for v in results["history"]["val"] if v.get(metric) is not None
    ]
    if not scored:
        return None
    return (max if larger else min)(scored, key=lambda pair: pair[0])


def timing_cases(cells: list[str]) -> dict[tuple[str, str], Any]:
    """``(cell, mode) -> a blocking call``: each cell's layer on the ``TIMED`` batch."""
    xs = jax.random.normal(jax.random.key(0), (TIMED.T, TIMED.B, TIMED.I))
    cases = {}
    for name in cells:
        layer = rj.rnn(rj.cells.get_cell(name, TIMED.H, **CELL_OPTIONS.get(name, {})))
        params = layer.init(jax.random.key(1), TIMED.I)
        outputs = lambda p, x, layer=layer: layer.apply(p, x)[1]
        loss = common.training_loss(outputs, params, xs)
        cases[name, "forward"] = common.blocking(jax.jit(outputs), params, xs)
        backward = jax.jit(jax.grad(loss, argnums=(0, 1)))
        cases[name, "forward_backward"] = common.blocking(backward, params, xs)
    return cases


def time_all(cells: list[str]) -> list[dict[str, Any]]:
    """Timing records of every cell and mode, interleaved."""
    cases = timing_cases(cells)
    stats = common.interleaved(cases, rounds=8, per_round=3, warmup=2)
    return [
        common.record(
            cell=name,
            backend="auto",
            shape=TIMED,
            dtype="float32",
            mode=mode,
            stats=stats[name, mode],
            per_step_us=stats[name, mode].median_s / TIMED.T * 1e6,
        )
        for name, mode in cases
    ]


def plot_validation(trained: dict[str, Any], task: str, metric: str, path: Path) -> None:
    """Validation ``metric`` by step, one line per cell, the task's baselines dashed."""
    curves = {
        cell: ([v["step"] for v in r["history"]["val"]], [v[metric] for v in r["history"]["val"]])
        for cell, r in trained["runs"].items()
        if r["history"]["val"]
    }
    baselines = {
        name: values[metric] for name, values in trained["baselines"].items() if metric in values
    }
    plot_curves(
        curves,
        path,
        title=f"{trained['description']}: every cell on one budget",
        ylabel=f"validation {metric}",
        baselines=baselines,
        log_y=metric == "mse",
    )


def plot_times(records: list[dict[str, Any]], path: Path) -> None:
    cells = list(dict.fromkeys(r["cell"] for r in records))
    figure = Figure(figsize=(7, 0.32 * len(cells) + 1.2), dpi=110)
    axes = figure.add_subplot()
    for offset, mode in ((-0.2, "forward"), (0.2, "forward_backward")):
        per_step = {r["cell"]: r["per_step_us"] for r in records if r["mode"] == mode}
        axes.barh(
            [i + offset for i in range(len(cells))],
            [per_step[c] for c in cells],
            0.4,
            label=mode.replace("_", "+"),
        )
    axes.set_yticks(range(len(cells)), cells)
    axes.invert_yaxis()
    axes.set_xscale("log")
    axes.set_xlabel(f"µs per time step (B={TIMED.B}, T={TIMED.T}, I={TIMED.I}, H={TIMED.H})")
    axes.grid(True, axis="x", alpha=0.3)
    axes.legend(fontsize="small")
    save_figure(figure, path)


def metric_text(results: dict[str, Any], metric: str, larger: bool) -> tuple[str, str]:
    """The best validation value (at its step) and the test value of one run, as text."""
    if "diverged" in results:
        return f"diverged at step {results['steps']}", "-"
    best = best_validation(results, metric, larger)
    best_text = "-" if best is None else f"{best[0]:.4g} (step {best[1]})"
    return best_text, f"{results['test'][metric]:.4g}"


def report(
    config: rj.app.RunConfig,
    cells: list[str],
    trained: dict[str, dict[str, Any]],
    records: list[dict[str, Any]],
    *,
    machine: dict[str, Any],
    command: str,
    seconds: float,
    json_name: str,
) -> str:
    """The markdown report: how it was made, the table, the plots."""
    per_step = {(r["cell"], r["mode"]): r["per_step_us"] for r in records}
    header = ["cell", "params (adding / copy)", "forward µs/step", "forward+backward µs/step"]
    for task, (_, metric, _) in TASKS.items():
        header += [f"{task}: best val {metric}", f"{task}: test {metric}"]
    rows = []
    for cell in cells:
        params = " / ".join(f"{trained[task]['runs'][cell]['params']:,}" for task in TASKS)
        row = [cell, params, per_step[cell, "forward"], per_step[cell, "forward_backward"]]
        for task, (_, metric, larger) in TASKS.items():
            row += metric_text(trained[task]["runs"][cell], metric, larger)
        rows.append(row)
    task_lines = []
    for task, (options, metric, _) in TASKS.items():
        baselines = "; ".join(
            f"{name} {values[metric]:.4g}"
            for name, values in trained[task]["baselines"].items()
            if metric in values
        )
        task_lines.append(
            f"- `{task}` ({trained[task]['description']}; options {options}): {metric}, "
            f"baseline {baselines or '-'}, solved when {trained[task]['solved_when'] or '-'}."
        )
    settings = {
        k: getattr(config, k)
        for k in ("hidden", "batch", "optimizer", "lr", "clip", "steps", "eval_every", "seed")
    }
    options = ", ".join(f"`{c}` {o}" for c, o in CELL_OPTIONS.items() if c in cells)
    return "\n".join(
        [
            "# Cell-variant report",
            "",
            f"Every registered cell on the same tasks with the same budget, written by "
            f"`{command}` on {time.strftime('%Y-%m-%d', time.gmtime())} in {seconds:.0f} s: "
            f"{machine['cpu']}, {machine['cores']} cores, 1-minute load average "
            f"{machine['load_average_1min']} before timing (the script refuses to time above "
            f"{common.QUIET_LOAD_PER_CORE} per core). Every number is in `{json_name}` beside "
            "this file.",
            "",
            "Training: `rj.app.compare` with one `RunConfig` for every cell "
            f"({', '.join(f'{k}={v}' for k, v in settings.items())}; cell options: "
            f"{options or 'none'}). The best validation value is the best of the run's "
            "validations on the task's validation split; the test value is the final "
            "parameters' on its test split.",
            "",
            *task_lines,
            "",
            f'Time per step: each cell\'s `rj.rnn(cell)` layer (`backend="auto"`) on one batch '
            f"B={TIMED.B}, T={TIMED.T}, I={TIMED.I}, H={TIMED.H}, float32; forward, and "
            "forward+backward (the gradient with respect to the parameters and the inputs of "
            "the mean squared error against a fixed target, `benchmarks/common.py`'s "
            "`training_loss`); the median after compilation, every case interleaved, divided "
            "by T.",
            "",
            "One learning rate and a few hundred steps rank the cells on this budget only: "
            "a cell that is slow to start (or needs another learning rate) may do better "
            "with more.",
            "",
            common.markdown_table(header, rows),
            "",
            *[f"![{task}](cell_report_{task}.png)\n" for task in TASKS],
            "![time per step](cell_report_time.png)",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cells",
        default=",".join(rj.cells.cell_names()),
        help="comma-separated registered cells (default: all)",
    )
    parser.add_argument("--steps", type=int, default=CONFIG.steps, help="updates per run")
    parser.add_argument("--force", action="store_true", help="time even on a busy machine")
    args = parser.parse_args(argv)
    cells = [c for c in args.cells.split(",") if c]
    unknown = sorted(set(cells) - set(rj.cells.cell_names()))
    if unknown:
        parser.error(f"unknown cells {unknown}; choose from {rj.cells.cell_names()}")
    started = time.perf_counter()
    common.require_quiet(args.force)
    machine = common.machine_info()
    # Timed first: the training runs would raise the load average the check reads.
    records = time_all(cells)
    config = dataclasses.replace(CONFIG, steps=args.steps)
    trained = train_all(cells, config)
    seconds = time.perf_counter() - started
    command = " ".join(["python", "benchmarks/cell_report.py", *(argv or sys.argv[1:])])
    path = common.write_results(
        "cell_report",
        records,
        machine=machine,
        command=command,
        wall_s=round(seconds, 1),
        config=config.to_dict(),
        trained=json.loads(json.dumps(trained, default=float)),  # numpy scalars as numbers
    )
    for task, (_, metric, _) in TASKS.items():
        plot_validation(trained[task], task, metric, common.RESULTS_DIR / f"cell_report_{task}.png")
    plot_times(records, common.RESULTS_DIR / "cell_report_time.png")
    text = report(
        config,
        cells,
        trained,
        records,
        machine=machine,
        command=command,
        seconds=seconds,
        json_name=path.name,
    )
    (common.RESULTS_DIR / "cell_report.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
