"""CPU suite: rnn_jax's scan backends side by side with Flax, Equinox, Keras 3 (JAX) and PyTorch.

Times the forward pass and forward+backward of ``lstm``, ``gru`` and
``simple`` layers at shapes S (B16 T256 I32 H64), M (B32 T128 I64 H256) and L
(B64 T64 I128 H512), float32, in one process, interleaved, medians after
compilation. Forward+backward is what training does: the gradient, with
respect to the parameters *and* the inputs (as a layer inside a stack needs),
of the mean squared error against a fixed random target, whose cotangent
depends on the outputs; every implementation, ours and the peers', is timed
on the same loss. (``--with-sum`` adds the gradient of ``sum(outputs)``, a
constant cotangent no training run has, as a labelled extra mode.) Prints a
table of times and ratios and writes JSON (machine, versions, shapes, medians,
achieved FLOP rates, this run's GEMM rate) into ``benchmarks/results/``.

    python benchmarks/cpu_suite.py --peers flax,equinox,keras
                                                   # the comparison (~10 min on 2 cores)
    python benchmarks/cpu_suite.py --quick         # a smoke run: few repetitions, not for dispatch
    python benchmarks/cpu_suite.py --sweep         # sequential's settings per shape and mode
    python benchmarks/cpu_suite.py --vmap          # jax.vmap of rj.scan against the batched call
    python benchmarks/cpu_suite.py --backends sequential --peers "" --onednn-threads 2
                                                   # oneDNN on two OpenMP threads per call
                                                   # (an OpenMP build of oneDNN only)
    python benchmarks/cpu_suite.py --backends auto --baseline auto --peers torch,flax
                                                   # the targets, met by what auto picks
    python benchmarks/dispatch_table.py            # then rebuild rnn_jax/backends/dispatch.json

``--sweep`` records each variant's compile time; the dispatch table takes, of
the variants within 10% of the fastest, the quickest to compile. A full sweep
keeps 28 programs alive in one process, which slows the large unrolled ones
more than rolled loops (GRU M training: unrolled chunks of 8 and rolled chunks
of 16 tied at 99 ms in the full sweep; alone, 78.5 against 97.9 ms). So a tie
the full sweep finds is timed again on its own, and that newer sweep decides::

    python benchmarks/cpu_suite.py --sweep --cells gru --shapes M --loops 0,3

``--profile`` adds, per rnn_jax case, the time per XLA operation (from
``jax.profiler``), the evidence for what bounds a case.

``onednn`` (oneDNN's fused kernels through XLA's FFI) is timed with its
default threads: the ``onednn`` extra's SYCL build schedules its own over every
core; an OpenMP build (``onednn-cpu-gomp``) runs on the calling thread alone.
``--onednn-threads`` adds, for an OpenMP build, variants with that many threads
per call, recorded with ``"threads"`` (which the dispatch table leaves out; a
SYCL build refuses them). Where the kernels are absent or refuse a cell, the
suite says so and times the rest. OpenMP workers spin after a call: time more
than one OpenMP thread in a process of their own, and never beside PyTorch,
whose own OpenMP runtime spins on the same cores (every case, XLA's included,
then runs up to 2x slower). The dispatch table's ``onednn`` medians come from a
run without PyTorch (``--peers ""``).

Environment: the suite sets ``OPENBLAS_NUM_THREADS=1`` before NumPy loads (no
timed code uses NumPy's BLAS, whose idle threads otherwise spin on the same
cores) and ``KERAS_BACKEND=jax``. It sets no XLA flags: rnn_jax runs as a
user's ``jax.jit`` would compile it.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("KERAS_BACKEND", "jax")

import argparse  # noqa: E402
import itertools  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import rnn_jax as rj  # noqa: E402
from rnn_jax.backends import OneDNN, Sequential, auto, contract  # noqa: E402
from rnn_jax.backends.problem import describe  # noqa: E402

SHAPES = {
    "S": common.Shape(16, 256, 32, 64),
    "M": common.Shape(32, 128, 64, 256),
    "L": common.Shape(64, 64, 128, 512),
}
CELLS = ("lstm", "gru", "simple")
BACKENDS = ("sequential", "checkpointed", "reference", "onednn")
PEERS = ("torch", "flax", "equinox", "keras")
# --sweep: residuals x loop shapes. A chunk unrolled whole (unroll=True) reads its steps at
# static offsets, so it needs no pipelining; rolled loops are tried with and without.
# ("store" is swept again since the forward step reads gate blocks (`Gates.blocks`), which
# left it the quickest GRU gradient to compile; chunks of 32 never won in
# cpu_sweep-cpu-20261122T003941Z.json; unroll 2 or 4
# in rolled loops won only for the Elman cell in cpu_sweep-cpu-20261122T012018Z.json.)
# Whole chunks of 16 unrolled are not tried: they compile 3-5x slower than rolled loops
# (a GRU's gradient at H16: 7.4 s against 0.9 s; chunks of 8, 2.9 s). Every variant names
# every setting, so none falls back to the packaged table's choice.
SWEEP_RESIDUALS = ("recompute", "carries", "store")
SWEEP_LOOPS = tuple(
    {"chunk": chunk, "unroll": unroll, "pipeline": pipeline, "weight_grads": weight_grads}
    for chunk, unroll, pipeline, weight_grads in (
        (8, True, False, "per_chunk"),
        (8, True, False, "after_sweep"),
        (8, 2, False, "per_chunk"),
        (16, 1, True, "per_chunk"),
        (16, 1, False, "per_chunk"),
        (0, 1, True, "per_chunk"),
        (0, 1, False, "per_chunk"),
    )
)

Case = Callable[[], Any]
LOSS = (
    "forward_backward: gradient with respect to the parameters and the inputs of the mean "
    "squared error against a fixed random target (every implementation alike); "
    "forward_backward_sum (--with-sum only): of sum(outputs)"
)


# ----------------------------------------------------------------------------- cases


def jax_cases(apply, params, x, modes=common.MODES) -> dict[str, Case]:
    """The ``modes`` of ``apply(params, x) -> outputs``, compiled: the forward, the gradient
    of `common.training_loss` with respect to the parameters and the inputs, and (extra)
    of ``sum(outputs)``; each case's ``compile_s`` is XLA's compile time."""
    losses = {
        "forward_backward": common.training_loss(apply, params, x),
        "forward_backward_sum": lambda p, x: jnp.sum(apply(p, x)),
    }
    cases = {}
    for mode in modes:
        function = apply if mode == "forward" else jax.grad(losses[mode], argnums=(0, 1))
        lowered = jax.jit(function).lower(params, x)
        start = time.perf_counter()
        compiled = lowered.compile()
        cases[mode] = common.blocking(compiled, params, x)
        cases[mode].compile_s = time.perf_counter() - start  # the sweep weighs it
    return cases


def rnn_jax_cases(cell_name, shape, backend, modes, *, vmap: bool = False) -> dict[str, Case]:
    """Our layer on time-major ``[T, B, I]``; with ``vmap``, ``jax.vmap`` of a call on one
    ``[T, I]`` sequence over batch-major ``[B, T, I]`` (what research code writes)."""
    cell = getattr(rj, cell_name)(shape.H)
    params = cell.init(jax.random.key(0), shape.I)
    x = jax.random.normal(jax.random.key(1), (shape.T, shape.B, shape.I))

    def one(p, x):
        return rj.scan(cell, p, x, backend=backend)[1]

    if vmap:
        return jax_cases(jax.vmap(one, in_axes=(None, 0)), params, x.swapaxes(0, 1), modes)
    return jax_cases(one, params, x, modes)


def flax_cases(cell_name, shape, modes) -> dict[str, Case] | None:
    import flax.linen as nn

    cell = {"lstm": nn.OptimizedLSTMCell, "gru": nn.GRUCell, "simple": nn.SimpleCell}[cell_name]
    model = nn.RNN(cell(shape.H))
    x = jax.random.normal(jax.random.key(1), (shape.B, shape.T, shape.I))
    params = model.init(jax.random.key(0), x)
    return jax_cases(model.apply, params, x, modes)


def equinox_cases(cell_name, shape, modes) -> dict[str, Case] | None:
    built = common.equinox_layer(cell_name, shape)
    return None if built is None else jax_cases(*built, modes)


def keras_cases(cell_name, shape, modes) -> dict[str, Case] | None:
    import keras

    layer_type = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU}
    layer = layer_type.get(cell_name, keras.layers.SimpleRNN)(shape.H, return_sequences=True)
    layer.build((shape.B, shape.T, shape.I))
    trainable = [v.value for v in layer.trainable_variables]
    frozen = [v.value for v in layer.non_trainable_variables]
    x = jax.random.normal(jax.random.key(1), (shape.B, shape.T, shape.I))
    return jax_cases(lambda tv, x: layer.stateless_call(tv, frozen, x)[0], trainable, x, modes)


def torch_cases(cell_name, shape, modes) -> dict[str, Case] | None:
    import torch

    torch.manual_seed(0)
    module = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "simple": torch.nn.RNN}[cell_name]
    layer = module(shape.I, shape.H)  # time-major, as rnn_jax
    x = torch.randn(shape.T, shape.B, shape.I, requires_grad=True)
    with torch.no_grad():
        target = torch.randn_like(layer(x)[0])

    def forward():
        with torch.no_grad():
            layer(x)

    def gradient(loss):
        def run():
            x.grad = None
            for p in layer.parameters():
                p.grad = None
            loss(layer(x)[0]).backward()

        return run

    cases = {
        "forward": forward,
        "forward_backward": gradient(lambda ys: ((ys - target) ** 2).mean()),
        "forward_backward_sum": gradient(lambda ys: ys.sum()),
    }
    return {mode: cases[mode] for mode in modes}


PEER_CASES = {
    "torch": torch_cases,
    "flax": flax_cases,
    "equinox": equinox_cases,
    "keras": keras_cases,
}


# ----------------------------------------------------------------------------- main


def variant_name(settings: dict[str, Any]) -> str:
    return "sequential[" + ",".join(f"{k}={v}" for k, v in settings.items()) + "]"


def measure(cases, meta, cell_name, label, shape, args, machine) -> list[dict[str, Any]]:
    """Interleaved medians of ``cases`` (name -> mode -> case), as records."""
    records = []
    for mode in args.modes:
        runs = {name: modes[mode] for name, modes in cases.items()}
        stats = common.interleaved(
            runs, rounds=args.rounds, per_round=args.per_round, budget_s=args.budget
        )
        for name, st in stats.items():
            extra = dict(meta[name])
            extra.update(extra.pop("tuned", {}).get(mode, {}))
            if hasattr(runs[name], "compile_s"):  # JAX cases; PyTorch compiles nothing
                extra["compile_s"] = runs[name].compile_s
            if args.profile and extra.get("backend") == "sequential" and not args.sweep:
                extra["profile"] = common.op_profile(runs[name])
            rec = common.record(
                cell=cell_name, shape=shape, dtype="float32", mode=mode, stats=st, **extra
            )
            rec["shape_label"] = label
            rec["gemm_fraction"] = rec.get("gflops", 0.0) / machine["gemm_gflops"]
            records.append(rec)
        ranked = sorted(stats.items(), key=lambda item: item[1])
        print(
            f"  {cell_name} {label} {mode}: "
            + ", ".join(f"{n} {s.median_s * 1e3:.2f} ms" for n, s in ranked),
            flush=True,
        )
    return records


def sweep_shape(cell_name, label, shape, args, machine) -> list[dict[str, Any]]:
    """Sequential's settings: every residual mode with every loop shape."""

    def variants(grid):
        cases, meta = {}, {}
        for settings in grid:
            name = variant_name(settings)
            cases[name] = rnn_jax_cases(cell_name, shape, Sequential(**settings), args.modes)
            meta[name] = {"backend": "sequential", **settings}
        return cases, meta

    loops = [SWEEP_LOOPS[i] for i in args.loops] if args.loops else SWEEP_LOOPS
    grid = [{**loop, "residuals": r} for r, loop in itertools.product(SWEEP_RESIDUALS, loops)]
    return measure(*variants(grid), cell_name, label, shape, args, machine)


