"""Scale suite: throughput against the device count, and the time-sharded scan against T.

One command, on whatever platform JAX sees::

    python benchmarks/scale_suite.py                 # 1, 2 and 4 devices
    python benchmarks/scale_suite.py --quick         # a smoke run
    python benchmarks/scale_suite.py --devices 1,8   # other counts (a GPU host: real devices)

Each device count runs in a child process of its own: on a CPU with
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (N fake devices), on a
GPU or TPU host on the first N devices. Groups, each in every child:

- ``train``: `rnn_jax.train.fit` data-parallel on the mesh ``data=N`` (a GRU
  on the adding task); sequences per second from the loop's own history,
  the median over intervals of ``log_every`` steps after the first (which
  holds the compilation). The batch, the host's batch making and placement
  are all in it, as in training.
- ``predict``: `rnn_jax.train.predict` streaming many series (a minGRU
  forecaster) in slices split over the N devices; the median seconds per
  slice, after the first two.
- ``time``: ``rj.scan`` of a minGRU with ``backend="sharded"`` (T split over
  the N devices) against ``"parallel"`` on one device, in the same process,
  interleaved, for several T, forward and forward+backward (the gradient of
  ``sum(ys)`` with respect to params and inputs).

Fake CPU devices share the machine's cores: on 2 cores, 4 "devices" do not
add compute, so these numbers show the overhead and the correctness of the
partitioned programs (collectives, padding, two local solves instead of
one), not speedups; real scaling needs real devices (the same command on a
multi-GPU host). The results file says so (``caveat``). Results:
``benchmarks/results/scale_suite-<platform>-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

try:
    from benchmarks import common
except ImportError:  # run as ``python benchmarks/scale_suite.py``
    import common

import rnn_jax as rj

ROOT = Path(__file__).resolve().parents[1]
GROUPS = ("train", "predict", "time")
MARK = "SCALE_RECORDS "
FAKE_CAVEAT = (
    "fake CPU devices (--xla_force_host_platform_device_count) share {cores} cores: more "
    "devices add no compute, so these are the overheads of the partitioned programs "
    "(collectives, padding, placement), not speedups; ratios on a shared machine"
)
SIZES = {
    "full": {
        "train": {"hidden": 32, "length": 32, "batch": 64, "steps": 45, "log_every": 5},
        "predict": {"series": 32768, "steps": 64, "hidden": 32, "slice": 4096},
        "time": {"B": 4, "I": 32, "H": 32, "T": (4096, 16384, 65536), "rounds": 5},
    },
    "quick": {
        "train": {"hidden": 16, "length": 16, "batch": 16, "steps": 12, "log_every": 3},
        "predict": {"series": 4096, "steps": 16, "hidden": 8, "slice": 1024},
        "time": {"B": 4, "I": 8, "H": 8, "T": (1024,), "rounds": 2},
    },
}


# ----------------------------------------------------------------------------- one child


def child(devices: int, groups: list[str], sizes: dict[str, Any]) -> list[dict[str, Any]]:
    """The records of one device count (this process sees at least ``devices`` devices)."""
    chosen = jax.devices()[:devices]
    if len(chosen) < devices:
        raise SystemExit(f"asked for {devices} devices; {len(chosen)} are visible")
    records = []
    for group in groups:
        records += GROUP_RUNS[group](chosen, sizes[group])
    for rec in records:
        rec["devices"] = devices
    return records


def train_records(devices, size) -> list[dict[str, Any]]:
    task = rj.data.adding(length=size["length"])
    model = rj.models.classifier(rj.gru(size["hidden"]), 1, input_size=2)
    optimizer, _ = rj.train.make_optimizer("adam", 1e-3)
    mesh = rj.train.sharding.make_mesh({"data": len(devices)}, devices)
    result = rj.train.fit(
        rj.train.supervised(model.apply, "mse"),
        model.init(jax.random.key(0)),
        optimizer,
        lambda step: task.train.batch(step, size["batch"], seed=0),
        steps=size["steps"],
        log_every=size["log_every"],
        progress=False,
        mesh=mesh,
    )
    seconds = np.diff([entry["seconds"] for entry in result.history["train"]])
    stats = common.Stats.of(seconds.tolist())
    shape = common.Shape(size["batch"], size["length"], 2, size["hidden"])
    return [
        common.record(
            cell="gru",
            backend="auto",
            shape=shape,
            dtype="float32",
            mode="forward_backward",
            stats=stats,
            group="train",
            mesh=rj.train.sharding.describe(mesh),
            per="training step of the fit loop",
            sequences_per_s=round(size["batch"] * size["log_every"] / stats.median_s, 1),
        )
    ]


def predict_records(devices, size) -> list[dict[str, Any]]:
    model = rj.models.forecaster(rj.min_gru(size["hidden"]), input_size=1)
    params = model.init(jax.random.key(0))
    series = np.random.default_rng(0).standard_normal((size["series"], size["steps"], 1))
    series = series.astype(np.float32)
    fn = rj.train.streaming.sequence_outputs(model.apply)
    mesh = rj.train.sharding.make_mesh({"data": len(devices)}, devices)
    stamps = [time.perf_counter()]
    for _ in rj.train.stream(fn, params, (series, None), slice_size=size["slice"], mesh=mesh):
        stamps.append(time.perf_counter())
    stats = common.Stats.of(np.diff(stamps)[2:].tolist())  # the first two hold the compilation
    shape = common.Shape(size["slice"], size["steps"], 1, size["hidden"])
    return [
        common.record(
            cell="min_gru",
            backend="auto",
            shape=shape,
            dtype="float32",
            mode="forward",
            stats=stats,
            group="predict",
            mesh=rj.train.sharding.describe(mesh),
            per="slice of the stream",
            series=size["series"],
            series_per_s=round(size["slice"] / stats.median_s, 1),
        )
    ]


def time_records(devices, size) -> list[dict[str, Any]]:
    cell = rj.min_gru(size["H"])
    params = cell.init(jax.random.key(0), size["I"])
    backends = {
        "parallel": "parallel",
        "sharded": rj.backends.Sharded(mesh=Mesh(np.array(devices), ("time",))),
    }
    records = []
    for steps in size["T"]:
        xs = jax.random.normal(jax.random.key(1), (steps, size["B"], size["I"]))
        shape = common.Shape(size["B"], steps, size["I"], size["H"])
        for mode in common.MODES:
            cases = {
                name: common.blocking(compiled(cell, backend, mode), params, xs)
                for name, backend in backends.items()
            }
            stats = common.interleaved(cases, rounds=size["rounds"], per_round=2, warmup=1)
            for name, stat in stats.items():
                records.append(
                    common.record(
                        cell="min_gru",
                        backend=name,
                        shape=shape,
                        dtype="float32",
                        mode=mode,
                        stats=stat,
                        group="time",
                        time_devices=len(devices) if name == "sharded" else 1,
                    )
                )
    return records


def compiled(cell, backend, mode):
    """A jitted function of ``(params, xs)``: the outputs, or the gradient of their sum."""
    if mode == "forward":
        return jax.jit(lambda p, x: rj.scan(cell, p, x, backend=backend)[1])

    def loss(p, x):
        return jnp.sum(rj.scan(cell, p, x, backend=backend)[1])

    return jax.jit(jax.grad(loss, argnums=(0, 1)))


GROUP_RUNS = {"train": train_records, "predict": predict_records, "time": time_records}


# ----------------------------------------------------------------------------- the parent


def run_child(devices: int, groups: list[str], quick: bool, platform: str) -> list[dict]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    if platform == "cpu":
        env["XLA_FLAGS"] = (
            f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"
        ).strip()
    command = [sys.executable, __file__, "--child", str(devices), "--groups", ",".join(groups)]
    result = subprocess.run(
        command + (["--quick"] if quick else []), env=env, capture_output=True, text=True
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith(MARK)]
    if result.returncode or not lines:
        raise RuntimeError(f"{devices} devices: exit {result.returncode}\n{result.stderr[-3000:]}")
    return json.loads(lines[-1][len(MARK) :])


def summary(records: list[dict[str, Any]]) -> str:
    """Markdown tables: throughput by device count, and sharded / parallel time by T."""
    lines = ["| group | devices | median s | throughput |", "|---|---|---|---|"]
    for rec in records:
        if rec["group"] in ("train", "predict"):
            rate = rec.get("sequences_per_s") or rec.get("series_per_s")
            lines.append(
                f"| {rec['group']} | {rec['devices']} | {rec['median_s']:.4g} | {rate} /s |"
            )
    lines += ["", "| T | mode | devices | sharded / parallel |", "|---|---|---|---|"]
    medians = {
        (r["T"], r["mode"], r["devices"], r["backend"]): r["median_s"]
        for r in records
        if r["group"] == "time"
    }
    for (steps, mode, devices, backend), median in sorted(medians.items()):
        if backend == "sharded":
            ratio = median / medians[steps, mode, devices, "parallel"]
            lines.append(f"| {steps} | {mode} | {devices} | {ratio:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--groups", default=",".join(GROUPS), help=f"comma list of {GROUPS}")
    parser.add_argument("--devices", default="1,2,4", help="comma list of device counts")
    parser.add_argument("--quick", action="store_true", help="a smoke run: small shapes")
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = SIZES["quick" if args.quick else "full"]
    if args.child is not None:
        records = child(args.child, args.groups.split(","), sizes)
        print(MARK + json.dumps(records), flush=True)
        return 0

    groups = common.chosen_groups(parser, args.groups, GROUPS)
    counts = [int(n) for n in args.devices.split(",") if n]
    platform = jax.default_backend()
    started = time.perf_counter()
    records = []
    for devices in counts:
        print(f"{devices} device(s) ...", flush=True)
        records += run_child(devices, groups, args.quick, platform)
    machine = common.machine_info(device_counts=counts, fake_devices=platform == "cpu")
    caveat = (
        FAKE_CAVEAT.format(cores=machine["cores"])
        if platform == "cpu"
        else "real devices; ratios on a possibly shared host"
    )
    path = common.write_results(
        "scale_suite",
        records,
        machine=machine,
        quick=args.quick,
        directory=args.out or common.RESULTS_DIR,
        groups=groups,
        sizes=sizes,
        caveat=caveat,
        wall_s=round(time.perf_counter() - started, 1),
    )
    print(summary(records))
    print(f"wrote {path} ({len(records)} records)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
