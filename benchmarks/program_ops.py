"""Operation counts of the ``sequential`` backend's programs, per residual policy: the check
that a refactor leaves what XLA compiles unchanged (no timing, so any machine will do).

For each case (cell, ``residuals``, ``weight_grads``, lengths, reverse, chunk, resets) it
records the primitives of the jaxpr of ``jax.grad`` of a loss and of the inference forward
(recursively, inside loops), the opcodes of both programs as XLA compiled them, and a hash of
each gradient's bytes. Run it on two checkouts and compare:

    python benchmarks/program_ops.py --out /tmp/before.json     # on the old checkout
    python benchmarks/program_ops.py --out /tmp/after.json      # on the new one
    python benchmarks/program_ops.py --compare /tmp/before.json /tmp/after.json
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import itertools
import json
import re
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import rnn_jax as rj
from rnn_jax.backends import Sequential

HLO_OP = re.compile(r"^\s*(?:ROOT\s+)?\S+\s*=\s*\S+\s+([a-z][\w\-]*)\(", re.M)
KINDS = ("jaxpr", "jaxpr_forward", "hlo", "hlo_forward", "gradient_sha1")
# (lengths, reverse, chunk, resets): a prefix or not, both directions, chunks with padding,
# one chunk, restarts
SITUATIONS = ((False, False, 4, False), (True, True, 5, False), (True, False, 0, True))
POLICIES = ("store", "recompute", "carries")
CASES = [
    *(
        ("lstm", residuals, weight_grads, *situation)
        for residuals, weight_grads, situation in itertools.product(
            POLICIES, ("per_chunk", "after_sweep"), SITUATIONS
        )
    ),
    *(("gru", r, "per_chunk", True, False, 4, False) for r in POLICIES),
    *(("simple", r, "after_sweep", False, True, 4, True) for r in POLICIES),
]


def jaxpr_counts(jaxpr, counts: collections.Counter) -> collections.Counter:
    for eqn in jaxpr.eqns:
        counts[eqn.primitive.name] += 1
        for inner in jax.extend.core.jaxprs_in_params(eqn.params):
            jaxpr_counts(inner, counts)
    return counts


def counts_of(fun, *args) -> dict:
    """``{"jaxpr": {primitive: n}, "hlo": {opcode: n}}`` of ``fun`` at ``args``."""
    jaxpr = jax.make_jaxpr(fun)(*args).jaxpr
    hlo = jax.jit(fun).lower(*args).compile().as_text()
    return {
        "jaxpr": dict(jaxpr_counts(jaxpr, collections.Counter())),
        "hlo": dict(collections.Counter(HLO_OP.findall(hlo))),
    }


def case(cell_name, residuals, weight_grads, lengths, reverse, chunk, resets) -> dict:
    cell = {"lstm": rj.lstm(8), "gru": rj.gru(8), "simple": rj.simple(8)}[cell_name]
    steps, batch = 12, 3
    params = cell.init(jax.random.key(0), 5)
    xs = jax.random.normal(jax.random.key(1), (steps, batch, 5))
    length = jnp.array([12, 4, 0]) if lengths else None
    starts = (jnp.arange(steps)[:, None] % 5 == 3) & jnp.ones((steps, batch), bool)
    backend = Sequential(
        residuals=residuals, weight_grads=weight_grads, chunk=chunk, unroll=2, pipeline=True
    )

    def loss(params, xs):
        final, ys = rj.scan(
            cell,
            params,
            xs,
            length=length,
            reverse=reverse,
            resets=starts if resets else None,
            backend=backend,
        )
        return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(leaf * leaf) for leaf in jax.tree.leaves(final))

    grad = jax.grad(loss, argnums=(0, 1))
    training, inference = counts_of(grad, params, xs), counts_of(loss, params, xs)
    gradients = jax.tree.leaves(jax.jit(grad)(params, xs))
    return {
        "jaxpr": training["jaxpr"],
        "hlo": training["hlo"],
        "jaxpr_forward": inference["jaxpr"],
        "hlo_forward": inference["hlo"],
        "gradient_sha1": [hashlib.sha1(np.asarray(g).tobytes()).hexdigest() for g in gradients],
    }


def differences(before: dict, after: dict) -> list[str]:
    """One line per case and kind whose counts (or gradients) differ."""
    lines = []
    for name in sorted(before):
        for kind in KINDS:
            old, new = before[name][kind], after[name][kind]
            if old == new:
                continue
            if isinstance(old, dict):
                keys = sorted(set(old) | set(new))
                old = {k: old.get(k, 0) for k in keys if old.get(k, 0) != new.get(k, 0)}
                new = {k: new.get(k, 0) for k in old}
            lines.append(f"{name} {kind}: {old} -> {new}")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="where to write the counts (JSON)")
    parser.add_argument("--compare", type=Path, nargs=2, metavar=("BEFORE", "AFTER"))
    args = parser.parse_args(argv)
    if args.compare:
        before, after = (json.loads(path.read_text()) for path in args.compare)
        lines = differences(before, after)
        print("\n".join(lines) or f"the same in all {len(before)} cases")
        return 1 if lines else 0
    counts = {"/".join(map(str, c)): case(*c) for c in CASES}
    text = json.dumps(counts, indent=1, sort_keys=True)
    if args.out:
        args.out.write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
