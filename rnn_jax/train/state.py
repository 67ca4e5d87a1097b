"""What training carries from one update to the next (`TrainState`) and where it lies (`Placement`).

A `TrainState` is everything an update reads besides its batch; a checkpoint
holds all of it, so a run resumed from it computes what the uninterrupted
run computes. A `Placement` puts states and batches on the mesh: params and
optimizer state replicated (or split over ``model``), batches and the
carried state split over ``data`` (`rnn_jax.train.sharding`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np
import optax
from jax.sharding import Mesh

from rnn_jax.train import sharding
from rnn_jax.train.objective import Objective


class TrainState(NamedTuple):
    """The state of a run after ``step`` updates.

    ``carry`` is the state carried across batches (truncated BPTT), else
    None; ``rng`` the key data of the run's key (each update's key is
    ``fold_in(key, step)``); ``best_params`` the best params so far when
    early stopping restores them, else None.
    """

    step: int
    params: Any
    opt_state: Any
    carry: Any
    rng: np.ndarray
    best_params: Any

    def checkpointed(self) -> dict[str, Any]:
        """The checkpoint's ``state`` item: everything but the params."""
        return {
            "opt_state": self.opt_state,
            "step": np.asarray(self.step, np.int64),
            "rng": self.rng,
            "carry": self.carry,
            "best_params": self.best_params,
        }

    def restored(self, params: Any, saved: dict[str, Any]) -> TrainState:
        """This state with ``params`` and a checkpoint's ``state`` item (`checkpointed`)."""
        return TrainState(
            step=int(saved["step"]),
            params=params,
            opt_state=saved["opt_state"],
            carry=saved["carry"],
            rng=np.asarray(saved["rng"]),
            best_params=saved["best_params"],
        )


def initial_state(
    objective: Objective,
    params: Any,
    optimizer: optax.GradientTransformation,
    first_batch: Callable[[], Any],
    *,
    seed: int,
    keep_best: bool,
) -> TrainState:
    """The state before the first update (``first_batch()`` sizes a stateful objective's carry)."""
    carry = objective.init_carry(params, first_batch()) if objective.stateful else None
    return TrainState(
        step=0,
        params=params,
        opt_state=optimizer.init(params),
        carry=carry,
        rng=np.asarray(jax.random.key_data(jax.random.key(seed))),
        best_params=params if keep_best else None,
    )


class Placement(NamedTuple):
    """The shardings of a run's state on ``mesh``."""

    mesh: Mesh
    params: Any
    opt_state: Any
    carry: Any

    @classmethod
    def of(cls, mesh: Mesh, state: TrainState) -> Placement:
        return cls(
            mesh=mesh,
            params=sharding.state_shardings(mesh, state.params),
            opt_state=sharding.state_shardings(mesh, state.opt_state),
            carry=sharding.carry_shardings(mesh, state.carry),
        )

    def place(self, state: TrainState) -> TrainState:
        """``state`` as global arrays on the mesh."""
        return state._replace(
            params=sharding.put(state.params, self.params),
            opt_state=sharding.put(state.opt_state, self.opt_state),
            carry=sharding.put(state.carry, self.carry),
            best_params=None
            if state.best_params is None
            else sharding.put(state.best_params, self.params),
        )

    def batch(self, batch: Any) -> Any:
        """A training batch split over the mesh's ``data`` axis."""
        return sharding.place_batch(self.mesh, batch)
