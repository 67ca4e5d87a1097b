"""``rnn-jax``: train, compare, generate, bench and gradflow from the command line.

Bad arguments and bad data end the command with one line on stderr and exit
code 2, before anything is written; outputs are written atomically once a
run is done.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

PROG = "rnn-jax"
USAGE_EXIT = 2


class UsageError(Exception):
    """A bad argument: reported in one line with exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse that reports errors in one line (no usage block) and exits with 2."""

    def error(self, message: str):
        raise UsageError(message)


def _csv(text: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return items


def _key_value(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE; got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}")
    return value


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number; got {text!r}") from None


# Flags that become task options, and the option each one sets.
TASK_FLAGS = {
    "length": "length",
    "text": "path",
    "horizon": "horizon",
    "op": "op",
    "max_chars": "max_chars",
}


def _task_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("task")
    group.add_argument(
        "--task",
        default="adding",
        help="adding, copy_memory, digits, mackey_glass, sunspots, text, translate",
    )
    group.add_argument(
        "--length",
        type=_positive_int,
        help="sequence length T (adding, copy_memory, forecasting, text, translate)",
    )
    group.add_argument(
        "--text",
        metavar="FILE",
        help="UTF-8 text for --task text (default: the Python standard library)",
    )
    group.add_argument("--max-chars", type=_positive_int, help="characters of text to read")
    group.add_argument("--horizon", type=_positive_int, help="forecast horizon (steps ahead)")
    group.add_argument("--op", choices=["reverse", "sort"], help="translate: reverse or sort")
    group.add_argument(
        "--task-option",
        type=_key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other task option (repeatable)",
    )


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--hidden", type=_positive_int, default=64, help="units per layer")
    group.add_argument("--layers", type=_positive_int, default=1, help="stacked layers")
    group.add_argument("--embed", type=_positive_int, default=32, help="embedding size (tokens)")
    group.add_argument("--bidirectional", action="store_true", help="bidirectional layers")
    group.add_argument("--dropout", type=_float, default=0.0, help="dropout between layers")
    group.add_argument("--backend", default="auto", help="scan backend (rj.backend_names())")
    group.add_argument(
        "--attention",
        default="additive",
        choices=["additive", "multiplicative", "none"],
        help="seq2seq attention",
    )
    group.add_argument(
        "--cell-option",
        type=_key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="cell factory option (repeatable)",
    )


def _training_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("training")
    group.add_argument("--optimizer", default="adam", help="adam, adamw, rmsprop, sgd")
    group.add_argument("--lr", type=_float, default=1e-3, help="peak learning rate")
    group.add_argument(
        "--schedule", default="constant", help="constant, cosine, linear, exponential"
    )
    group.add_argument("--warmup", type=int, default=0, help="linear warmup steps")
    group.add_argument(
        "--clip", type=_float, default=1.0, help="clip gradients to this global norm (0: off)"
    )
    group.add_argument("--weight-decay", type=_float, default=0.0)
    group.add_argument("--batch", type=_positive_int, default=64, help="sequences per step")
    group.add_argument("--steps", type=_positive_int, help="updates (default 1000)")
    group.add_argument("--epochs", type=_float, help="epochs instead of --steps")
    group.add_argument("--eval-every", type=_positive_int, help="steps between validations")
    group.add_argument(
        "--patience", type=_positive_int, help="early stopping: validations without improvement"
    )
    group.add_argument("--seed", type=int, default=0)
    bar = group.add_mutually_exclusive_group()
    bar.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help="show a progress bar (default: when stderr is a terminal)",
    )
    bar.add_argument("--no-progress", dest="progress", action="store_false")


def build_parser() -> Parser:
    parser = Parser(
        prog=PROG,
        description="Recurrent networks in JAX: train, compare, generate, bench, gradflow.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    train = commands.add_parser("train", help="train one model on a task")
    _task_arguments(train)
    train.add_argument("--cell", default="lstm", help="cell (rnn_jax.train.available_cells())")
    _model_arguments(train)
    _training_arguments(train)
    train.add_argument("--checkpoint-dir", help="write checkpoints here")
    train.add_argument(
        "--checkpoint-every",
        type=_positive_int,
        help="steps between checkpoints (default: only at the end)",
    )
    train.add_argument(
        "--resume", action="store_true", help="continue the run in --checkpoint-dir exactly"
    )
    train.add_argument(
        "--out", help="directory for results.json and history.png (default runs/train-TASK-CELL)"
    )

    compare = commands.add_parser("compare", help="train several cells on one task: table, plot")
    _task_arguments(compare)
    compare.add_argument(
        "--cells",
        type=_csv,
        default=["simple", "lstm", "gru"],
        help="comma-separated cells (default simple,lstm,gru)",
    )
    _model_arguments(compare)
    _training_arguments(compare)
    compare.add_argument(
        "--out", help="directory for compare.json and compare.png (default runs/compare-TASK)"
    )

    generate = commands.add_parser("generate", help="write text with a trained language model")
    generate.add_argument("--checkpoint-dir", required=True)
    generate.add_argument("--prompt", default="def ", help="text to start from")
    generate.add_argument("--chars", type=_positive_int, default=400, help="characters to write")
    generate.add_argument("--temperature", type=_float, default=0.8, help="0: greedy")
    generate.add_argument("--top-k", type=_positive_int, help="sample among the k likeliest")
    generate.add_argument("--seed", type=int, default=0)

    bench = commands.add_parser(
        "bench", help="run the benchmark suite (benchmarks/cpu_suite.py)", add_help=False
    )
    bench.add_argument("args", nargs=argparse.REMAINDER, help="passed to the suite")

    gradflow = commands.add_parser("gradflow", help="||dL/dh_t|| over t for each cell")
    _task_arguments(gradflow)
    gradflow.add_argument("--cells", type=_csv, default=["simple", "lstm", "gru", "mgu", "indrnn"])
    gradflow.add_argument("--hidden", type=_positive_int, default=64)
    gradflow.add_argument("--batch", type=_positive_int, default=64)
    gradflow.add_argument("--seed", type=int, default=0)
    gradflow.add_argument(
        "--train-steps",
        type=int,
        default=0,
        help="train each cell this many steps first (default: at initialisation)",
    )
    gradflow.add_argument("--lr", type=_float, default=1e-2, help="learning rate for --train-steps")
    gradflow.add_argument(
        "--out", help="directory for gradflow.json and gradflow.png (default runs/gradflow-TASK)"
    )
    return parser


def _task_options(args: argparse.Namespace) -> dict[str, Any]:
    options = dict(args.task_option)
    for flag, option in TASK_FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            options[option] = value
    return options


def _run_config(args: argparse.Namespace, cell: str):
    from rnn_jax.train import RunConfig

    return RunConfig(
        task=args.task,
        task_options=_task_options(args),
        cell=cell,
        cell_options=dict(args.cell_option),
        hidden=args.hidden,
        layers=args.layers,
        embed=args.embed,
        bidirectional=args.bidirectional,
        dropout=args.dropout,
        backend=args.backend,
        attention=None if args.attention == "none" else args.attention,
        optimizer=args.optimizer,
        lr=args.lr,
        schedule=args.schedule,
        warmup=args.warmup,
        clip=args.clip,
        weight_decay=args.weight_decay,
        batch=args.batch,
        steps=args.steps,
        epochs=args.epochs,
        eval_every=args.eval_every,
        patience=args.patience,
        seed=args.seed,
    ).check()


def _check_out(path: str) -> Path:
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    return out


def _print_results(results: dict[str, Any]) -> None:
    from rnn_jax.train import table

    rows = [[name, value] for name, value in results["test"].items() if name != "loss"]
    print(
        f"{results['cell']} on {results['description']}: {results['params']:,} parameters, "
        f"{results['steps']} steps in {results['train_seconds']:.1f} s"
    )
    print(table(rows, ["test metric", "value"]))
    for name, values in results["baselines"].items():
        shown = ", ".join(f"{k} {v:.4g}" for k, v in values.items())
        print(f"baseline {name}: {shown}")
    if results["solved"] is not None:
        print(f"solved ({results['solved_when']}): {'yes' if results['solved'] else 'no'}")


def command_train(args: argparse.Namespace) -> int:
    from rnn_jax.train import make_task, run

    if args.resume and not args.checkpoint_dir:
        raise UsageError("--resume needs --checkpoint-dir")
    if args.checkpoint_every and not args.checkpoint_dir:
        raise UsageError("--checkpoint-every needs --checkpoint-dir")
    config = _run_config(args, args.cell)
    out = _check_out(args.out or f"runs/train-{config.task}-{config.cell}")
    task = make_task(config)
    results = run(
        config,
        task=task,
        checkpoint_dir=args.checkpoint_dir,
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
        out_dir=out,
        progress=args.progress,
        command=args.command_line,
    )
    _print_results(results)
    print(f"wrote {out / 'results.json'} and {out / 'history.png'}")
    return 0


def command_compare(args: argparse.Namespace) -> int:
    from rnn_jax.train import compare

    configs = [_run_config(args, cell) for cell in args.cells]
    out = _check_out(args.out or f"runs/compare-{args.task}")
    summary = compare(
        configs[0],
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


def command_generate(args: argparse.Namespace) -> int:
    import jax
    import jax.numpy as jnp

    from rnn_jax.data import decode, encode
    from rnn_jax.models import sample
    from rnn_jax.train import Checkpointer, CheckpointError, RunConfig, make_model

    if not Path(args.checkpoint_dir).is_dir():
        raise UsageError(f"--checkpoint-dir {args.checkpoint_dir} is not a directory")
    if args.temperature < 0:
        raise UsageError(f"--temperature must be >= 0; got {args.temperature}")
    if not args.prompt:
        raise UsageError("--prompt must hold at least one character")
    checkpointer = Checkpointer(args.checkpoint_dir)
    meta = checkpointer.read_meta()
    info = meta.get("task_info") or {}
    if info.get("kind") != "language_model" or not info.get("vocab"):
        raise CheckpointError(
            f"the checkpoint in {args.checkpoint_dir} holds a {info.get('kind', 'unknown')} model; "
            "generate needs a language model (train --task text)"
        )
    config = RunConfig.from_dict(meta["config"])
    model = make_model(config, info)
    params = checkpointer.restore("params", model.init(jax.random.key(0)))
    prompt = jnp.asarray(encode(args.prompt, info["vocab"]))
    write = jax.jit(
        lambda p, k, x: sample(
            model, p, k, x, args.chars, temperature=args.temperature, top_k=args.top_k
        )
    )
    tokens = write(params, jax.random.key(args.seed), prompt)
    print(args.prompt + decode(tokens, info["vocab"]))
    return 0


def find_suite() -> Path:
    """``benchmarks/cpu_suite.py`` of the source checkout this package runs from."""
    import rnn_jax

    root = Path(rnn_jax.__file__).resolve().parents[1]
    return root / "benchmarks" / "cpu_suite.py"


def command_bench(args: argparse.Namespace) -> int:
    suite = find_suite()
    if not suite.is_file():
        raise UsageError(
            f"bench runs the benchmark suite {suite}, which is not there; it comes with a source "
            "checkout (git clone, then pip install -e .)"
        )
    passthrough = [a for a in args.args if a != "--"] if args.args[:1] == ["--"] else args.args
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(suite.parents[1]), env.get("PYTHONPATH")])
    )
    return subprocess.call(
        [sys.executable, str(suite), *passthrough], cwd=suite.parents[1], env=env
    )


def command_gradflow(args: argparse.Namespace) -> int:
    from rnn_jax import diagnostics
    from rnn_jax.data import get_task

    out = _check_out(args.out or f"runs/gradflow-{args.task}")
    try:
        cells = diagnostics.cells_by_name(args.cells, args.hidden)
    except ValueError as error:
        raise UsageError(str(error)) from None
    task = get_task(args.task, **_task_options(args))
    try:
        summary = diagnostics.report(
            cells,
            task,
            batch_size=args.batch,
            seed=args.seed,
            train_steps=args.train_steps,
            lr=args.lr,
            out_dir=out,
            command=args.command_line,
        )
    except ValueError as error:
        raise UsageError(str(error)) from None
    print(f"||dL/dh_t|| {summary['when']}, {task.description} (mean over {args.batch} sequences)")
    print(summary["table"])
    print(f"wrote {out / 'gradflow.json'} and {out / 'gradflow.png'}")
    return 0


COMMANDS = {
    "train": command_train,
    "compare": command_compare,
    "generate": command_generate,
    "bench": command_bench,
    "gradflow": command_gradflow,
}


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit code (0, 1 on a failed run, 2 on bad input)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    try:
        if argv[:1] == ["bench"]:  # everything after "bench" belongs to the suite
            return command_bench(argparse.Namespace(args=argv[1:]))
        args = parser.parse_args(argv)
        args.command_line = shlex.join([PROG, *argv])
        if args.command is None:
            raise UsageError(f"choose a command: {', '.join(COMMANDS)} (see {PROG} --help)")
        return COMMANDS[args.command](args)
    except UsageError as error:
        return _fail(str(error), USAGE_EXIT)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Exception as error:  # noqa: BLE001 - the known failures become one line
        from rnn_jax.data import DataError
        from rnn_jax.train import CheckpointError, ConfigError, TrainingError

        if isinstance(error, DataError | ConfigError | CheckpointError):
            return _fail(str(error), USAGE_EXIT)
        if isinstance(error, TrainingError):
            return _fail(str(error), 1)
        raise


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


def run_main() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run_main()