def vmap_shape(cell_name, label, shape, args, machine) -> list[dict[str, Any]]:
    """``jax.vmap`` over batch-major sequences against the batched call, each backend."""
    cases, meta = {}, {}
    for backend in args.backends:
        cases[backend] = rnn_jax_cases(cell_name, shape, backend, args.modes)
        meta[backend] = {"backend": backend}
        vmapped = rnn_jax_cases(cell_name, shape, backend, args.modes, vmap=True)
        cases[f"{backend}[vmap]"] = vmapped
        meta[f"{backend}[vmap]"] = {"backend": backend, "vmap": True}
    return measure(cases, meta, cell_name, label, shape, args, machine)


def problem_of(cell_name, shape):
    """``(cell, problem)`` of a layer at ``shape``, as shapes."""
    cell = getattr(rj, cell_name)(shape.H)
    params = jax.eval_shape(lambda key: cell.init(key, shape.I), jax.random.key(0))
    xs = jax.ShapeDtypeStruct((shape.T, shape.B, shape.I), jnp.float32)
    return cell, describe(cell, params, xs)


def rnn_jax_variants(cell_name, shape, args) -> dict[str, tuple[Any, dict[str, Any]]]:
    """``name -> (backend, record fields)`` of the backends timed here: ``args.backends`` and
    the ``--onednn-threads`` variants, less those that refuse this cell (said on stdout)."""
    variants = {b: (b, {"backend": b}) for b in args.backends}
    for n in args.onednn_threads:
        variants[f"onednn[threads={n}]"] = (OneDNN(threads=n), {"backend": "onednn", "threads": n})
    cell, problem = problem_of(cell_name, shape)
    usable = {}
    for name, (backend, fields) in variants.items():
        reason = None  # auto runs whatever it chooses
        if backend != "auto":
            chosen = rj.backends.get(backend) if isinstance(backend, str) else backend
            reason = contract.refusal(chosen, cell, problem)
        if reason is None:
            usable[name] = (backend, fields)
        else:
            print(f"  {cell_name} {shape.label}: {name} skipped: {reason}")
    return usable


