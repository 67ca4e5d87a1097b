"""An `Objective` ties a model's ``apply`` to a loss and metrics; the fit loop needs only it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax

from rnn_jax.train import tbptt
from rnn_jax.train.losses import LOSSES, METRICS, ON_OUTPUTS


class Objective(NamedTuple):
    """What training optimises and evaluation reports.

    - ``loss(params, batch, key, carry) -> (loss, carry)``: the masked mean loss
      of one batch (``key`` None: no dropout), and the state to carry to the
      next batch (None unless ``stateful``).
    - ``evaluate(params, batch, carry) -> (sums, carry)``: ``{metric: (total, weight)}``,
      with the loss under ``"loss"``.
    - ``init_carry(params, batch)``: the zero state of a stateful objective.
    """

    loss: Callable[..., tuple[jax.Array, Any]]
    evaluate: Callable[..., tuple[dict[str, tuple[jax.Array, jax.Array]], Any]]
    init_carry: Callable[[Any, Any], Any] | None = None

    @property
    def stateful(self) -> bool:
        return self.init_carry is not None


def supervised(
    apply: Callable[..., tuple[Any, Any]],
    loss: str,
    metrics: Sequence[str] = (),
    *,
    stateful: bool = False,
    decode: Callable[..., jax.Array] | None = None,
) -> Objective:
    """The objective of a model ``apply(params, inputs, *, length, initial_state, key)``.

    ``loss`` is ``"mse"`` or ``"cross_entropy"``; ``metrics`` any of
    ``rnn_jax.train.losses.METRICS``. ``stateful`` carries the final state
    from batch to batch (truncated BPTT), zeroed where ``batch.reset``.
    ``decode(params, source, length, steps)`` (seq2seq) makes the class
    metrics score greedy decoding instead of teacher-forced predictions.

    Example:
        >>> model = rj.models.classifier(rj.gru(8), 1, input_size=2)
        >>> objective = rj.train.supervised(model.apply, "mse")
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}; got {loss!r}")
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise ValueError(f"metrics must be among {sorted(METRICS)}; got {unknown}")
    loss_fn = LOSSES[loss]

    def run(params, batch, key, carry):
        restart = tbptt.restart_at_first_step(batch.inputs, batch.reset) if stateful else {}
        state, outputs = apply(
            params, batch.inputs, length=batch.length, initial_state=carry, key=key, **restart
        )
        return outputs, (tbptt.carry_over(state) if stateful else None)

    def loss_of(params, batch, key, carry):
        outputs, carry = run(params, batch, key, carry)
        total, weight = loss_fn(outputs, batch.targets, batch.mask)
        return total / jax.numpy.maximum(weight, 1e-12), carry

    def evaluate(params, batch, carry):
        outputs, carry = run(params, batch, None, carry)
        sums = {"loss": loss_fn(outputs, batch.targets, batch.mask)}
        predictions = outputs
        if decode is not None:
            source, _ = batch.inputs
            predictions = decode(params, source, batch.length, batch.targets.shape[0])
        for name in metrics:
            scored = outputs if name in ON_OUTPUTS else predictions
            sums[name] = METRICS[name](scored, batch.targets, batch.mask)
        return sums, carry

    init_carry = None
    if stateful:

        def init_carry(params, batch):
            return tbptt.zero_carry(apply, params, batch.inputs)

    return Objective(loss=loss_of, evaluate=evaluate, init_carry=init_carry)
