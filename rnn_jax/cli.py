"""``rnn-jax``: train, compare, predict, generate, bench and gradflow from the command line.

This module parses and prints; `rnn_jax.app` does the work. The options of
``train`` and ``compare`` are made from `RunConfig`'s fields (flag, default,
help, value type), so the command line and the config cannot drift apart.
Bad arguments and bad data end the command with one line on stderr and exit
code 2, before anything is written; outputs are written atomically once a
run is done. Warnings of rnn_jax (a damaged checkpoint passed over) are one
line too. Every command but ``bench`` compiles through JAX's persistent
cache (`rnn_jax.app.compilation_cache`: ``RNN_JAX_COMPILATION_CACHE=off``
turns it off).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import shlex
import sys
import types
import typing
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rnn_jax import app
from rnn_jax._extras import MissingExtra
from rnn_jax._validate import non_negative_int, positive_int
from rnn_jax.app import ConfigError, RunConfig, bench, exporting
from rnn_jax.app.gradient_flow import TRAINING_LR
from rnn_jax.data import DataError, get_task
from rnn_jax.diagnostics import cells_by_name
from rnn_jax.train import CheckpointError, CheckpointWarning, TrainingError

PROG = "rnn-jax"
USAGE_EXIT = 2


class UsageError(Exception):
    """A bad argument: reported in one line with exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse that reports errors in one line (no usage block) and exits with 2."""

    def error(self, message: str):
        raise UsageError(message)


def comma_list(text: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list; got {text!r}")
    return items


def key_value(text: str) -> tuple[str, Any]:
    """``KEY=VALUE``, the value read as JSON when it is JSON (``3``, ``true``), else text."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE; got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def parse_int(text: str) -> int:
    """An option's text read as an int (checked by the option's rule elsewhere)."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer; got {text!r}") from None


def parse_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number; got {text!r}") from None


def checked_int(check: Callable[[str, Any], int]) -> Callable[[str], int]:
    """An option's reader: its text as an int that ``check`` (from `rnn_jax._validate`) accepts."""

    def read(text: str) -> int:
        try:
            return check("the value", parse_int(text))
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return read


parse_positive_int = checked_int(positive_int)


PREDICT_HELP = (
    "Writes a CSV of predictions by a finished run of train --data: for classify and "
    "regress, the sequence id (the --id column, the .npz 'id', else the sequence's index) and "
    "the prediction (a class label, or a value in the target's units); for forecast, one row "
    "per step: the id, the step (0-based) and the forecast of the target horizon steps "
    "later (for one series, the step and the forecast from the window ending there)."
)
COMPARED_CELLS = ["simple", "lstm", "gru"]  # what compare trains unless --cells says
PROBED_CELLS = ["simple", "lstm", "gru", "mgu", "indrnn"]  # what gradflow measures unless told

# How the command line reads a value of each field type.
READERS = {int: parse_int, float: parse_float, str: str, list: comma_list}

# Shortcuts for common task options: ``--FLAG VALUE`` sets the task option, as
# ``--task-option OPTION=VALUE`` would. Flag: (option, reader, help).
TASK_SHORTCUTS = {
    "length": (
        "length",
        parse_positive_int,
        "sequence length T (adding, copy_memory, forecasting, text, translate; the window "
        "of a --data series)",
    ),
    "text": ("path", str, "UTF-8 text for --task text (default: the Python standard library)"),
    "max-chars": ("max_chars", parse_positive_int, "characters of text to read"),
    "horizon": ("horizon", parse_positive_int, "forecast horizon (steps ahead; also for --data)"),
    "op": ("op", str, "translate: reverse or sort"),
}


class SetOption(argparse.Action):
    """Appends ``(option, value)`` to the list in ``dest`` (the pairs of a dict field)."""

    def __init__(self, option_strings, dest, *, option: str, **kwargs):
        kwargs["default"] = argparse.SUPPRESS  # the dict field's own option sets the default
        super().__init__(option_strings, dest, **kwargs)
        self.option = option

    def __call__(self, parser, namespace, value, option_string=None):
        setattr(namespace, self.dest, [*getattr(namespace, self.dest, []), (self.option, value)])


FIELD_TYPES = typing.get_type_hints(RunConfig)
CONFIG_FIELDS = [field.name for field in dataclasses.fields(RunConfig)]


def field_type(field: dataclasses.Field) -> type:
    """The type of a `RunConfig` field's given value: ``int`` for ``int | None``, ``list``
    for ``list[str] | None``."""
    annotation = FIELD_TYPES[field.name]
    if isinstance(annotation, types.UnionType):
        (annotation,) = [t for t in typing.get_args(annotation) if t is not type(None)]
    return typing.get_origin(annotation) or annotation


def shown(value: Any) -> str:
    return "none" if value is None else str(value)


