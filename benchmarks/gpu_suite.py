"""GPU suite: the Pallas kernels and cuDNN against lax.scan and PyTorch, on one GPU.

One command on a machine with an NVIDIA GPU::

    python benchmarks/gpu_suite.py                 # all groups (estimated 10-15 minutes)
    python benchmarks/gpu_suite.py --quick         # fewer repetitions (never used by auto)

Where one command may run at most 10 minutes, run the groups in two commands,
each writing its own results file::

    python benchmarks/gpu_suite.py --groups checks,fused
    python benchmarks/gpu_suite.py --groups cudnn,linear

It writes ``benchmarks/results/gpu_suite-gpu-<UTC time>.json`` in the schema
of `common` (the device is named in ``machine.device_kind``), with two extra
fields: ``checks`` (the kernels compiled for the GPU against the reference
backend: largest differences of values and gradients) and ``errors`` (cases
that failed to compile or run, with the message, instead of stopping the run).

Groups:

- ``checks``: correctness of the compiled kernels (not interpret mode) for
  every supported cell, with lengths and reverse, float32, small shapes; and
  the bf16 FlashRNN shapes' forward values against the reference.
- ``fused``: the FlashRNN shapes: bf16, B=16, T=1024, hidden 768 as
  (head size, heads) in (64, 12), (128, 6), (256, 3), (768, 1), for lstm, gru
  and simple (multi-head cells below 768), ``pallas`` against ``sequential``
  and ``reference`` (plain lax.scan), and PyTorch's cuDNN ``nn.LSTM/GRU/RNN``
  for the dense (768, 1) case when PyTorch sees a CUDA device.
- ``cudnn``: dense float32 LSTMs, ``cudnn`` against ``sequential``, ``pallas``
  and PyTorch's cuDNN.
- ``linear``: the linear-recurrence cells, ``pallas`` (linear-scan kernel)
  against ``parallel`` (when registered) and ``sequential``.

On a CPU the suite refuses to run unless ``--allow-cpu``, which runs tiny
shapes in interpret mode to check the script itself (``--quick`` implied).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

try:
    from benchmarks import common
except ImportError:  # run as ``python benchmarks/gpu_suite.py``
    import common

import rnn_jax as rj

GROUPS = ("checks", "fused", "cudnn", "linear")
FLASHRNN_HEADS = ((64, 12), (128, 6), (256, 3), (768, 1))
GATED_KINDS = ("lstm", "gru", "simple")


def gated_cell(kind: str, hidden: int, heads: int, dtype) -> rj.Cell:
    """The dense cell for one head, else the block-diagonal multi-head cell."""
    if heads == 1:
        return {"lstm": rj.lstm, "gru": rj.gru, "simple": rj.simple}[kind](hidden, dtype=dtype)
    factory = {"lstm": rj.multihead_lstm, "gru": rj.multihead_gru, "simple": rj.multihead_simple}
    return factory[kind](hidden, heads, dtype=dtype)


def linear_cells() -> dict[str, Callable[[int], rj.Cell]]:
    names = ("min_gru", "min_lstm", "lru", "rg_lru")
    return {name: getattr(rj, name) for name in names if hasattr(rj, name)}


class Suite:
    def __init__(self, args):
        self.args = args
        self.records: list[dict[str, Any]] = []
        self.checks: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.rounds = 3 if args.quick else 10
        self.budget = args.budget

    # ------------------------------------------------------------------ helpers

    def error(self, case: dict[str, Any], exc: BaseException) -> None:
        message = f"{type(exc).__name__}: {exc}"
        self.errors.append({**case, "error": message[:2000]})
        print(f"  ERROR {case}: {message[:300]}", flush=True)

    def jax_cases(self, cell, params, xs, backends, mode):
        """Zero-argument blocking callables per backend, compiled (warm-up inside timing)."""
        cases = {}
        for backend in backends:
            if mode == "forward":
                fn = jax.jit(lambda p, x, b=backend: rj.scan(cell, p, x, backend=b)[1])
            else:

                def loss(p, x, b=backend):
                    carry, ys = rj.scan(cell, p, x, backend=b)
                    return jnp.sum(ys.astype(jnp.float32))

                fn = jax.jit(jax.grad(loss, argnums=(0, 1)))
            run = common.blocking(fn, params, xs)
            try:
                run()  # compile here, so a failure names its backend
            except Exception as exc:  # noqa: BLE001  (recorded, the suite goes on)
                self.error({"cell": cell.name, "backend": backend, "mode": mode}, exc)
                continue
            cases[backend] = run
        return cases

    def time(self, cases, make_record):
        if not cases:
            return
        stats = common.interleaved(cases, rounds=self.rounds, per_round=3, budget_s=self.budget)
        for name, st in stats.items():
            rec = make_record(name, st)
            self.records.append(rec)
            print(f"  {name:>12}: {st.median_s * 1e3:9.3f} ms", flush=True)

    # ------------------------------------------------------------------ checks

    def max_errors(self, cell, params, xs, c0, length, reverse, backend):
        def run(backend):
            def loss(p, x, c):
                carry, ys = rj.scan(
                    cell, p, x, initial_state=c, length=length, reverse=reverse, backend=backend
                )
                total = jnp.sum(jnp.real(ys) * jnp.cos(jnp.arange(ys.size).reshape(ys.shape)))
                for leaf in jax.tree.leaves(carry):
                    total = total + jnp.sum(jnp.real(leaf) ** 2)
                return total, (carry, ys)

            grad = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)
            (_, values), grads = jax.jit(grad)(params, xs, c0)
            return values, grads

        got_v, got_g = run(backend)
        want_v, want_g = run("reference")

        def err(a, b):
            """Largest difference relative to the largest magnitude, leaf by leaf."""
            worst = 0.0
            for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
                if x.size:
                    x, y = np.asarray(x, np.complex128), np.asarray(y, np.complex128)
                    scale = max(1.0, float(np.max(np.abs(y))))
                    worst = max(worst, float(np.max(np.abs(x - y))) / scale)
            return worst

        return err(got_v, want_v), err(got_g, want_g)

    def group_checks(self):
        print("checks: compiled kernels against the reference backend", flush=True)
        T, B, F = (12, 3, 8) if self.args.allow_cpu else (37, 5, 16)
        cells = {
            "lstm": rj.lstm(32),
            "lstm_peephole_proj_norm": rj.lstm(32, peephole=True, proj_size=16, layer_norm=True),
            "gru": rj.gru(32),
            "simple": rj.simple(32),
            "multihead_lstm": rj.multihead_lstm(64, 4),
            "multihead_gru": rj.multihead_gru(64, 4),
            "multihead_simple": rj.multihead_simple(64, 2),
        }
        cells.update({name: make(32) for name, make in linear_cells().items()})
        key = jax.random.key(0)
        lengths = jnp.asarray(np.random.default_rng(0).integers(0, T + 1, B))
        for label, cell in cells.items():
            params = cell.init(key, F)
            xs = jax.random.normal(jax.random.key(1), (T, B, F))
            c0 = cell.initial_state(params, (B,))
            for length, reverse in ((None, False), (lengths, False), (lengths, True)):
                backends = ["pallas"]
                if label == "lstm" and not self.args.allow_cpu:
                    backends.append("cudnn")
                for backend in backends:
                    case = {
                        "cell": label,
                        "backend": backend,
                        "lengths": length is not None,
                        "reverse": reverse,
                        "T": T,
                        "B": B,
                        "dtype": "float32",
                    }
                    try:
                        # Full float32 matmuls on both sides (no TF32), so that the check
                        # measures the kernels, not the matmul precision.
                        with jax.default_matmul_precision("highest"):
                            ev, eg = self.max_errors(cell, params, xs, c0, length, reverse, backend)
                    except Exception as exc:  # noqa: BLE001
                        self.error(case, exc)
                        continue
                    ok = ev < 1e-4 and eg < 1e-4
                    case["precision"] = "highest"
                    self.checks.append({**case, "rel_err": ev, "rel_err_grad": eg, "ok": ok})
                    verdict = "ok" if ok else "FAIL"
                    print(
                        f"  {label:>24} {backend:>7} lengths={length is not None!s:5} "
                        f"reverse={reverse!s:5} values {ev:.2e} grads {eg:.2e} {verdict}",
                        flush=True,
                    )
        # bf16 FlashRNN shapes: forward values of the compiled fused kernel.
        B, T, H = self.flash_shape()
        for kind in GATED_KINDS:
            for head_size, heads in self.flash_heads():
                cell = gated_cell(kind, H, heads, jnp.bfloat16)
                params = cell.init(key, H)
                xs = jax.random.normal(jax.random.key(1), (T, B, H), jnp.bfloat16)
                case = dict(cell=cell.name, backend="pallas", T=T, B=B, H=H, dtype="bfloat16")
                case.update(head_size=head_size, num_heads=heads)
                try:
                    got = jax.jit(lambda p, x, c=cell: rj.scan(c, p, x, backend="pallas")[1])(
                        params, xs
                    )
                    want = jax.jit(lambda p, x, c=cell: rj.scan(c, p, x, backend="reference")[1])(
                        params, xs
                    )
                    diff = jnp.abs(got.astype(jnp.float32) - want.astype(jnp.float32))
                    ev = float(jnp.max(diff))
                except Exception as exc:  # noqa: BLE001
                    self.error(case, exc)
                    continue
                self.checks.append({**case, "max_abs_err": ev, "ok": ev < 5e-2})  # |y| <= 1
                print(f"  {cell.name:>24} ({head_size}x{heads}) bf16 forward {ev:.2e}", flush=True)

    # ------------------------------------------------------------------ fused (FlashRNN shapes)

    def flash_shape(self):
        return (2, 8, 16) if self.args.allow_cpu else (16, 1024, 768)

    def flash_heads(self):
        if self.args.allow_cpu:
            return ((8, 2), (16, 1))
        return FLASHRNN_HEADS

    def group_fused(self):
        B, T, H = self.flash_shape()
        print(f"fused: bf16 B={B} T={T} hidden={H}", flush=True)
        key = jax.random.key(0)
        backends = ("pallas", "sequential", "reference")
        for kind in GATED_KINDS:
            for head_size, heads in self.flash_heads():
                cell = gated_cell(kind, H, heads, jnp.bfloat16)
                params = cell.init(key, H)
                xs = jax.random.normal(jax.random.key(1), (T, B, H), jnp.bfloat16)
                shape = common.Shape(B, T, H, H)
                for mode in common.MODES:
                    print(f" {cell.name} {head_size}x{heads} {mode}", flush=True)
                    cases = self.jax_cases(cell, params, xs, backends, mode)
                    self.time(
                        cases,
                        lambda name, st, c=cell, m=mode, s=shape, hs=head_size, nh=heads: (
                            common.record(
                                cell=c.name,
                                shape=s,
                                dtype="bfloat16",
                                mode=m,
                                stats=st,
                                backend=name,
                                head_size=hs,
                                num_heads=nh,
                            )
                        ),
                    )
                if heads == 1:
                    self.torch_peer(kind, shape, "bfloat16")

    # ------------------------------------------------------------------ cudnn

    def group_cudnn(self):
        shapes = (
            [common.Shape(2, 8, 8, 8)]
            if self.args.allow_cpu
            else [
                common.Shape(b, t, h, h) for b in (16, 64) for t in (256, 1024) for h in (256, 768)
            ]
        )
        backends = ("cudnn", "sequential", "pallas")
        if self.args.allow_cpu:
            backends = ("sequential", "pallas")
        for shape in shapes:
            cell = rj.lstm(shape.H)
            params = cell.init(jax.random.key(0), shape.I)
            xs = jax.random.normal(jax.random.key(1), (shape.T, shape.B, shape.I))
            for mode in common.MODES:
                print(f"cudnn: lstm float32 {shape.label} {mode}", flush=True)
                cases = self.jax_cases(cell, params, xs, backends, mode)
                self.time(
                    cases,
                    lambda name, st, s=shape, m=mode: common.record(
                        cell="lstm", shape=s, dtype="float32", mode=m, stats=st, backend=name
                    ),
                )
            self.torch_peer("lstm", shape, "float32")

    # ------------------------------------------------------------------ linear

    def group_linear(self):
        if self.args.allow_cpu:
            shapes = [common.Shape(2, 8, 8, 8)]
        else:
            shapes = [common.Shape(16, 1024, 768, 768), common.Shape(16, 4096, 768, 768)]
        backends = [b for b in ("pallas", "parallel", "sequential") if b in rj.backend_names()]
        for name, make in linear_cells().items():
            for shape in shapes:
                cell = make(shape.H)
                params = cell.init(jax.random.key(0), shape.I)
                xs = jax.random.normal(jax.random.key(1), (shape.T, shape.B, shape.I))
                for mode in common.MODES:
                    print(f"linear: {name} float32 {shape.label} {mode}", flush=True)
                    cases = self.jax_cases(cell, params, xs, backends, mode)
                    self.time(
                        cases,
                        lambda b, st, s=shape, m=mode, n=name: common.record(
                            cell=n, shape=s, dtype="float32", mode=m, stats=st, backend=b
                        ),
                    )

    # ------------------------------------------------------------------ PyTorch peer

    def torch_peer(self, kind: str, shape, dtype: str) -> None:
        try:
            import torch
        except ImportError:
            return
        if not torch.cuda.is_available() or self.args.allow_cpu:
            return
        B, T, I, H = shape  # noqa: E741
        module = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "simple": torch.nn.RNN}[kind]
        tdtype = {"bfloat16": torch.bfloat16, "float32": torch.float32}[dtype]
        case = {"cell": kind, "library": "torch", "dtype": dtype, **shape._asdict()}
        try:
            net = module(I, H).to(device="cuda", dtype=tdtype)
            x = torch.randn(T, B, I, device="cuda", dtype=tdtype)
            xg = x.clone().requires_grad_(True)

            def forward():
                with torch.no_grad():
                    net(x)
                torch.cuda.synchronize()

            def forward_backward():
                out, _ = net(xg)
                out.float().sum().backward()
                torch.cuda.synchronize()

            runs = {"forward": forward, "forward_backward": forward_backward}
            for mode, run in runs.items():
                stats = common.interleaved(
                    {"torch": run}, rounds=self.rounds, per_round=3, budget_s=self.budget
                )["torch"]
                self.records.append(
                    common.record(
                        cell=kind,
                        shape=shape,
                        dtype=dtype,
                        mode=mode,
                        stats=stats,
                        library="torch",
                        implementation="cudnn",
                        cudnn=torch.backends.cudnn.version(),
                    )
                )
                print(f"  {'torch cudnn':>12}: {stats.median_s * 1e3:9.3f} ms ({mode})", flush=True)
        except Exception as exc:  # noqa: BLE001
            self.error(case, exc)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--groups", default=",".join(GROUPS), help=f"comma list of {GROUPS}")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument(
        "--allow-cpu",
        action="store_true",
        help="run tiny shapes in interpret mode on a CPU (to test the script; implies --quick)",
    )
    parser.add_argument("--out", type=Path, default=common.RESULTS_DIR, help="results folder")
    parser.add_argument(
        "--budget", type=float, default=10.0, help="seconds of timing per group of cases"
    )
    args = parser.parse_args(argv)
    groups = common.chosen_groups(parser, args.groups, GROUPS)
    platform = jax.default_backend()
    if platform != "gpu" and not args.allow_cpu:
        print(
            f"gpu_suite needs a GPU; JAX runs on {platform!r} here "
            "(--allow-cpu runs tiny shapes in interpret mode to test the script)",
            file=sys.stderr,
        )
        return 2
    if args.allow_cpu:
        args.quick = True
    suite = Suite(args)
    for group in groups:
        try:
            getattr(suite, f"group_{group}")()
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            suite.error({"group": group}, exc)
    machine = common.machine_info()
    path = common.write_results(
        "gpu_suite",
        suite.records,
        machine=machine,
        quick=args.quick,
        directory=args.out,
        groups=groups,
        checks=suite.checks,
        errors=suite.errors,
    )
    failed = [c for c in suite.checks if not c["ok"]]
    print(
        f"wrote {path}: {len(suite.records)} records, {len(suite.checks)} checks "
        f"({len(failed)} over tolerance), {len(suite.errors)} errors on {machine['device_kind']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