def measure_shape(cell_name, label, shape, args, machine) -> list[dict[str, Any]]:
    """All cases of one cell and shape, interleaved; returns their records."""
    if args.sweep:
        return sweep_shape(cell_name, label, shape, args, machine)
    if args.vmap:
        return vmap_shape(cell_name, label, shape, args, machine)
    cases: dict[str, dict[str, Case]] = {}
    meta: dict[str, dict[str, Any]] = {}
    for name, (backend, fields) in rnn_jax_variants(cell_name, shape, args).items():
        cases[name] = rnn_jax_cases(cell_name, shape, backend, args.modes)
        meta[name] = dict(fields)
        if backend == "sequential":  # the settings each mode runs with, recorded with it
            cell, problem = problem_of(cell_name, shape)
            meta[name]["tuned"] = {
                mode: auto.tuned_sequential(cell, problem._replace(gradient=mode != "forward"))
                for mode in args.modes
            }
    for peer in args.peers:
        built = PEER_CASES[peer](cell_name, shape, args.modes)
        if built is not None:
            cases[peer] = built
            meta[peer] = {"library": peer}
    return measure(cases, meta, cell_name, label, shape, args, machine)


def who(record: dict[str, Any]) -> str:
    """What a record timed: a peer library, a backend, or a backend's thread variant."""
    name = record.get("library") or record["backend"]
    return f"{name}[threads={record['threads']}]" if "threads" in record else name


