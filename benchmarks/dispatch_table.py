"""Builds ``rnn_jax/backends/dispatch.json``, the measurements behind ``backend="auto"``.

    python benchmarks/dispatch_table.py            # from benchmarks/results/*.json
    python benchmarks/dispatch_table.py --check    # exit 1 if the packaged table is stale

Reads every results file (``--quick`` runs excluded) and keeps the records of
rnn_jax backends (``"backend"``; peers' ``"library"`` records are ignored, and
so are records made with non-default ``compiler_options``). Two sections, by
platform:

- ``backends``: per cell, dtype and shape, each backend's median seconds per
  mode, all from the newest run that measured that shape with default
  settings (the ``cpu_suite``/``gpu_suite``/``parallel_suite``/``memory_suite``
  runs, not sweeps, ``--profile`` runs, ``--onednn-threads`` variants or
  ``auto``'s own records), and under ``temporaries`` the bytes of
  temporaries XLA reported per mode and backend where the run recorded them
  (``temp_bytes``), and under ``compile`` the seconds each program took to
  compile (``compile_s``), which break run-time ties. Pallas records on a CPU
  (interpret mode) are dropped.
- ``sequential``: per cell, dtype, shape and mode (``forward``: inference,
  ``forward_backward``: training), the ``unroll``, ``chunk``, ``residuals``,
  ``pipeline`` and ``weight_grads`` of the variant the newest sweep picks in
  that mode (records that carry the first three; the other two take the
  value older sweeps ran with): of the variants within `COMPILE_TIE` of the
  fastest, the quickest to compile, so that a lead inside the noise never
  costs seconds of compilation (unrolled loops compile 2-3x slower).

`rnn_jax.backends.auto` documents how the table is read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

from rnn_jax.backends.auto import MARGIN  # noqa: E402

TABLE_PATH = Path(__file__).resolve().parents[1] / "rnn_jax" / "backends" / "dispatch.json"
SETTINGS = ("unroll", "chunk", "residuals")
# Settings swept only by later sweeps, with the value the earlier ones ran with.
LATER_SETTINGS = {"pipeline": True, "weight_grads": "per_chunk"}
KEY = ("cell", "dtype", "B", "T", "I", "H")
# Run time within this factor of the fastest variant's is a tie (`rnn_jax.backends.auto`'s
# MARGIN: the noise of one run on a shared 2-core machine), broken by compile time.
COMPILE_TIE = MARGIN
# The suites whose medians choose backends; other results (a study of one kernel's
# variants, training runs) never reach the table.
MEDIAN_SUITES = ("cpu_suite", "gpu_suite", "parallel_suite", "memory_suite")


def usable(record: dict[str, Any], platform: str) -> bool:
    if "backend" not in record or record.get("compiler_options") or record.get("vmap"):
        return False
    if "threads" in record:  # a variant of a backend's default thread setting
        return False
    if record["backend"] == "auto":  # what the table chose, not a kernel to choose
        return False
    if record["mode"] not in common.MODES:  # e.g. the labelled sum-of-outputs extra
        return False
    return not (platform == "cpu" and record["backend"].startswith("pallas"))


def quickest_to_compile_of_the_fastest(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The sweep's pick: of the variants within `COMPILE_TIE` of the fastest median (a lead
    that run-to-run noise could reverse), the one XLA compiled quickest (``compile_s``);
    the fastest where compile times were not recorded."""
    fastest = min(records, key=lambda r: r["median_s"])
    tied = [r for r in records if r["median_s"] <= fastest["median_s"] * COMPILE_TIE]
    if not all("compile_s" in r for r in tied):
        return fastest
    return min(tied, key=lambda r: r["compile_s"])


def build(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The table from results documents (oldest first: a newer run replaces an older one's
    medians at every shape it measured)."""
    medians: dict[str, dict[tuple, dict[str, dict[str, float]]]] = {}
    sweeps: dict[str, dict[tuple, dict[str, Any]]] = {}
    sources = set()
    for doc in docs:
        if doc["suite"] not in MEDIAN_SUITES and not doc["suite"].endswith("sweep"):
            continue
        platform = doc["machine"]["platform"]
        swept: dict[tuple, list[dict]] = {}
        measured: dict[tuple, dict[str, Any]] = {}
        for rec in doc["records"]:
            if not usable(rec, platform):
                continue
            sources.add(Path(doc.get("_path", doc["suite"])).name)
            key = tuple(rec[k] for k in KEY)
            if all(k in rec for k in SETTINGS) and doc["suite"].endswith("sweep"):
                swept.setdefault(key, []).append(rec)
                continue
            by_mode = measured.setdefault(key, {})
            by_mode.setdefault(rec["mode"], {})[rec["backend"]] = rec["median_s"]
            for field, section in (("temp_bytes", "temporaries"), ("compile_s", "compile")):
                if field in rec:
                    recorded = by_mode.setdefault(section, {}).setdefault(rec["mode"], {})
                    recorded[rec["backend"]] = rec[field]
        # A shape's medians all come from one run (the newest that measured it): only ratios
        # within a run hold on a shared machine, and auto compares backends by them.
        medians.setdefault(platform, {}).update(measured)
        for key, recs in swept.items():
            for mode in sorted({r["mode"] for r in recs}):
                best = quickest_to_compile_of_the_fastest([r for r in recs if r["mode"] == mode])
                settings = {k: best[k] for k in SETTINGS}
                settings.update({k: best.get(k, v) for k, v in LATER_SETTINGS.items()})
                sweeps.setdefault(platform, {})[(*key, mode)] = settings
    return {
        "schema": common.SCHEMA_VERSION,
        "sources": sorted(sources),
        "backends": {
            platform: [
                dict(zip(KEY, key, strict=True), **modes) for key, modes in sorted(rows.items())
            ]
            for platform, rows in sorted(medians.items())
        },
        "sequential": {
            platform: [
                dict(zip((*KEY, "mode"), key, strict=True), **settings)
                for key, settings in sorted(rows.items())
            ]
            for platform, rows in sorted(sweeps.items())
        },
    }


def render(table: dict[str, Any]) -> str:
    return json.dumps(table, indent=1, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=common.RESULTS_DIR)
    parser.add_argument("--out", type=Path, default=TABLE_PATH)
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    text = render(build(common.load_results(args.results)))
    if args.check:
        current = args.out.read_text() if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is stale: run python benchmarks/dispatch_table.py")
            return 1
        print(f"{args.out} is up to date")
        return 0
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