def describe(field: dataclasses.Field) -> str:
    """The help of a field's option: its help, its choices, its default."""
    text = field.metadata["help"]
    choices = field.metadata["choices"]
    if choices is not None:
        text += f": {', '.join(shown(choice) for choice in choices())}"
    if field.default is not None and field.default is not dataclasses.MISSING:
        text += f" (default {field.default})"
    return text.replace("%", "%%")


def reader(field: dataclasses.Field) -> Any:
    """How the option of ``field`` reads its text; ``none`` is None where None is a choice."""
    read = READERS[field_type(field)]
    choices = field.metadata["choices"]
    if choices is None or None not in choices():
        return read
    return lambda text: None if text == "none" else read(text)


def option_flag(field: dataclasses.Field) -> str:
    """The command-line flag of a `RunConfig` field: ``--eval-every`` for ``eval_every``."""
    return "--" + (field.metadata["flag"] or field.name).replace("_", "-")


def option_settings(field: dataclasses.Field) -> dict[str, Any]:
    """The ``add_argument`` keywords of a field's option: its type, default and help."""
    kind = field_type(field)
    if kind is bool:
        action = argparse.BooleanOptionalAction
        return {"dest": field.name, "action": action, "default": field.default}
    if kind is dict:  # KEY=VALUE pairs, gathered into the dict by config_from_args
        return {
            "dest": field.name,
            "type": key_value,
            "action": "append",
            "default": [],
            "metavar": field.metadata["metavar"] or "KEY=VALUE",
        }
    settings = {"dest": field.name, "type": reader(field), "default": field.default}
    if field.metadata["metavar"] is not None:
        settings["metavar"] = field.metadata["metavar"]
    return settings


def add_task_shortcuts(group: Any) -> None:
    for shortcut, (option, read, text) in TASK_SHORTCUTS.items():
        group.add_argument(
            f"--{shortcut}",
            dest="task_options",
            action=SetOption,
            option=option,
            metavar=option.upper(),
            type=read,
            help=text,
        )


def add_config_options(parser: argparse.ArgumentParser, names: Sequence[str]) -> None:
    """An option for each `RunConfig` field in ``names``, grouped as the fields are."""
    groups: dict[str, Any] = {}
    for field in dataclasses.fields(RunConfig):
        if field.name not in names:
            continue
        group_name = field.metadata["group"]
        if group_name not in groups:
            groups[group_name] = parser.add_argument_group(group_name)
        repeatable = " (repeatable)" if field_type(field) is dict else ""
        groups[group_name].add_argument(
            option_flag(field), help=describe(field) + repeatable, **option_settings(field)
        )
        if field.name == "task_options":
            add_task_shortcuts(groups[group_name])


def config_from_args(args: argparse.Namespace, **given: Any) -> RunConfig:
    """The checked `RunConfig` of the parsed options, with the fields in ``given`` set so."""
    values = dict(given)
    for field in dataclasses.fields(RunConfig):
        if field.name not in values and hasattr(args, field.name):
            value = getattr(args, field.name)
            values[field.name] = dict(value) if field_type(field) is dict else value
    return RunConfig(**values).check()


