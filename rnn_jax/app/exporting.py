"""A trained run exported (what ``rnn-jax export`` writes): the program, and a JSON beside it.

The program is ``rj.export`` of the run's model and latest params, on the inputs
the model reads (encoded as for training: scaled features, or token ids). The
JSON (``FILE.json``) names its inputs and outputs and, for a run of ``train
--data``, holds the file's encoding (feature scaling, class labels, target
scaling), with which a program elsewhere encodes its inputs and reads the
outputs as ``rnn-jax predict`` does.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from rnn_jax.app.config import ConfigError
from rnn_jax.app.load import LoadedRun, load_run
from rnn_jax.app.records import write_atomically, write_json
from rnn_jax.deploy import FORMATS, Artifact, export

EXPORT_HELP = (
    "Writes a trained run's model as a program that runs without rnn_jax: StableHLO "
    "(jax.export; any JAX loads it with jax.export.deserialize) or ONNX (onnxruntime runs it), "
    "batch first with symbolic batch and time sizes: (inputs, length) -> outputs, or with "
    "--streaming one step, (inputs, *state) -> (outputs, *state) from a zero state. FILE.json "
    "beside it names the ports and holds a --data run's encoding."
)


def example_input(loaded: LoadedRun) -> jax.ShapeDtypeStruct:
    """The shape of the inputs the run's model reads, for one sequence of one step."""
    if loaded.info.get("vocab_size") is not None:
        return jax.ShapeDtypeStruct((1, 1), jnp.int32)
    return jax.ShapeDtypeStruct((1, 1, loaded.info["input_size"]), jnp.float32)


def export_run(
    loaded: LoadedRun,
    format: str,
    *,
    streaming: bool = False,
    platforms: Sequence[str] = ("cpu",),
) -> tuple[Artifact, dict[str, Any]]:
    """``rj.export`` of the run ``loaded`` (`load_run`), and its description: the ports, the
    run and step, and the encoding of a ``--data`` run. A refusal is a `ConfigError`."""
    try:
        artifact = export(
            loaded.model,
            loaded.params,
            example_input(loaded),
            format=format,
            streaming=streaming,
            platforms=platforms,
        )
    except ValueError as error:
        raise ConfigError(f"the run in {loaded.directory}: {error}") from None
    described = {
        **artifact.describe(),
        "run": str(loaded.directory),
        "step": loaded.step,
        "encoding": loaded.info.get("encoding"),
    }
    return artifact, described


def add_export_command(commands: Any) -> None:
    """The ``export`` subcommand, on the command line's subparsers ``commands``."""
    parser = commands.add_parser(
        "export", help="a trained run as StableHLO or ONNX", description=EXPORT_HELP
    )
    parser.add_argument(
        "--run", required=True, metavar="DIR", help="the run's checkpoint directory"
    )
    parser.add_argument("--format", required=True, choices=FORMATS, help="the program's format")
    parser.add_argument(
        "--streaming", action="store_true", help="one step, the state in and out (forward models)"
    )
    parser.add_argument(
        "--platforms",
        default="cpu",
        help="StableHLO: comma-separated platforms to lower for, cpu, cuda, tpu (default cpu)",
    )
    parser.add_argument("--out", required=True, metavar="FILE", help="the file to write")


def command_export(args: argparse.Namespace) -> int:
    """Runs ``rnn-jax export``; prints what it wrote."""
    out = Path(args.out)
    if out.is_dir():
        raise ConfigError(f"--out {out} is a directory; give the file to write")
    platforms = [p.strip() for p in args.platforms.split(",") if p.strip()]
    loaded = load_run(args.run)
    artifact, described = export_run(
        loaded, args.format, streaming=args.streaming, platforms=platforms
    )
    write_atomically(out, lambda file: file.write(artifact.data))
    notes = write_json(out.with_name(out.name + ".json"), described)
    form = "one step" if artifact.streaming else "whole sequences"
    print(f"{args.format} of the run in {args.run} (step {loaded.step}), {form}")
    for kind, ports in (("in", artifact.inputs), ("out", artifact.outputs)):
        for port in ports:
            print(f"  {kind} {port.name}: [{', '.join(map(str, port.shape))}] {port.dtype}")
    print(f"wrote {out} ({len(artifact.data):,} bytes) and {notes}")
    return 0
