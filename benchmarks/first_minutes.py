"""The first minutes with rnn_jax: what ``import rnn_jax`` costs over ``import jax``, and what
a second identical ``rnn-jax compare`` costs once JAX's persistent compilation cache holds
the first one's programs.

    python benchmarks/first_minutes.py          # 15 import pairs; the README's main job twice
    python benchmarks/first_minutes.py --quick  # 3 import pairs; a tiny compare twice

Imports: each repeat is a fresh ``python -X importtime -c "import jax; import rnn_jax"``;
``rnn_jax``'s cumulative line is then its cost over an imported JAX (the target is at most
0.3 s), ``jax``'s that of JAX itself. The slowest modules under ``rnn_jax`` (self time) are
listed from the median repeat. Compare: two fresh processes run the same ``rnn-jax compare``
on an empty cache directory, each counting its compile requests and the cache's hits
(``jax.monitoring``). Writes ``benchmarks/results/first_minutes-cpu-TIME.json`` (no timing
records; the measurements are fields of their own). Time it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common

ROOT = Path(__file__).resolve().parents[1]
MAIN_JOB = (
    "compare --task adding --length 100 --cells simple,lstm,gru --hidden 32 --batch 32 "
    "--lr 0.01 --steps 1500"
)
QUICK_JOB = "compare --task adding --length 10 --cells gru --hidden 8 --batch 16 --steps 20"
# A compare in a fresh process that counts compile requests and persistent-cache hits.
COUNTING = """
import json, sys
from jax import monitoring
from rnn_jax import cli
counts = {"compiles": 0, "hits": 0}
def on_duration(event, duration, **_):
    if event == "/jax/core/compile/backend_compile_duration":
        counts["compiles"] += 1
def on_event(event, **_):
    if event == "/jax/compilation_cache/cache_hits":
        counts["hits"] += 1
monitoring.register_event_duration_secs_listener(on_duration)
monitoring.register_event_listener(on_event)
code = cli.main(sys.argv[1:])
print(json.dumps({**counts, "code": code}))
"""


def environment(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


def import_times() -> tuple[float, float, list[list]]:
    """One fresh import: ``(jax s, rnn_jax over jax s, [[module, self s], ...] under rnn_jax)``."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import jax; import rnn_jax"],
        capture_output=True,
        text=True,
        env=environment(),
        check=True,
    )
    rows = []  # (name, self s, cumulative s), each module once, children before parents
    for line in result.stderr.splitlines():
        if line.startswith("import time:") and "self [us]" not in line:
            self_us, total_us, name = (part.strip() for part in line[12:].split("|"))
            rows.append((name, int(self_us) / 1e6, int(total_us) / 1e6))
    names = [name for name, _, _ in rows]
    jax_at, rnn_jax_at = names.index("jax"), names.index("rnn_jax")
    under_rnn_jax = [[name, own] for name, own, _ in rows[jax_at + 1 : rnn_jax_at + 1]]
    return rows[jax_at][2], rows[rnn_jax_at][2], under_rnn_jax


def imports(repeats: int) -> dict:
    runs = sorted((import_times() for _ in range(repeats)), key=lambda run: run[1])
    middle = runs[len(runs) // 2]
    slowest = sorted(middle[2], key=lambda item: -item[1])[:15]
    return {
        "repeats": repeats,
        "jax_median_s": round(statistics.median(run[0] for run in runs), 3),
        "rnn_jax_over_jax_median_s": round(middle[1], 3),
        "rnn_jax_over_jax_s": [round(run[1], 3) for run in runs],
        "slowest_modules_of_the_median_run": [[name, round(s, 4)] for name, s in slowest],
    }


def cached_compare(job: str, folder: Path) -> dict:
    """The same compare twice in fresh processes on one empty cache in ``folder``: each run's
    seconds and counts, and the cache's files after each."""
    cache = folder / "cache"
    env = environment(RNN_JAX_COMPILATION_CACHE=str(cache))
    argv = [*job.split(), "--no-progress", "--out", str(folder / "out")]
    measured = {"command": f"rnn-jax {job}"}
    for run in ("first", "second"):
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-c", COUNTING, *argv], capture_output=True, text=True, env=env
        )
        seconds = time.perf_counter() - started
        if result.returncode != 0:
            raise RuntimeError(f"rnn-jax {job} failed: {result.stderr[-2000:]}")
        counts = json.loads(result.stdout.strip().splitlines()[-1])
        files = sorted(path.name for path in cache.iterdir())
        measured[run] = {"seconds": round(seconds, 2), **counts, "cache_files": files}
    return measured


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 import pairs, a tiny compare")
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        job = cached_compare(QUICK_JOB if args.quick else MAIN_JOB, Path(folder))
    for run in ("first", "second"):
        job[run]["cache_files"] = len(job[run]["cache_files"])
    measured = {"imports": imports(3 if args.quick else 15), "cached_compare": job}
    path = common.write_results(
        "first_minutes",
        [],
        machine=common.machine_info(),
        quick=args.quick,
        directory=args.out or common.RESULTS_DIR,
        **measured,
    )
    found, job = measured["imports"], measured["cached_compare"]
    print(
        f"import jax {found['jax_median_s']} s; import rnn_jax over it "
        f"{found['rnn_jax_over_jax_median_s']} s (median of {found['repeats']})"
    )
    for run in ("first", "second"):
        print(f"{job['command']}, {run} run: {job[run]}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
