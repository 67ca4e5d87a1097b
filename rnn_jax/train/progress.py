"""A progress bar (tqdm) with the loss and the throughput, or silence."""

from __future__ import annotations

import importlib.util
import sys
import time

from rnn_jax._extras import require


class Progress:
    """Shows ``steps`` done of ``total`` with the latest loss, validation loss and sequences/s.

    ``enabled=None`` shows it only when stderr is a terminal and tqdm (the ``app`` extra) is
    installed; ``enabled=True`` without tqdm is a `rnn_jax._extras.MissingExtra`.
    """

    def __init__(
        self,
        total: int,
        *,
        initial: int = 0,
        batch_size: int = 1,
        enabled: bool | None = None,
        description: str = "",
    ):
        if enabled is None:  # a bar where one shows: on a terminal, with tqdm installed
            enabled = sys.stderr.isatty() and importlib.util.find_spec("tqdm") is not None
        self.batch_size = batch_size
        self.bar = None
        self.last: tuple[int, float] | None = None  # (step, time) of the previous update
        self.rate: float | None = None
        if enabled:
            tqdm = require("tqdm.auto", "the progress bar").tqdm
            self.bar = tqdm(
                total=total,
                initial=initial,
                desc=description,
                unit="step",
                dynamic_ncols=True,
                file=sys.stderr,
                leave=True,
            )

    def update(self, step: int, loss: float | None = None, val: float | None = None) -> None:
        if self.bar is None:
            return
        self.bar.update(step - self.bar.n)
        now = time.perf_counter()
        # Throughput between updates: the first interval holds the compilation, so it is skipped.
        if self.last is not None and step > self.last[0]:
            self.rate = (step - self.last[0]) * self.batch_size / max(now - self.last[1], 1e-9)
        self.last = (step, now)
        postfix = {}
        if loss is not None:
            postfix["loss"] = f"{loss:.4g}"
        if val is not None:
            postfix["val"] = f"{val:.4g}"
        if self.rate is not None:
            postfix["seq/s"] = f"{self.rate:,.0f}"
        self.bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
