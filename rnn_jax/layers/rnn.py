"""``rnn(cell)``: a cell as a sequence layer, with dropout that respects time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from rnn_jax._driver import scan
from rnn_jax.backends import Backend
from rnn_jax.cells.bound import bound
from rnn_jax.cells.cell import Cell
from rnn_jax.layers import dropout as drop
from rnn_jax.layers.base import Layer, from_its_end, split_key, taking_time_major


@dataclass(frozen=True)
class RNNSpec:
    """How an ``rj.rnn`` layer was built: its cell and ``rj.rnn``'s options."""

    cell: Cell
    reverse: bool = False
    backend: str | Backend = "auto"
    unroll: int | bool | None = None
    output_dtype: Any = None
    input_dropout: float = 0.0
    recurrent_dropout: float = 0.0
    output_dropout: float = 0.0
    zoneout: float = 0.0

    def reads_ahead(self) -> str | None:
        """Why a step's output depends on later steps (``reverse``), or None."""
        return from_its_end("reversed rnn") if self.reverse else None


def dropped_cell(spec: RNNSpec, params, xs: jax.Array, k_rec, k_zone) -> tuple[Cell, jax.Array]:
    """The cell run (with recurrent dropout and zoneout wrapped around it where they apply) and
    its inputs (the masks they draw appended as features)."""
    cell, features = spec.cell, [xs]
    if k_rec is not None and spec.recurrent_dropout:
        shape = drop.recurrent_mask_shape(cell, params, xs)
        kept = drop.keep_mask(k_rec, spec.recurrent_dropout, shape, xs.dtype)
        features.append(jnp.broadcast_to(kept[None], (xs.shape[0], *shape)))
        cell = drop.recurrent_dropout(cell, width=shape[-1])
    if spec.zoneout:
        stochastic = k_zone is not None
        if stochastic:
            width = drop.carry_width(spec.cell, params)
            keep = jax.random.bernoulli(k_zone, spec.zoneout, (*xs.shape[:-1], width))
            features.append(keep.astype(xs.dtype))
        cell = drop.zoneout(cell, spec.zoneout, stochastic=stochastic)
    return cell, jnp.concatenate(features, axis=-1) if len(features) > 1 else xs


def apply_rnn(
    spec: RNNSpec,
    params,
    xs,
    *,
    length=None,
    initial_state=None,
    key=None,
    resets=None,
    mask=None,
):
    """``apply`` of an ``rj.rnn`` layer: dropout on the inputs, the scan, dropout on the outputs."""
    k_in, k_rec, k_zone, k_out = split_key(key, 4)
    xs = drop.sequence_dropout(k_in, xs, spec.input_dropout)
    cell, xs = dropped_cell(spec, params, xs, k_rec, k_zone)
    final, ys = scan(
        cell,
        params,
        xs,
        initial_state=initial_state,
        length=length,
        reverse=spec.reverse,
        resets=resets,
        mask=mask,
        backend=spec.backend,
        unroll=spec.unroll,
        output_dtype=spec.output_dtype,
    )
    return final, drop.sequence_dropout(k_out, ys, spec.output_dropout)


def rnn(
    cell: Cell,
    *,
    reverse: bool = False,
    backend: str | Backend = "auto",
    unroll: int | bool | None = None,
    output_dtype=None,
    input_dropout: float = 0.0,
    recurrent_dropout: float = 0.0,
    output_dropout: float = 0.0,
    zoneout: float = 0.0,
) -> Layer:
    """A `Layer` that runs ``cell`` over ``xs: [T, *batch, F]`` with ``rj.scan``.

    Dropout applies only when ``apply`` gets a ``key``: ``input_dropout`` and
    ``output_dropout`` drop the same features at every step of a sequence,
    ``recurrent_dropout`` masks the fed-back state ``h_{t-1}`` with one mask per
    sequence (Gal & Ghahramani 2016), and ``zoneout`` keeps each carry unit's
    previous value with that probability at each step (Krueger et al. 2017;
    without a key, the expected blend). All masks are drawn before the loop.
    ``apply`` also takes ``rj.scan``'s ``resets`` and ``mask`` (``[T, *batch]``
    bools), and ``time_major=False`` for batch-major ``xs: [*batch, T, F]``;
    ``backend``, ``unroll`` and ``output_dtype`` are ``rj.scan``'s. The
    layer's ``spec`` is an `RNNSpec`.

    Example:
        >>> layer = rj.rnn(rj.lstm(32), recurrent_dropout=0.25)
        >>> params = layer.init(jax.random.key(0), 8)
        >>> state, ys = layer.apply(params, jnp.ones((10, 4, 8)), key=jax.random.key(1))
        >>> ys.shape, layer == rj.rnn(rj.lstm(32), recurrent_dropout=0.25)
        ((10, 4, 32), True)
    """
    if not isinstance(cell, Cell):
        raise TypeError(f"cell must be an rnn_jax Cell; got {type(cell).__name__}")
    spec = RNNSpec(
        cell=cell,
        reverse=bool(reverse),
        backend=backend,
        unroll=unroll,
        output_dtype=output_dtype,
        input_dropout=drop.check_rate("input_dropout", input_dropout),
        recurrent_dropout=drop.check_rate("recurrent_dropout", recurrent_dropout),
        output_dropout=drop.check_rate("output_dropout", output_dropout),
        zoneout=drop.check_rate("zoneout", zoneout),
    )
    apply = taking_time_major(bound(apply_rnn, spec), cell.feature_rank)
    return Layer(init=cell.init, apply=apply, spec=spec, feature_rank=cell.feature_rank)


def as_layer(item: Cell | Layer, *, reverse: bool = False) -> Layer:
    """A `Layer` from a cell (``rj.rnn(cell, reverse=reverse)``) or a layer as is."""
    if isinstance(item, Cell):
        return rnn(item, reverse=reverse)
    if isinstance(item, Layer):
        return item
    raise TypeError(f"expected an rnn_jax Cell or Layer; got {type(item).__name__}")
