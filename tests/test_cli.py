"""The rnn-jax command line: each command end to end, and bad input as one line with exit code 2."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from rnn_jax import app, cli
from rnn_jax.app import RunConfig

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import first_minutes  # noqa: E402  (the compare run twice on one compilation cache)

TINY = ["--hidden", "8", "--batch", "16", "--steps", "20", "--no-progress"]


def fails_cleanly(capsys, argv, message, tmp_path=None):
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rnn-jax: error: "), err
    assert message in lines[0], lines[0]
    if tmp_path is not None:
        assert not (tmp_path / "out").exists() and not (tmp_path / "ckpt").exists()


def parsed(argv):
    return cli.build_parser().parse_args(argv)


@pytest.mark.parametrize("command", ["train", "compare"])
def test_the_options_are_the_run_config_fields_with_their_defaults(command):
    args = parsed([command])
    cell = {"cell": args.cells[0]} if command == "compare" else {}
    assert cli.config_from_args(args, **cell) == RunConfig(**cell)
    names = {field.name for field in dataclasses.fields(RunConfig)}
    assert names - set(cell) <= set(vars(args))


def test_every_field_is_an_option_with_its_help():
    parser = cli.build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, cli.argparse._SubParsersAction)]
    train = commands.choices["train"]
    options = {flag: action for action in train._actions for flag in action.option_strings}
    for field in dataclasses.fields(RunConfig):
        action = options[cli.option_flag(field)]
        assert action.dest == field.name and field.metadata["help"] in action.help
    assert "--no-bidirectional" in options


def test_every_option_reaches_its_field():
    argv = (
        "train --task translate --task-option symbols=5 --length 12 --op sort --data walks.csv "
        "--target label --id walk --features x,noise --objective classify --cell gru "
        "--cell-option reset_after=false --layer-option 2:reset_after=true --hidden 12 "
        "--layers 2 --embed 8 --bidirectional "
        "--dropout 0.1 --backend sequential --attention none --optimizer sgd --lr 0.5 "
        "--schedule cosine --warmup 2 --clip 0 --weight-decay 0.01 --batch 3 --steps 7 "
        "--epochs 1.5 --eval-every 2 --patience 3 --seed 9 --mesh data=1"
    )
    expected = RunConfig(
        task="translate",
        task_options={"symbols": 5, "length": 12, "op": "sort"},
        data="walks.csv",
        target="label",
        id_column="walk",
        features=["x", "noise"],
        objective="classify",
        cell="gru",
        cell_options={"reset_after": False},
        layer_options={"2:reset_after": True},
        hidden=12,
        layers=2,
        embed=8,
        bidirectional=True,
        dropout=0.1,
        backend="sequential",
        attention=None,
        optimizer="sgd",
        lr=0.5,
        schedule="cosine",
        warmup=2,
        clip=0.0,
        weight_decay=0.01,
        batch=3,
        steps=7,
        epochs=1.5,
        eval_every=2,
        patience=3,
        seed=9,
        mesh="data=1",
    )
    assert cli.config_from_args(parsed(argv.split())) == expected
    unchanged = [
        f.name
        for f in dataclasses.fields(RunConfig)
        if getattr(expected, f.name)
        == (f.default_factory() if f.default is dataclasses.MISSING else f.default)
    ]
    assert not unchanged, f"give these fields a value other than their default here: {unchanged}"


def test_a_task_shortcut_overrides_an_earlier_task_option():
    args = parsed(["train", "--task-option", "length=5", "--length", "7"])
    assert cli.config_from_args(args).task_options == {"length": 7}


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("def add(a, b):\n    return a + b\n\n" * 120, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "choose a command"),
        (["fly"], "invalid choice"),
        (["train", "--cell", "nope"], "cell must be one of"),
        (["train", "--hidden", "0"], "hidden must be a positive int; got 0"),
        (["train", "--checkpoint-every", "0"], "the value must be a positive int; got 0"),
        (["train", "--lr", "fast"], "expected a number"),
        (["train", "--task", "nope"], "task must be one of"),
        (["train", "--task", "digits", "--length", "9"], "unknown ['length']"),
        (["train", "--optimizer", "adagrad"], "optimizer must be one of"),
        (["train", "--resume"], "--resume needs --checkpoint-dir"),
        (["train", "--backend", "warp"], "backend must be"),
        (["compare", "--cells", "lstm,nope"], "cell must be one of"),
        (["gradflow", "--task", "text"], "float inputs"),
        (["generate", "--checkpoint-dir", "/does/not/exist"], "is not a directory"),
    ],
)
def test_bad_arguments_end_in_one_line_and_exit_2(capsys, tmp_path, argv, message):
    fails_cleanly(
        capsys,
        [*argv, "--out", str(tmp_path / "out")] if argv[:1] in (["train"], ["compare"]) else argv,
        message,
        tmp_path,
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        (b"", "is empty"),
        (b"caf\xe9\xff", "not UTF-8"),
        (b"too short", "need at least"),
    ],
)
def test_bad_text_ends_in_one_line_and_writes_nothing(capsys, tmp_path, content, message):
    path = tmp_path / "in.txt"
    if content is not None:
        path.write_bytes(content)
    argv = [
        "train",
        "--task",
        "text",
        "--text",
        str(path),
        "--length",
        "50",
        "--checkpoint-dir",
        str(tmp_path / "ckpt"),
        "--out",
        str(tmp_path / "out"),
    ]
    fails_cleanly(capsys, argv, message, tmp_path)


def test_train_then_generate_from_the_checkpoint(capsys, tmp_path, text_file):
    out, ckpt = tmp_path / "out", tmp_path / "ckpt"
    argv = [
        "train",
        "--task",
        "text",
        "--text",
        str(text_file),
        "--length",
        "16",
        "--cell",
        "gru",
        *TINY,
        "--lr",
        "0.01",
        "--checkpoint-dir",
        str(ckpt),
        "--out",
        str(out),
    ]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "bits_per_char" in printed and "baseline unigram" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["steps"] == 20 and results["test"]["bits_per_char"] > 0
    assert (out / "history.png").read_bytes()[:4] == b"\x89PNG"

    assert (
        cli.main(
            [
                "generate",
                "--checkpoint-dir",
                str(ckpt),
                "--prompt",
                "def ",
                "--chars",
                "30",
                "--top-k",
                "3",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert text.startswith("def ") and len(text.rstrip("\n")) >= 34

    fails_cleanly(capsys, ["generate", "--checkpoint-dir", str(ckpt), "--prompt", "é"], "never saw")
    fails_cleanly(capsys, argv + ["--resume", "--hidden", "12"], "hidden: 8 there, 12 here")
    fails_cleanly(capsys, argv, "already holds a checkpoint")


def test_generate_needs_a_language_model(capsys, tmp_path):
    ckpt = tmp_path / "ckpt"
    argv = [
        "train",
        "--task",
        "adding",
        "--length",
        "10",
        *TINY,
        "--checkpoint-dir",
        str(ckpt),
        "--out",
        str(tmp_path / "out"),
    ]
    assert cli.main(argv) == 0
    capsys.readouterr()
    fails_cleanly(capsys, ["generate", "--checkpoint-dir", str(ckpt)], "needs a language model")


def test_resume_reports_a_damaged_checkpoint_in_one_line_and_goes_on(capsys, tmp_path):
    ckpt = tmp_path / "ckpt"
    argv = ["train", "--task", "adding", "--length", "10", *TINY, "--checkpoint-dir", str(ckpt)]
    argv += ["--checkpoint-every", "10", "--out", str(tmp_path / "out")]
    assert cli.main(argv) == 0
    (ckpt / "20" / "params" / "manifest.ocdbt").unlink()
    capsys.readouterr()
    assert cli.main([*argv, "--resume"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rnn-jax: warning: checkpoint "), err
    assert err[0].endswith("; going back to step 10"), err
    assert app.load_run(ckpt).step == 20 and (ckpt / "20.damaged").is_dir()


def test_a_missing_extra_ends_in_one_line_before_training(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    argv = ["compare", "--task", "adding", "--cells", "gru", *TINY, "--out", str(tmp_path / "out")]
    message = "writing plots needs matplotlib: pip install 'rnn_jax[app]'"
    fails_cleanly(capsys, argv, message, tmp_path)


def test_a_second_identical_compare_compiles_nothing(tmp_path):
    job = "compare --task adding --length 5 --cells gru --hidden 4 --batch 8 --steps 2"
    measured = first_minutes.cached_compare(job, tmp_path)
    first, second = measured["first"], measured["second"]
    assert first["code"] == second["code"] == 0
    assert first["compiles"] > 0 and first["hits"] == 0
    assert len(first["cache_files"]) == first["compiles"]
    assert second["compiles"] == second["hits"] == first["compiles"]
    assert second["cache_files"] == first["cache_files"]


def test_compare_prints_the_table_and_saves_plot_and_json(capsys, tmp_path):
    out = tmp_path / "cmp"
    # A learning rate of 100 without clipping blows the relu IndRNN up; the tanh RNN stays finite.
    argv = [
        "compare",
        "--task",
        "adding",
        "--length",
        "10",
        "--cells",
        "indrnn,simple",
        *TINY,
        "--lr",
        "100",
        "--clip",
        "0",
        "--out",
        str(out),
    ]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "test mse" in printed and "predict 1" in printed and "solved?" in printed
    assert "diverged" in printed
    summary = json.loads((out / "compare.json").read_text())
    assert [r["cell"] for r in summary["runs"]] == ["indrnn", "simple"]
    assert "nan" in summary["runs"][0]["diverged"] and summary["runs"][1]["test"]["mse"] > 0
    assert (out / "compare.png").stat().st_size > 1000


def test_gradflow_table_and_plot(capsys, tmp_path):
    out = tmp_path / "gf"
    argv = "gradflow --task adding --length 20 --cells simple,lstm --hidden 8 --batch 4"
    assert cli.main([*argv.split(), "--train-steps", "3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "after 3 training steps" in printed
    assert "log10(first/last)" in printed and "lstm" in printed
    assert len(json.loads((out / "gradflow.json").read_text())["norms"]["simple"]) == 20
    assert (out / "gradflow.png").exists()


def test_python_dash_m_runs_the_command_line():
    result = subprocess.run(
        [sys.executable, "-m", "rnn_jax", "--help"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0 and "train" in result.stdout and "gradflow" in result.stdout
