"""A training process killed mid-run, then resumed, ends with the uninterrupted run's parameters."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np

import rnn_jax as rj

STEPS = 200
ROOT = Path(__file__).resolve().parents[2]


def command(directory: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "rnn_jax",
        "train",
        "--task",
        "adding",
        "--length",
        "30",
        "--cell",
        "gru",
        "--hidden",
        "16",
        "--batch",
        "16",
        "--lr",
        "0.01",
        "--seed",
        "3",
        "--steps",
        str(STEPS),
        "--eval-every",
        "100",
        "--checkpoint-every",
        "25",
        "--no-progress",
        "--checkpoint-dir",
        str(directory),
        "--out",
        str(out),
        *extra,
    ]


def saved_steps(directory: Path) -> list[int]:
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def final_params(directory: Path):
    loaded = rj.app.load_run(directory)
    assert loaded.step == STEPS and loaded.finished
    return loaded.params


def test_killed_run_resumes_to_the_uninterrupted_parameters(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = lambda args: subprocess.Popen(
        args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    killed_dir, whole_dir = tmp_path / "killed", tmp_path / "whole"
    whole = run(command(whole_dir, tmp_path / "whole-out"))
    victim = run(command(killed_dir, tmp_path / "killed-out"))
    deadline = time.monotonic() + 240
    while not saved_steps(killed_dir):
        assert victim.poll() is None, f"the run ended before its first checkpoint: {victim.stderr}"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    at_kill = saved_steps(killed_dir)
    assert at_kill and at_kill[-1] < STEPS, at_kill
    assert not (tmp_path / "killed-out" / "results.json").exists()  # nothing half-written

    resumed = run(command(killed_dir, tmp_path / "killed-out", "--resume"))
    assert resumed.wait() == 0, resumed.stderr.read()
    assert whole.wait() == 0, whole.stderr.read()
    for a, b in zip(
        jax.tree.leaves(final_params(killed_dir)),
        jax.tree.leaves(final_params(whole_dir)),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    assert (tmp_path / "killed-out" / "results.json").exists()
