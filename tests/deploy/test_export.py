"""``rj.export`` and ``rnn-jax export``: the programs, run by their own runtimes, give the
model's outputs.

- StableHLO: loaded in a fresh Python that has JAX but cannot import rnn_jax
  (``-I -S``, site-packages on the path without its ``.pth`` files, so no editable
  install), called at several batch sizes and lengths.
- ONNX: run by onnxruntime within 1e-5, one ``Loop`` per scan.
- Streaming: the one-step program fed step by step equals the whole sequence.
- A run trained by ``rnn-jax train --data``: both formats give ``rnn-jax predict``'s
  labels on the same file.
"""

import csv
import json
import os
import subprocess
import sys
import sysconfig
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_cli import fails_cleanly
from test_cli_data import walks_csv

import rnn_jax as rj
from rnn_jax import app, cli
from rnn_jax.data import decode_outputs, prediction_inputs

FEATURES = 3
# (batch, time, lengths): a padded batch with an empty sequence, and one step of one sequence
CASES = [(4, 9, [9, 4, 0, 1]), (1, 1, [1])]

# Runs in `python -I -S`: site-packages is put on the path by hand, its .pth files unread,
# so the editable rnn_jax is not importable (checked). For each NAME.stablehlo beside it:
# NAME.npz holds the arguments of each case ("case/argument"); NAME.out.npz gets the outputs.
# A streaming program (NAME.stream.stablehlo) is fed its case's inputs [B, T, ...] step by
# step from a zero state.
FRESH_PROCESS = """
import importlib.util, pathlib, sys
sys.path.extend(sys.argv[2:])
assert importlib.util.find_spec("rnn_jax") is None, "rnn_jax is importable"
import jax, numpy as np
for program in sorted(pathlib.Path(sys.argv[1]).glob("*.stablehlo")):
    exported = jax.export.deserialize(bytearray(program.read_bytes()))
    arrays = np.load(program.with_suffix(".npz"))
    outputs = {}
    for case in sorted({key.split("/")[0] for key in arrays.files}):
        args = [arrays[f"{case}/{i}"] for i in range(len(exported.in_avals))]
        if program.name.endswith(".stream.stablehlo"):
            x, state, ys = args[0], args[1:], []
            for t in range(x.shape[1]):
                y, *state = exported.call(x[:, t], *state)
                ys.append(np.asarray(y))
            results = [np.stack(ys, axis=1)]
        else:
            results = exported.call(*args)
        outputs.update({f"{case}/{j}": np.asarray(y) for j, y in enumerate(results)})
    np.savez(program.with_suffix(".out.npz"), **outputs)
print("rnn_jax importable:", importlib.util.find_spec("rnn_jax") is not None)
"""


