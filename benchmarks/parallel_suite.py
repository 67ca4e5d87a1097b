"""Parallel-in-time suite: time against T for ``sequential``, ``parallel`` and ``newton``.

One command, on whatever platform JAX sees (CPU here, a GPU elsewhere)::

    python benchmarks/parallel_suite.py            # the platform's grid (CPU: ~10 minutes)
    python benchmarks/parallel_suite.py --quick    # a smoke run, never used by ``auto``

On a GPU the same command runs the GPU grid: the shapes of the issue's targets
(parallel >= 20x sequential at T = 4,096, B = 16, H = 256; newton >= 5x
sequential for GRU at T = 16,384) and the T sweep up to 65,536. Where one
command may run at most 10 minutes, split it: ``--groups linear`` then
``--groups variants,newton``; each writes its own results file.

Groups:

- ``linear``: min_gru, min_lstm, lru, rg_lru; ``sequential`` against
  ``parallel`` (the registered default: chunked scan on CPU, associative
  scan on GPU/TPU) for T = 64 ... 65,536, forward and forward+backward.
- ``variants``: the ``parallel`` methods side by side at a few T (the
  associative scan, the chunked scan with chunk 4, 8, 16, the log-space scan),
  at another batch size than the sweep's (so no shape is recorded twice), and
  on CPU the issue's reference shape T = 4,096, B = 16, H = 256 for min_gru
  (on GPU the sweep covers it). Their records name ``parallel[method]`` (not
  registered names, so ``auto`` ignores them); the default configuration is
  also recorded as ``parallel``.
- ``newton``: gru, lstm and simple through ``newton`` (full Jacobians for a
  small state, the diagonal for a large one) against ``sequential``.

Every record follows `common` (``cell, backend, B, T, I, H, dtype, mode,
median_s``); newton records add ``iterations``, the Newton iterations of one
forward solve. Forward+backward is the gradient with respect to the parameters
and the inputs of `common.training_loss` (an MSE against a fixed target).
Results: ``benchmarks/results/parallel_suite-<platform>-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

try:
    from benchmarks import common
except ImportError:  # run as ``python benchmarks/parallel_suite.py``
    import common

import rnn_jax as rj

GROUPS = ("linear", "variants", "newton")
LINEAR_CELLS = ("min_gru", "min_lstm", "lru", "rg_lru")
SWEEP = (64, 256, 1024, 4096, 16384, 65536)

# Per platform: the T sweep's B, I, H; the variants' cells and T; newton's cases.
GRIDS: dict[str, dict[str, Any]] = {
    "cpu": {
        "linear": {"B": 2, "I": 32, "H": 64, "T": SWEEP},
        "variants": {"cells": ("min_gru", "lru"), "B": 4, "I": 32, "H": 64, "T": (256, 4096)},
        "reference_shape": common.Shape(16, 4096, 256, 256),
        "newton": [
            # (cell, B, I, H, T values): H=16 (gru, simple) and H=8 (lstm: 16 numbers) use full
            # Jacobians, H=64 the diagonal (quasi-DEER)
            ("gru", 4, 16, 16, (64, 256, 1024, 4096)),
            ("lstm", 4, 16, 8, (64, 1024)),
            ("simple", 4, 16, 16, (64, 1024)),
            ("gru", 4, 64, 64, (256, 1024)),
        ],
    },
    "gpu": {
        "linear": {"B": 16, "I": 256, "H": 256, "T": SWEEP},
        "variants": {"cells": LINEAR_CELLS, "B": 8, "I": 256, "H": 256, "T": (1024, 4096, 65536)},
        "reference_shape": None,  # the sweep's T = 4,096 point
        "newton": [
            ("gru", 16, 256, 256, (1024, 4096, 16384)),
            ("gru", 16, 32, 16, (1024, 16384)),
            ("lstm", 16, 32, 16, (1024, 16384)),
            ("simple", 16, 256, 256, (1024, 16384)),
        ],
    },
}
GRIDS["tpu"] = GRIDS["gpu"]
QUICK = {
    "linear": {"cells": ("min_gru", "lru"), "T": (64, 1024, 16384)},
    "variants": {"cells": ("min_gru",), "T": (1024,)},
    "newton": [("gru", 4, 16, 16, (256,))],
}
VARIANTS = {
    "parallel[associative]": rj.backends.Parallel(method="associative"),
    "parallel[chunked4]": rj.backends.Parallel(method="chunked", chunk=4),
    "parallel[chunked8]": rj.backends.Parallel(method="chunked", chunk=8),
    "parallel[chunked16]": rj.backends.Parallel(method="chunked", chunk=16),
    "parallel[log]": rj.backends.Parallel(log_space=True),
}


def inputs(cell, shape: common.Shape, seed: int = 0):
    params = cell.init(jax.random.key(seed), shape.I)
    xs = jax.random.normal(jax.random.key(seed + 1), (shape.T, shape.B, shape.I), jnp.float32)
    return params, xs


def compiled(cell, backend, mode: str, params, xs):
    """A jitted function of ``(params, xs)`` for one backend and mode."""
    if mode == "forward":
        return jax.jit(lambda p, x: rj.scan(cell, p, x, backend=backend))

    apply = lambda p, x: rj.scan(cell, p, x, backend=backend)[1]  # noqa: E731
    return jax.jit(jax.grad(common.training_loss(apply, params, xs), argnums=(0, 1)))


class Suite:
    def __init__(self, args, platform: str):
        self.args = args
        self.platform = platform
        self.grid = GRIDS[platform]
        self.records: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.rounds = 3 if args.quick else 7

    def error(self, case: dict[str, Any], exc: BaseException) -> None:
        message = f"{type(exc).__name__}: {exc}"
        self.errors.append({**case, "error": message[:2000]})
        print(f"  ERROR {case}: {message[:300]}", flush=True)

    def measure(self, cell, shape: common.Shape, backends: dict[str, Any], mode: str, **extra):
        """Times every backend on one cell, shape and mode (interleaved); records medians."""
        params, xs = inputs(cell, shape)
        cases = {}
        for name, backend in backends.items():
            run = common.blocking(compiled(cell, backend, mode, params, xs), params, xs)
            try:
                start = time.perf_counter()
                run()  # compile here, so a failure names its backend
                compile_s = time.perf_counter() - start
            except Exception as exc:  # noqa: BLE001  (recorded, the suite goes on)
                self.error({"cell": cell.name, "backend": name, "mode": mode, "T": shape.T}, exc)
                continue
            cases[name] = run
            print(f"  compiled {name} in {compile_s:.1f} s", flush=True)
        if not cases:
            return {}
        stats = common.interleaved(
            cases, rounds=self.rounds, per_round=1, warmup=1, budget_s=self.args.budget
        )
        base = stats.get("sequential")
        for name, st in stats.items():
            rec = common.record(
                cell=cell.name,
                backend=name,
                shape=shape,
                dtype="float32",
                mode=mode,
                stats=st,
                **extra.get(name, {}),
            )
            self.records.append(rec)
            ratio = f"  ({base.median_s / st.median_s:6.2f}x sequential)" if base else ""
            print(f"  {name:>22}: {st.median_s * 1e3:10.3f} ms{ratio}", flush=True)
        return stats

    def section(self, cell, shape, backends, **extra):
        for mode in common.MODES:
            print(f"{cell.name} {shape.label} {mode}", flush=True)
            try:
                self.measure(cell, shape, backends, mode, **extra)
            except Exception as exc:  # noqa: BLE001
                traceback.print_exc()
                self.error({"cell": cell.name, "T": shape.T, "mode": mode}, exc)

    # ------------------------------------------------------------------ groups

    def group_linear(self):
        grid = self.grid["linear"]
        cells = QUICK["linear"]["cells"] if self.args.quick else LINEAR_CELLS
        steps = QUICK["linear"]["T"] if self.args.quick else grid["T"]
        for name in cells:
            cell = getattr(rj, name)(grid["H"])
            for T in steps:
                shape = common.Shape(grid["B"], T, grid["I"], grid["H"])
                self.section(cell, shape, {"sequential": "sequential", "parallel": "parallel"})

    def group_variants(self):
        grid = self.grid["variants"]
        cells = QUICK["variants"]["cells"] if self.args.quick else grid["cells"]
        steps = QUICK["variants"]["T"] if self.args.quick else grid["T"]
        for name in cells:
            cell = getattr(rj, name)(grid["H"])
            backends = {"sequential": "sequential", "parallel": "parallel"}
            backends.update(
                {
                    k: v
                    for k, v in VARIANTS.items()
                    if k != "parallel[log]" or name.startswith("min")
                }
            )
            for T in steps:
                self.section(cell, common.Shape(grid["B"], T, grid["I"], grid["H"]), backends)
        shape = self.grid["reference_shape"]
        if shape is not None and not self.args.quick:
            backends = {
                "sequential": "sequential",
                "parallel": "parallel",
                "parallel[associative]": VARIANTS["parallel[associative]"],
                "parallel[chunked8]": VARIANTS["parallel[chunked8]"],
            }
            self.section(rj.min_gru(shape.H), shape, backends)

    def group_newton(self):
        cases = QUICK["newton"] if self.args.quick else self.grid["newton"]
        for name, B, I, H, steps in cases:  # noqa: E741  (the schema's name)
            cell = getattr(rj, name)(H)
            for T in steps:
                shape = common.Shape(B, T, I, H)
                params, xs = inputs(cell, shape)
                info = jax.jit(lambda p, x, c=cell: rj.newton_scan(c, p, x)[2])(params, xs)
                extra = {
                    "newton": {
                        "iterations": int(info.iterations),
                        "converged": bool(info.converged),
                    }
                }
                print(f"{name} {shape.label}: newton {int(info.iterations)} iterations, "
                      f"converged={bool(info.converged)}", flush=True)  # fmt: skip
                self.section(cell, shape, {"sequential": "sequential", "newton": "newton"}, **extra)


def summary(records: list[dict[str, Any]]) -> str:
    """A table of sequential/backend speed ratios per cell, shape and mode."""
    seq = {
        (r["cell"], r["B"], r["T"], r["I"], r["H"], r["mode"]): r["median_s"]
        for r in records
        if r.get("backend") == "sequential"
    }
    rows = []
    for r in records:
        key = (r["cell"], r["B"], r["T"], r["I"], r["H"], r["mode"])
        if r.get("backend") in (None, "sequential") or key not in seq:
            continue
        rows.append(
            [
                r["cell"],
                f"B{r['B']} T{r['T']} I{r['I']} H{r['H']}",
                r["mode"],
                r["backend"],
                seq[key] * 1e3,
                r["median_s"] * 1e3,
                seq[key] / r["median_s"],
            ]  # fmt: skip
        )
    header = ["cell", "shape", "mode", "backend", "sequential ms", "backend ms", "speed-up"]
    return common.markdown_table(header, rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--groups", default=",".join(GROUPS), help=f"comma list of {GROUPS}")
    parser.add_argument("--quick", action="store_true", help="a smoke run: few cells and shapes")
    parser.add_argument("--out", type=Path, default=common.RESULTS_DIR, help="results folder")
    parser.add_argument(
        "--budget", type=float, default=4.0, help="seconds of timing per group of cases"
    )
    args = parser.parse_args(argv)
    groups = common.chosen_groups(parser, args.groups, GROUPS)
    platform = jax.default_backend()
    if platform not in GRIDS:
        print(f"no grid for platform {platform!r}", file=sys.stderr)
        return 2
    suite = Suite(args, platform)
    start = time.perf_counter()
    for group in groups:
        try:
            getattr(suite, f"group_{group}")()
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            suite.error({"group": group}, exc)
    path = common.write_results(
        "parallel_suite",
        suite.records,
        machine=common.machine_info(),
        quick=args.quick,
        directory=args.out,
        groups=groups,
        errors=suite.errors,
        wall_s=round(time.perf_counter() - start, 1),
    )
    print(summary(suite.records))
    print(f"wrote {path} ({len(suite.records)} records, {len(suite.errors)} errors)")
    return 1 if suite.errors else 0


if __name__ == "__main__":
    sys.exit(main())
