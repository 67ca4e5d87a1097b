"""Parameter summaries, as Keras's ``model.summary()`` prints them."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def count_params(params: Any) -> int:
    """Total number of scalars in a parameter pytree.

    Example:
        >>> rj.count_params(rj.simple(32).init(jax.random.key(0), 32))
        2080
    """
    return int(sum(np.prod(leaf.shape, dtype=np.int64) for leaf in jax.tree.leaves(params)))


def summary(params: Any) -> str:
    """A table of every parameter leaf (path, shape, dtype, count) and the total.

    Example:
        >>> print(rj.summary(rj.lstm(128).init(jax.random.key(0), 64)))  # doctest: +ELLIPSIS
        parameter         shape       dtype     count
        ...
        total                                  98,816
    """
    rows = [("parameter", "shape", "dtype", "count")]
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        name = jax.tree_util.keystr(path).lstrip(".") or "(root)"
        count = int(np.prod(leaf.shape, dtype=np.int64))
        rows.append((name, str(tuple(leaf.shape)), str(leaf.dtype), f"{count:,}"))
    rows.append(("total", "", "", f"{count_params(params):,}"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join(
            cell.ljust(w) if i < 3 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    return "\n".join(line.rstrip() for line in lines)