def run_without_rnn_jax(directory):
    """Runs `FRESH_PROCESS` on ``directory``; returns its printed line."""
    paths = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    command = [sys.executable, "-I", "-S", "-c", FRESH_PROCESS, str(directory), *paths]
    env = {"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"}
    for name in ("JAX_DISABLE_MOST_OPTIMIZATIONS", "XLA_FLAGS"):  # as this process compiles
        if name in os.environ:
            env[name] = os.environ[name]
    result = subprocess.run(
        command, cwd=directory, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout.strip()


def save_cases(path, cases):
    """``cases``: a list of argument lists, saved as ``path`` (`FRESH_PROCESS`'s layout)."""
    np.savez(path, **{f"{c}/{i}": a for c, args in enumerate(cases) for i, a in enumerate(args)})


def load_outputs(path, count):
    arrays = np.load(path)
    return [arrays[f"{case}/0"] for case in range(count)]


def sequence_cases():
    rng = np.random.default_rng(0)
    cases = []
    for batch, time, lengths in CASES:
        x = rng.normal(size=(batch, time, FEATURES)).astype(np.float32)
        cases.append([x, np.array(lengths, np.int32)])
    return cases


@partial(jax.jit, static_argnums=0)
def batch_major(model, params, x, length):
    ys = model.apply(params, jnp.swapaxes(x, 0, 1), length=length)[1]
    return ys if ys.ndim == 2 else jnp.swapaxes(ys, 0, 1)


def expected(model, params, cases, *, whole=False):
    """``model``'s outputs, batch-major, on each case's ``(x, length)`` (``whole``: on every
    step, as without a length). One call on all cases' sequences padded to one length:
    outputs at valid steps do not depend on the padding."""
    steps = max(x.shape[1] for x, _ in cases)
    x = np.concatenate([np.pad(x, [(0, 0), (0, steps - x.shape[1]), (0, 0)]) for x, _ in cases])
    length = np.concatenate([np.full(len(n), x_.shape[1]) if whole else n for x_, n in cases])
    ys = np.asarray(batch_major(model, params, x, length.astype(np.int32)))
    starts = np.cumsum([0] + [len(n) for _, n in cases])
    return [
        ys[a:b, : x_.shape[1]] if ys.ndim == 3 else ys[a:b]
        for a, b, (x_, _) in zip(starts[:-1], starts[1:], cases, strict=True)
    ]


def random_params(model, seed):
    """Params of ``model``'s shapes drawn by NumPy (no program compiled for them)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(model.init, jax.random.key(0))
    return jax.tree.map(lambda s: (0.5 * rng.normal(size=s.shape)).astype(s.dtype), shapes)


def zero_state(artifact, batch):
    return [np.zeros((batch, *p.shape[1:]), p.dtype) for p in artifact.inputs[1:]]


def fed_step_by_step(call, artifact, x):
    """A streaming program ``call(inputs, *state) -> [outputs, *state]`` fed ``x [B, T, F]``
    one step at a time from zeros: the outputs ``[B, T, ...]``."""
    state, ys = zero_state(artifact, x.shape[0]), []
    for t in range(x.shape[1]):
        y, *state = call(x[:, t], *state)
        ys.append(np.asarray(y))
    return np.stack(ys, axis=1)


@pytest.fixture(scope="module")
def models():
    """An LSTM tagger, a GRU classifier and a bidirectional stack, with their params."""
    built = {
        "lstm": rj.models.tagger(rj.lstm(6), 2, input_size=FEATURES),
        "gru": rj.models.classifier(rj.gru(6), 4, input_size=FEATURES),
        "bidirectional_stack": rj.models.tagger(
            rj.stack([rj.bidirectional(rj.lstm(5)), rj.bidirectional(rj.gru(4))]),
            2,
            input_size=FEATURES,
        ),
    }
    return {name: (m, random_params(m, seed)) for seed, (name, m) in enumerate(built.items())}


EXAMPLE = jax.ShapeDtypeStruct((1, 1, FEATURES), jnp.float32)


def test_stablehlo_runs_in_a_process_without_rnn_jax(models, tmp_path):
    cases = sequence_cases()
    for name, (model, params) in models.items():
        rj.export(model, params, EXAMPLE).save(tmp_path / f"{name}.stablehlo")
        save_cases(tmp_path / f"{name}.npz", cases)
    model, params = models["lstm"]
    streaming = rj.export(model, params, EXAMPLE, streaming=True)
    streaming.save(tmp_path / "lstm.stream.stablehlo")
    streams = [[x, *zero_state(streaming, len(x))] for x, _ in cases]
    save_cases(tmp_path / "lstm.stream.npz", streams)

    assert run_without_rnn_jax(tmp_path) == "rnn_jax importable: False"
    for name, (model, params) in models.items():
        outputs = load_outputs(tmp_path / f"{name}.out.npz", len(cases))
        wanted = expected(model, params, cases)
        for got, want in zip(outputs, wanted, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=name)
    # the same program in this process, bit for bit
    program = jax.export.deserialize((tmp_path / "bidirectional_stack.stablehlo").read_bytes())
    there = load_outputs(tmp_path / "bidirectional_stack.out.npz", 1)[0]
    np.testing.assert_array_equal(there, program.call(*cases[0])[0])
    model, params = models["lstm"]
    streamed = load_outputs(tmp_path / "lstm.stream.out.npz", len(cases))
    for got, want in zip(streamed, expected(model, params, cases, whole=True), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_onnx_runs_in_onnxruntime_within_1e_5_with_one_loop_per_scan(models):
    pytest.importorskip("jax2onnx", reason="pip install --no-deps jax2onnx (README)")
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    cases = sequence_cases()
    scans = {"lstm": 1, "gru": 1, "bidirectional_stack": 4}
    for name, (model, params) in models.items():
        artifact = rj.export(model, params, EXAMPLE, format="onnx")
        graph = onnx.load_from_string(artifact.data).graph
        assert [node.op_type for node in graph.node].count("Loop") == scans[name], name
        dims = [d.dim_param for d in graph.input[0].type.tensor_type.shape.dim]
        assert dims[:2] == ["batch", "time"] and artifact.opset == 17
        session = ort.InferenceSession(artifact.data, providers=["CPUExecutionProvider"])
        for (x, length), want in zip(cases, expected(model, params, cases), strict=True):
            (got,) = session.run(None, {"inputs": x, "length": length})
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=name)

    model, params = models["lstm"]
    streaming = rj.export(model, params, EXAMPLE, format="onnx", streaming=True)
    assert [p.name for p in streaming.inputs] == ["inputs", "state.h", "state.c"]
    session = ort.InferenceSession(streaming.data, providers=["CPUExecutionProvider"])
    names = [p.name for p in streaming.inputs]

    def call(*arrays):
        return session.run(None, dict(zip(names, arrays, strict=True)))

    for (x, _), want in zip(cases, expected(model, params, cases, whole=True), strict=True):
        got = fed_step_by_step(call, streaming, x)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_what_cannot_be_exported_exactly_is_refused_in_words(models):
    model, params = models["bidirectional_stack"]
    with pytest.raises(ValueError, match="bidirectional layer reads each sequence from its end"):
        rj.export(model, params, EXAMPLE, streaming=True)
    pooled = rj.models.classifier(rj.gru(4), 2, input_size=FEATURES, pooling="mean")
    with pytest.raises(ValueError, match="mean pooling is over the whole sequence"):
        rj.export(pooled, random_params(pooled, 0), EXAMPLE, streaming=True)
    lru = rj.models.tagger(rj.lru(4), 2, input_size=FEATURES)
    with pytest.raises(ValueError, match="complex64 values"):
        rj.export(lru, random_params(lru, 0), EXAMPLE, format="onnx")
    model, params = models["gru"]
    halved = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
    with pytest.raises(ValueError, match="computes in bfloat16 beside float32"):
        rj.export(model, halved, EXAMPLE, format="onnx")
    translate = rj.models.seq2seq(rj.gru(4), rj.gru(4), source_vocab=5, target_vocab=5)
    with pytest.raises(ValueError, match="a seq2seq model reads two sequences"):
        rj.export(translate, None, jax.ShapeDtypeStruct((1, 1), jnp.int32))


def test_symbolic_sizes_run_the_reference_loop_whatever_the_backend():
    cell = rj.lstm(4)
    params = cell.init(jax.random.key(0), FEATURES)
    batch, time = jax.export.symbolic_shape("batch, time")
    x, length = sequence_cases()[0]
    xs = jnp.swapaxes(x, 0, 1)
    want = rj.scan(cell, params, xs, length=length, backend="reference")
    for backend in ("sequential", "pallas"):

        def scan(xs, length, backend=backend):
            return rj.scan(cell, params, xs, length=length, backend=backend)

        specs = (
            jax.ShapeDtypeStruct((time, batch, FEATURES), jnp.float32),
            jax.ShapeDtypeStruct((batch,), jnp.int32),
        )
        got = jax.export.export(jax.jit(scan))(*specs).call(xs, length)
        jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), got, want)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A two-layer MGU classifier of walks by ``rnn-jax train --data``, and its predictions."""
    root = tmp_path_factory.mktemp("run")
    data = walks_csv(root / "walks.csv")
    argv = ["train", "--data", str(data), "--target", "label", "--id", "walk", "--cell", "mgu"]
    argv += ["--layers", "2", "--hidden", "4", "--batch", "4", "--steps", "4", "--no-progress"]
    argv += ["--checkpoint-dir", str(root / "ckpt"), "--out", str(root / "out")]
    assert cli.main(argv) == 0
    predictions = root / "predictions.csv"
    argv = ["predict", "--run", str(root / "ckpt"), "--data", str(data), "--out", str(predictions)]
    assert cli.main(argv) == 0
    with predictions.open(newline="") as file:
        labels = [row[1] for row in list(csv.reader(file))[1:]]
    return root, data, labels


def test_a_trained_run_exported_by_the_command_line_gives_its_predictions(trained, capsys):
    pytest.importorskip("jax2onnx", reason="pip install --no-deps jax2onnx (README)")
    ort = pytest.importorskip("onnxruntime")
    root, data, labels = trained
    written = {}
    for name, extra in [("onnx", []), ("stablehlo", []), ("stream.stablehlo", ["--streaming"])]:
        out = root / f"walks.{name}"
        argv = ["export", "--run", str(root / "ckpt"), "--format", name.split(".")[-1]]
        assert cli.main([*argv, *extra, "--out", str(out)]) == 0
        written[name] = json.loads(out.with_name(out.name + ".json").read_text())
    printed = capsys.readouterr().out
    assert "in inputs: [batch, time, 2] float32" in printed and "wrote" in printed

    encoding = written["onnx"]["encoding"]
    read = prediction_inputs(data, encoding)
    inputs, length = read.inputs.astype(np.float32), read.length.astype(np.int32)
    logits = app.prediction.model_outputs(app.load_run(root / "ckpt"), inputs, length)
    session = ort.InferenceSession(str(root / "walks.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"inputs": inputs, "length": length})
    np.testing.assert_allclose(got, logits, rtol=1e-5, atol=1e-5)
    assert decode_outputs(got, encoding).tolist() == labels

    save_cases(root / "walks.npz", [[inputs, length]])
    ports = written["stream.stablehlo"]["inputs"][1:]
    state = [np.zeros((len(inputs), *p["shape"][1:]), p["dtype"]) for p in ports]
    save_cases(root / "walks.stream.npz", [[inputs, *state]])
    assert run_without_rnn_jax(root) == "rnn_jax importable: False"
    (whole,) = load_outputs(root / "walks.out.npz", 1)
    np.testing.assert_allclose(whole, logits, rtol=1e-6, atol=1e-6)
    assert decode_outputs(whole, encoding).tolist() == labels
    (steps,) = load_outputs(root / "walks.stream.out.npz", 1)
    last = steps[np.arange(len(length)), length - 1]  # the output at each walk's last step
    np.testing.assert_allclose(last, logits, rtol=1e-6, atol=1e-6)


def test_export_refuses_in_one_line(trained, capsys, tmp_path):
    root, _, _ = trained
    argv = ["export", "--run", str(root / "ckpt"), "--format", "onnx"]
    fails_cleanly(capsys, argv, "the following arguments are required: --out")
    fails_cleanly(capsys, [*argv[:-1], "tflite", "--out", "x"], "invalid choice: 'tflite'")
    fails_cleanly(capsys, [*argv, "--out", str(tmp_path)], "is a directory")