def ratio_table(records: list[dict[str, Any]], baseline: str = "sequential") -> str:
    """Per cell, shape and mode: ``baseline``'s median and every other's median / its."""
    keyed = {(r["cell"], r["shape_label"], r["mode"], who(r)): r["median_s"] for r in records}
    others = sorted({who(r) for r in records} - {baseline})
    header = ["cell", "shape", "mode", f"{baseline} ms", *[f"{o} / ours" for o in others]]
    rows = []
    for (cell, label, mode, name), ours in sorted(keyed.items()):
        if name != baseline:
            continue
        ratios = [keyed.get((cell, label, mode, o)) for o in others]
        rows.append([cell, label, mode, ours * 1e3, *[r / ours if r else None for r in ratios]])
    return common.markdown_table(header, rows)


# The targets: (peer, mode, how many times longer the peer must take at least, cells).
# LSTM and GRU faster than PyTorch in forward+backward, the forward within 1.0x of it,
# and forward+backward at least 1.3x faster than Flax.
TARGETS = (
    ("torch", "forward_backward", 1.0, ("lstm", "gru")),
    ("torch", "forward", 1.0, ("lstm", "gru")),
    ("flax", "forward_backward", 1.3, ("lstm", "gru")),
)


def targets_reached(records: list[dict[str, Any]], baseline: str = "sequential") -> list[dict]:
    """Per target, cell and shape: the peer's median over ours, and whether the target holds."""
    median = {(r["cell"], r["shape_label"], r["mode"], who(r)): r["median_s"] for r in records}
    report = []
    for peer, mode, at_least, cells in TARGETS:
        for cell, label, m, timed in sorted(median):
            if timed != baseline or m != mode or cell not in cells:
                continue
            theirs = median.get((cell, label, mode, peer))
            if theirs is None:
                continue
            ratio = theirs / median[(cell, label, mode, timed)]
            report.append(
                {
                    "cell": cell,
                    "shape_label": label,
                    "mode": mode,
                    "peer": peer,
                    "peer_over_ours": round(ratio, 3),
                    "required": round(at_least, 3),
                    "reached": ratio >= at_least,
                }
            )
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repetitions; not for dispatch")
    parser.add_argument("--sweep", action="store_true", help="sequential's settings per shape")
    parser.add_argument("--profile", action="store_true", help="per-op profile of rnn_jax cases")
    parser.add_argument("--vmap", action="store_true", help="vmap over sequences vs batched")
    parser.add_argument(
        "--with-sum", action="store_true", help="also time the gradient of sum(outputs)"
    )
    parser.add_argument("--cells", default=",".join(CELLS))
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--peers", default=",".join(PEERS))
    parser.add_argument(
        "--onednn-threads", default="", help="e.g. 1,2: onednn variants with that many threads"
    )
    parser.add_argument(
        "--baseline", default="sequential", help="the backend the ratios and targets are of"
    )
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--per-round", type=int, default=None)
    parser.add_argument("--budget", type=float, default=None, help="seconds per shape and mode")
    parser.add_argument(
        "--loops",
        default="",
        help="with --sweep, e.g. 0,3: only these of SWEEP_LOOPS ("
        + "; ".join(f"{i}: {loop}" for i, loop in enumerate(SWEEP_LOOPS))
        + "), so that a few close variants are timed without the others' programs alive",
    )
    parser.add_argument("--out", type=Path, default=common.RESULTS_DIR)
    args = parser.parse_args(argv)
    args.backends = [b for b in args.backends.split(",") if b]
    args.peers = [] if args.vmap else [p for p in args.peers.split(",") if p]
    args.onednn_threads = [int(n) for n in args.onednn_threads.split(",") if n]
    args.loops = [int(i) for i in args.loops.split(",") if i]
    args.modes = common.MODES + common.EXTRA_MODES if args.with_sum else common.MODES
    if args.rounds is None:
        args.rounds = 3 if args.quick else (6 if args.sweep else 12)
    if args.per_round is None:
        args.per_round = 1 if args.quick else 3
    if args.budget is None:
        args.budget = 10.0 if args.quick else (60.0 if args.sweep else 120.0)

    gemm = common.gemm_gflops()
    machine = common.machine_info(gemm_gflops=gemm)
    if "torch" in args.peers:
        import torch

        machine["torch_threads"] = torch.get_num_threads()
    print(f"machine: {machine['cpu']}, {machine['cores']} cores; float32 GEMM {gemm:.0f} GFLOP/s")
    records = []
    for cell_name in args.cells.split(","):
        for label in args.shapes.split(","):
            records += measure_shape(cell_name, label, SHAPES[label], args, machine)
    machine["gemm_gflops_after"] = common.gemm_gflops()
    machine["load_average_1min_after"] = common.load_average()
    # A --profile run (often of a few cases) is for reading, not for choosing backends.
    suite = "cpu_sweep" if args.sweep else ("cpu_profile" if args.profile else "cpu_suite")
    suite = "cpu_vmap" if args.vmap else suite
    extra = {} if args.sweep else {"targets": targets_reached(records, args.baseline)}
    extra["loss"] = LOSS
    path = common.write_results(
        suite, records, machine=machine, quick=args.quick, directory=args.out, **extra
    )
    if not args.sweep:
        print(ratio_table(records, args.baseline))
        rows = [
            [
                t["cell"],
                t["shape_label"],
                t["mode"],
                t["peer"],
                t["peer_over_ours"],
                t["required"],
                "yes" if t["reached"] else "no",
            ]
            for t in extra["targets"]
        ]
        header = ["cell", "shape", "mode", "peer", "peer / ours", "required", "reached"]
        print(common.markdown_table(header, rows))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
