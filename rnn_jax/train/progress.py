"""A progress bar (tqdm) with the loss and the throughput, or silence."""

from __future__ import annotations

import sys
import time


class Progress:
    """Shows ``steps`` done of ``total`` with the latest loss, validation loss and sequences/s.

    ``enabled=None`` shows it only when stderr is a terminal.
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
        if enabled is None:
            enabled = sys.stderr.isatty()
        self.batch_size = batch_size
        self.bar = None
        self.started = time.perf_counter()
        self.start_step = initial
        if enabled:
            from tqdm.auto import tqdm

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
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        rate = (step - self.start_step) * self.batch_size / elapsed
        postfix = {}
        if loss is not None:
            postfix["loss"] = f"{loss:.4g}"
        if val is not None:
            postfix["val"] = f"{val:.4g}"
        postfix["seq/s"] = f"{rate:,.0f}"
        self.bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