def progress_option() -> argparse.ArgumentParser:
    """The ``--progress`` option the training commands share."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar (default: when stderr is a terminal and tqdm is installed)",
    )
    return parent


def add_train(commands: Any) -> None:
    train = commands.add_parser(
        "train", help="train one model on a task", parents=[progress_option()]
    )
    add_config_options(train, CONFIG_FIELDS)
    train.add_argument("--checkpoint-dir", help="write checkpoints here")
    train.add_argument(
        "--checkpoint-every",
        type=parse_positive_int,
        help="steps between checkpoints (default: only at the end)",
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --checkpoint-dir exactly, from its newest intact checkpoint "
        "(a damaged newer one is reported and set aside as STEP.damaged)",
    )
    train.add_argument(
        "--out",
        help="directory for results.json and history.png (default runs/train-TASK-CELL, TASK "
        "the --data file's name where one is given)",
    )


def add_compare(commands: Any) -> None:
    compare = commands.add_parser(
        "compare",
        help="train several cells on one task: table, plot",
        parents=[progress_option()],
    )
    compare.add_argument(
        "--cells",
        type=comma_list,
        default=COMPARED_CELLS,
        help=f"comma-separated cells (default {','.join(COMPARED_CELLS)})",
    )
    add_config_options(compare, [name for name in CONFIG_FIELDS if name != "cell"])
    compare.add_argument(
        "--out", help="directory for compare.json and compare.png (default runs/compare-TASK)"
    )


def add_predict(commands: Any) -> None:
    predict = commands.add_parser(
        "predict",
        help="a finished --data run's predictions on a file, as CSV",
        description=PREDICT_HELP,
    )
    predict.add_argument(
        "--run",
        required=True,
        metavar="DIR",
        help="the run's checkpoint directory (train --checkpoint-dir)",
    )
    predict.add_argument(
        "--data",
        required=True,
        metavar="FILE",
        help="a file like the run's training file: the same feature and id columns (a target "
        "column is read only where the run forecast from the target's past)",
    )
    predict.add_argument(
        "--out", metavar="FILE", help="the CSV to write (default runs/predict-STEM.csv)"
    )


def add_generate(commands: Any) -> None:
    generate = commands.add_parser("generate", help="write text with a trained language model")
    generate.add_argument("--checkpoint-dir", required=True)
    generate.add_argument("--prompt", default="def ", help="text to start from")
    generate.add_argument(
        "--chars", type=parse_positive_int, default=400, help="characters to write"
    )
    generate.add_argument("--temperature", type=parse_float, default=0.8, help="0: greedy")
    generate.add_argument("--top-k", type=parse_positive_int, help="sample among the k likeliest")
    generate.add_argument("--seed", type=parse_int, default=0)


def add_bench(commands: Any) -> None:
    bench_parser = commands.add_parser(
        "bench", help="run the benchmark suite (benchmarks/cpu_suite.py)", add_help=False
    )
    bench_parser.add_argument("args", nargs=argparse.REMAINDER, help="passed to the suite")


def add_gradflow(commands: Any) -> None:
    gradflow = commands.add_parser("gradflow", help="||dL/dh_t|| over t for each cell")
    gradflow.add_argument(
        "--cells",
        type=comma_list,
        default=PROBED_CELLS,
        help=f"comma-separated cells (default {','.join(PROBED_CELLS)})",
    )
    add_config_options(gradflow, ["task", "task_options", "hidden", "batch", "seed"])
    gradflow.add_argument(
        "--train-steps",
        type=checked_int(non_negative_int),
        default=0,
        help="train each cell this many steps first (default: at initialisation)",
    )
    gradflow.add_argument(
        "--lr",
        type=parse_float,
        default=TRAINING_LR,
        help="learning rate for --train-steps (default %(default)s)",
    )
    gradflow.add_argument(
        "--out", help="directory for gradflow.json and gradflow.png (default runs/gradflow-TASK)"
    )


# The subcommands' parsers, in the order of the help.
SUBCOMMANDS = (
    add_train,
    add_compare,
    add_predict,
    add_generate,
    add_bench,
    add_gradflow,
    exporting.add_export_command,
)


def build_parser() -> Parser:
    parser = Parser(
        prog=PROG,
        description="Recurrent networks in JAX: train, compare, predict, generate, bench, "
        "gradflow.",
        epilog="Compiled programs are cached in ~/.cache/rnn_jax/jax (or "
        "$RNN_JAX_COMPILATION_CACHE; off turns the cache off).",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for add in SUBCOMMANDS:
        add(commands)
    return parser


def checked_out(path: str) -> Path:
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    return out


def print_results(results: dict[str, Any]) -> None:
    rows = [[name, value] for name, value in results["test"].items() if name != "loss"]
    print(
        f"{results['cell']} on {results['description']}: {results['params']:,} parameters, "
        f"{results['steps']} steps in {results['train_seconds']:.1f} s"
    )
    print(app.table(rows, ["test metric", "value"]))
    for name, values in results["baselines"].items():
        print(f"baseline {name}: {', '.join(f'{k} {v:.4g}' for k, v in values.items())}")
    if results["solved"] is not None:
        print(f"solved ({results['solved_when']}): {'yes' if results['solved'] else 'no'}")


def run_name(config: RunConfig) -> str:
    """What a run's default output directory is named after: its data file, or its task."""
    return config.task if config.data is None else Path(config.data).stem


def check_data_or_task(args: argparse.Namespace) -> None:
    """A usage error for ``--data`` beside ``--task``: the file replaces the task."""
    typed = any(word == "--task" or word.startswith("--task=") for word in args.argv)
    if args.data is not None and typed:
        raise UsageError("--data replaces --task; give one of them")


def command_train(args: argparse.Namespace) -> int:
    check_data_or_task(args)
    if args.resume and not args.checkpoint_dir:
        raise UsageError("--resume needs --checkpoint-dir")
    if args.checkpoint_every and not args.checkpoint_dir:
        raise UsageError("--checkpoint-every needs --checkpoint-dir")
    config = config_from_args(args)
    out = checked_out(args.out or f"runs/train-{run_name(config)}-{config.cell}")
    results = app.run(
        config,
        task=app.make_task(config),
        checkpoint_dir=args.checkpoint_dir,
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
        out_dir=out,
        progress=args.progress,
        command=args.command_line,
    )
    print_results(results)
    print(f"wrote {out / 'results.json'} and {out / 'history.png'}")
    if config.data is not None and not args.checkpoint_dir:
        print(f"{PROG} predict reads a run's checkpoints: train with --checkpoint-dir to keep them")
    return 0


