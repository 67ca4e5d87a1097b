"""Scaling out, each check in processes of its own so every other test keeps one device:
four CPU devices in one process (``on_four_devices.py``: the time-sharded scan, data-parallel
training, resuming a sharded checkpoint, streamed inference), and two processes joined by
``jax.distributed`` over 127.0.0.1 training as one run."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np

import rnn_jax as rj

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 600


def environment(devices: int, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),  # scan_helpers
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "JAX_PLATFORMS": "cpu",
        **extra,
    }


def test_the_checks_on_four_devices_pass():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:benchmark",
            "-p",
            "no:xdist",
            str(ROOT / "tests" / "scale" / "on_four_devices.py"),
        ],
        cwd=ROOT,
        env=environment(4),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert " passed" in output and "skipped" not in output, output[-2000:]


TRAIN = [
    "train",
    *("--task", "adding", "--length", "10", "--cell", "min_gru", "--hidden", "8"),
    *("--batch", "8", "--steps", "6", "--eval-every", "3", "--lr", "0.01", "--seed", "1"),
    "--no-progress",
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_processes_on_localhost_train_as_one_run(tmp_path):
    """``jax.distributed`` over 127.0.0.1, two CPU devices per process, the mesh data=4 across
    both: the checkpoint they write together holds the parameters one device computes."""
    address = f"127.0.0.1:{free_port()}"
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rnn_jax",
                *TRAIN,
                "--mesh",
                "data=4",
                "--checkpoint-dir",
                str(tmp_path / "both"),
                "--out",
                str(tmp_path / "out"),
            ],
            cwd=tmp_path,
            env=environment(
                2,
                JAX_COORDINATOR_ADDRESS=address,
                JAX_NUM_PROCESSES="2",
                JAX_PROCESS_ID=str(index),
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for index in range(2)
    ]
    try:
        outputs = [process.communicate(timeout=TIMEOUT)[0] for process in processes]
    finally:
        for process in processes:
            process.kill()
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output[-4000:]
    # two devices per process: only the joined processes make a mesh of four
    assert rj.train.Checkpointer(tmp_path / "both").read_meta()["mesh"] == "data=4,model=1"

    config = rj.app.load_run(tmp_path / "both").config
    assert config.mesh == "data=4"
    alone = dataclasses.replace(config, mesh="auto")  # this process: one device
    rj.app.run(alone, checkpoint_dir=tmp_path / "one", progress=False)
    both, alone = rj.app.load_run(tmp_path / "both"), rj.app.load_run(tmp_path / "one")
    assert both.step == alone.step == 6 and both.finished
    for got, want in zip(jax.tree.leaves(both.params), jax.tree.leaves(alone.params), strict=True):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)
    assert (tmp_path / "out" / "results.json").exists()
