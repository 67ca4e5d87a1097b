"""One training update, jit-compiled for the run's mesh: gradient, optimizer, carried state."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import optax

from rnn_jax.train import sharding
from rnn_jax.train.objective import Objective
from rnn_jax.train.state import Placement, TrainState

Step = Callable[[TrainState, Any], tuple[TrainState, jax.Array]]


def make_step(
    objective: Objective, optimizer: optax.GradientTransformation, placement: Placement
) -> Step:
    """``step(state, batch) -> (state, loss)``: one update of ``optimizer`` on ``objective``.

    The update's key is ``fold_in(key, state.step)``, so it depends on the
    step alone. Params, optimizer state and carry come out with the
    placement's shardings (the loss replicated), one compilation per run.
    """

    def update(params, opt_state, batch, step, carry, rng):
        key = jax.random.fold_in(jax.random.wrap_key_data(rng), step)
        loss_and_grad = jax.value_and_grad(objective.loss, has_aux=True)
        (loss, carry), grads = loss_and_grad(params, batch, key, carry)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, carry, loss

    compiled = jax.jit(
        update,
        out_shardings=(
            placement.params,
            placement.opt_state,
            placement.carry,
            sharding.replicated(placement.mesh),
        ),
    )

    def step(state: TrainState, batch: Any) -> tuple[TrainState, jax.Array]:
        params, opt_state, carry, loss = compiled(
            state.params, state.opt_state, batch, np.int32(state.step), state.carry, state.rng
        )
        updated = state._replace(
            step=state.step + 1, params=params, opt_state=opt_state, carry=carry
        )
        return updated, loss

    return step
