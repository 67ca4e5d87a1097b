"""Gradient flow: how ``||dL/dh_t||`` changes with ``t``, the vanishing and exploding picture.

`probe` wraps any cell so that an extra input ``e_t`` is added to the state it
feeds back, ``h_t -> h_t + e_t``; at ``e = 0`` the model is unchanged and the
gradient of the loss with respect to ``e_t`` is exactly ``dL/dh_t``, the
total derivative through every later step. `gradient_norms` measures it on a
task's test batch, per sequence, averaged over the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax.cells import Cell, get_cell
from rnn_jax.data import Batch, Task
from rnn_jax.layers import rnn
from rnn_jax.layers.dropout import fed_back_width
from rnn_jax.models import classifier, tagger
from rnn_jax.train.losses import LOSSES


def probe(cell: Cell, width: int) -> Cell:
    """``cell`` reading ``width`` extra input features ``e_t`` that are added to its state ``h_t``.

    Inputs are ``[..., F + width]``; the step runs ``cell`` on the first ``F``
    features, then adds ``e_t`` to the fed-back state and to the output (the
    same ``h_t`` for the built-in cells). ``init(key, F + width)`` initialises
    the cell for ``F`` inputs.
    """

    def init(key, input_size):
        return cell.init(key, input_size - width)

    def step(params, carry, x):
        carry, y = cell.step(params, carry, x[..., :-width])
        e = x[..., -width:]
        if hasattr(carry, "shape"):
            return carry + e, y + e
        return carry._replace(h=carry.h + e), y + e

    def input_size(params):
        return cell.input_size(params) + width

    return Cell(
        init=init,
        initial_state=cell.initial_state,
        step=step,
        input_size=input_size if cell.input_size is not None else None,
        name=f"probed {cell.name}",
        config=cell.config,
    )


def gradient_norms(
    cell: Cell,
    task: Task,
    *,
    batch_size: int = 64,
    seed: int = 0,
    params: Any = None,
) -> np.ndarray:
    """``||dL_i/dh_t||`` for ``t = 1..T``, averaged over the sequences ``i`` of a test batch.

    The model is the task's (a many-to-one classifier or a tagger over
    ``rj.rnn(cell)``, a dense head on top), at initialisation from ``seed`` or
    with ``params`` (of the probed model, e.g. after training). ``L_i`` is the
    loss of sequence ``i`` (summed, not averaged, over the batch). Tasks with
    float inputs only. Returns ``[T]``.

    Example:
        >>> norms = rj.diagnostics.gradient_norms(rj.simple(32), rj.data.adding(length=50))
        >>> bool(norms[0] < norms[-1])
        True
    """
    model, batch, eps, loss = _setup(cell, task, batch_size, seed)
    params = model.init(jax.random.key(seed)) if params is None else params

    @jax.jit
    def norms(params, batch, eps):
        grads = jax.grad(loss)(eps, params, batch)  # [T, B, H]
        return jnp.mean(jnp.linalg.norm(grads, axis=-1), axis=1)

    return np.asarray(norms(params, batch, eps))


def probed_model(cell: Cell, task: Task):
    """The task's model over ``rj.rnn(probe(cell))``, and the probe width."""
    info = task.info()
    if info["input_size"] is None or info["kind"] not in (
        "regression",
        "classification",
        "tagging",
        "forecasting",
    ):
        raise ValueError(
            f"gradient flow needs a task with float inputs and a target per sequence or per "
            f"step (adding, copy_memory, digits, mackey_glass, sunspots); got {task.name}"
        )
    width = fed_back_width(cell, jax.eval_shape(lambda: cell.init(jax.random.key(0), 1)))
    body = rnn(probe(cell, width))
    size = info["input_size"] + width
    if info["kind"] in ("regression", "classification"):
        return classifier(body, info["output_size"], input_size=size), width
    return tagger(body, info["output_size"], input_size=size), width


def _setup(cell: Cell, task: Task, batch_size: int, seed: int):
    model, width = probed_model(cell, task)
    batch: Batch = jax.tree.map(jnp.asarray, next(iter(task.test.batches(batch_size))))
    inputs = batch.inputs
    eps = jnp.zeros((*inputs.shape[:-1], width), inputs.dtype)
    loss_fn = LOSSES[task.loss]

    def loss(eps, params, batch):
        xs = jnp.concatenate([batch.inputs, eps], axis=-1)
        _, outputs = model.apply(params, xs, length=batch.length)
        return loss_fn(outputs, batch.targets, batch.mask)[0]

    return model, batch, eps, loss


def train_probed(
    cell: Cell, task: Task, steps: int, *, batch_size: int = 64, seed: int = 0, lr: float = 1e-2
) -> Any:
    """Params of the probed model (`probed_model`) after ``steps`` of Adam on the task.

    The probe's extra inputs are zero during training, so this trains the
    plain model; `gradient_norms` then shows the gradient flow it learned.
    """
    from rnn_jax.train import fit, make_optimizer, supervised

    model, width = probed_model(cell, task)

    def apply(params, inputs, **kwargs):
        zeros = jnp.zeros((*inputs.shape[:-1], width), inputs.dtype)
        return model.apply(params, jnp.concatenate([inputs, zeros], axis=-1), **kwargs)

    optimizer, _ = make_optimizer("adam", lr)
    result = fit(
        supervised(apply, task.loss),
        model.init(jax.random.key(seed)),
        optimizer,
        lambda step: task.train.batch(step, batch_size, seed),
        steps=steps,
        seed=seed,
        progress=False,
    )
    return result.params


def cells_by_name(names: Sequence[str], hidden: int) -> dict[str, Cell]:
    """The registered cells ``names`` (`rj.cells.CELLS`) of ``hidden`` units, by name.

    Example:
        >>> sorted(rj.diagnostics.cells_by_name(["gru", "lstm"], 8))
        ['gru', 'lstm']
    """
    return {name: get_cell(name, hidden) for name in names}