def command_compare(args: argparse.Namespace) -> int:
    check_data_or_task(args)
    config = config_from_args(args, cell=args.cells[0])
    out = checked_out(args.out or f"runs/compare-{run_name(config)}")
    summary = app.compare(
        config,
        args.cells,
        out_dir=out,
        progress=args.progress,
        echo=lambda line: print(line, flush=True),
        command=args.command_line,
    )
    print()
    print(f"{summary['description']}: {len(args.cells)} cells in {summary['seconds']:.0f} s")
    print(summary["table"])
    print(f"wrote {out / 'compare.json'} and {out / 'compare.png'}")
    return 0


def command_predict(args: argparse.Namespace) -> int:
    out = Path(args.out or f"runs/predict-{Path(args.data).stem}.csv")
    if out.is_dir():
        raise UsageError(f"--out {out} is a directory; give the CSV file to write")
    predictions = app.predict(app.load_run(args.run), args.data)
    app.write_predictions(predictions, out)
    print(f"{len(predictions.rows)} predictions of {args.data} by the run in {args.run}")
    print(f"wrote {out} (columns {', '.join(predictions.header)})")
    return 0


def command_generate(args: argparse.Namespace) -> int:
    if args.temperature < 0:
        raise UsageError(f"--temperature must be >= 0; got {args.temperature}")
    if not args.prompt:
        raise UsageError("--prompt must hold at least one character")
    loaded = app.load_run(args.checkpoint_dir)
    text = app.generate_text(
        loaded,
        args.prompt,
        args.chars,
        temperature=args.temperature,
        top_k=args.top_k,
        seed=args.seed,
    )
    print(args.prompt + text)
    return 0


def command_bench(args: Sequence[str]) -> int:
    suite = bench.find_suite()
    if suite is None:
        raise UsageError(
            f"bench needs a source checkout (git clone, then pip install -e .): the rnn_jax in "
            f"{bench.source_root()} comes without {bench.SUITE}"
        )
    return bench.run_suite(suite, args[1:] if args[:1] == ["--"] else args)


def command_gradflow(args: argparse.Namespace) -> int:
    out = checked_out(args.out or f"runs/gradflow-{args.task}")
    try:
        cells = cells_by_name(args.cells, args.hidden)
    except ValueError as error:
        raise UsageError(str(error)) from None
    task = get_task(args.task, **dict(args.task_options))
    try:
        summary = app.gradflow(
            cells,
            task,
            batch_size=args.batch,
            seed=args.seed,
            train_steps=args.train_steps,
            lr=args.lr,
            out_dir=out,
            command=args.command_line,
        )
    except ValueError as error:  # a task the probe cannot measure
        raise UsageError(str(error)) from None
    print(f"||dL/dh_t|| {summary['when']}, {task.description} (mean over {args.batch} sequences)")
    print(summary["table"])
    print(f"wrote {out / 'gradflow.json'} and {out / 'gradflow.png'}")
    return 0


COMMANDS = {
    "train": command_train,
    "compare": command_compare,
    "predict": command_predict,
    "generate": command_generate,
    "gradflow": command_gradflow,
    "export": exporting.command_export,
}


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit code (0, 1 on a failed run, 2 on bad input)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv[:1] == ["bench"]:  # everything after "bench" belongs to the suite
            return command_bench(argv[1:])
        args = build_parser().parse_args(argv)
        args.argv = argv
        args.command_line = shlex.join([PROG, *argv])
        if args.command is None:
            names = ", ".join([*COMMANDS, "bench"])
            raise UsageError(f"choose a command: {names} (see {PROG} --help)")
        app.use_compilation_cache()
        with one_line_warnings():
            return COMMANDS[args.command](args)
    except (UsageError, DataError, ConfigError, CheckpointError, MissingExtra) as error:
        return fail(str(error), USAGE_EXIT)
    except TrainingError as error:
        return fail(str(error), 1)
    except KeyboardInterrupt:
        return fail("interrupted", 130)


@contextlib.contextmanager
def one_line_warnings():
    """rnn_jax's warnings (a damaged checkpoint passed over) in one line on stderr, as errors
    are; other warnings as Python shows them."""
    with warnings.catch_warnings():
        python_way = warnings.showwarning

        def show(message, category, *where, **options):
            if issubclass(category, CheckpointWarning):
                print(f"{PROG}: warning: {message}", file=sys.stderr)
            else:
                python_way(message, category, *where, **options)

        warnings.showwarning = show
        yield


def fail(message: str, code: int) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


def run_main() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run_main()
