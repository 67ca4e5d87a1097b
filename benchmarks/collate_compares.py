"""One results file from several ``rnn-jax compare`` runs of one task, each cell at its own size.

``rnn-jax compare`` trains every cell it is given at one ``--hidden``; to compare cells at equal
parameter counts, each runs in a comparison of its own. This collects their ``compare.json``
files into one document of the suites' schema: every run with its history, every command, the
published scores to compare with (``--reference NAME=VALUE``), and a table of each run's cell,
settings, parameters, steps, wall time and test metrics. A file this script wrote is an input
too, with its runs, commands and references, so a new run joins an earlier table without the
compare files behind it.

    python benchmarks/collate_compares.py benchmarks/results/training_copy_memory_T1000.json \\
        runs/copy/lru/compare.json runs/copy/lstm/compare.json ... \\
        --reference "LSTM (Bai et al. 2018)=0.0204"
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rnn_jax.app.records import results_document, write_json
from rnn_jax.app.tables import table

# The settings that differ between the runs of one task, shown beside each run's cell.
SETTINGS = ("hidden", "layers", "backend", "batch", "lr", "schedule", "seed")


def reference(text: str) -> tuple[str, float]:
    """``NAME=VALUE``, the value a number: one published score."""
    name, _, value = text.rpartition("=")
    try:
        number = float(value)
    except ValueError:
        number = None
    if not name.strip() or number is None:
        raise argparse.ArgumentTypeError(f"expected NAME=NUMBER; got {text!r}")
    return name.strip(), number


def check_same_task(paths: list[Path], documents: list[dict[str, Any]]) -> None:
    """A ValueError naming the first file with a run whose task or task options differ from
    those of the first file's first run."""
    first = documents[0]
    want = (first["task"], first["runs"][0]["config"]["task_options"])
    for path, document in zip(paths, documents, strict=True):
        for run in document["runs"]:
            if (document["task"], run["config"]["task_options"]) != want:
                raise ValueError(
                    f"{path} compares {document['task']} {run['config']['task_options']}; "
                    f"{paths[0]} compares {want[0]} {want[1]}"
                )


def commands_of(document: dict[str, Any]) -> list[str]:
    """The commands behind a document: a compare file's one, or a collated file's list."""
    return document.get("commands") or [document["command"]]


def options_text(config: dict[str, Any]) -> str:
    """A run's cell options and layer options as the command line gives them:
    ``r_min=0 r_max=0.5 2:r_min=0.999``."""
    options = {**config["cell_options"], **config.get("layer_options", {})}
    return " ".join(f"{key}={value}" for key, value in options.items()) or "-"


def reported_metrics(runs: list[dict[str, Any]]) -> list[str]:
    """The test metrics of ``runs`` but the loss, in the order they first appear."""
    names: list[str] = []
    for run in runs:
        names += [name for name in run["test"] if name != "loss" and name not in names]
    return names


def run_row(run: dict[str, Any], metrics: list[str]) -> list[Any]:
    config = run["config"]
    outcome = "diverged" if run.get("diverged") else run["solved"]
    return [
        run["cell"],
        *[config[name] for name in SETTINGS],
        options_text(config),
        run["params"],
        run["steps"],
        round(run["train_seconds"]),
        *[run["test"].get(name) for name in metrics],
        outcome,
    ]


def collate(paths: list[Path], references_given: dict[str, float] | None = None) -> dict[str, Any]:
    """The combined document of the compare files at ``paths`` (all of one task and options).

    ``references_given`` are published scores on the task's loss, by name; with
    those of any collated input, they are listed under the table and stored in
    the document.
    """
    if not paths:
        raise ValueError("collate needs at least one compare.json; got none")
    documents = [json.loads(path.read_text()) for path in paths]
    check_same_task(paths, documents)
    first = documents[0]
    runs = [run for document in documents for run in document["runs"]]
    metrics = reported_metrics(runs)
    header = ["cell", *SETTINGS, "cell options", "params", "steps", "train s"]
    header += [f"test {name}" for name in metrics] + ["solved?"]
    text = table([run_row(run, metrics) for run in runs], header)
    baselines = "; ".join(
        f"{name} {values[first['metric']]:.4g}"
        for name, values in first["baselines"].items()
        if first["metric"] in values
    )
    text += f"\nbaseline ({first['metric']}): {baselines or '-'}"
    if first["solved_when"]:
        text += f"; solved means test {first['solved_when']}"
    earlier = [document.get("references", {}) for document in documents]
    references = {name: value for known in earlier for name, value in known.items()}
    references.update(references_given or {})
    if references:
        shown = "; ".join(f"{name} {value:.4g}" for name, value in references.items())
        text += f"\npublished ({first['metric']}): {shown}"
    commands = [command for document in documents for command in commands_of(document)]
    return results_document(
        f"training-compare-{first['task']}",
        "; ".join(commands),
        task=first["task"],
        description=first["description"],
        metric=first["metric"],
        baselines=first["baselines"],
        references=references,
        solved_when=first["solved_when"],
        commands=commands,
        table=text,
        seconds=round(sum(document["seconds"] for document in documents), 1),
        runs=runs,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the results file to write")
    parser.add_argument("compares", type=Path, nargs="+", help="compare.json files")
    parser.add_argument(
        "--reference",
        type=reference,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a published score on the task's loss (repeatable)",
    )
    args = parser.parse_args(argv)
    document = collate(args.compares, dict(args.reference))
    write_json(args.out, document)
    print(document["table"])


if __name__ == "__main__":
    sys.exit(main())
