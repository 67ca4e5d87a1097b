"""``rnn(cell)``: a cell as a sequence layer, with dropout that respects time."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rnn_jax._driver import scan
from rnn_jax.backends import Backend
from rnn_jax.cells.base import Cell, Config
from rnn_jax.layers import dropout as drop
from rnn_jax.layers.base import Layer, split_key


def rnn(
    cell: Cell,
    *,
    reverse: bool = False,
    backend: str | Backend = "auto",
    unroll: int | bool = 1,
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
    ``apply`` takes ``length`` and ``mask`` as ``rj.scan`` does.

    Example:
        >>> layer = rj.rnn(rj.lstm(32), recurrent_dropout=0.25)
        >>> params = layer.init(jax.random.key(0), 8)
        >>> state, ys = layer.apply(params, jnp.ones((10, 4, 8)), key=jax.random.key(1))
        >>> ys.shape
        (10, 4, 32)
    """
    if not isinstance(cell, Cell):
        raise TypeError(f"cell must be an rnn_jax Cell; got {type(cell).__name__}")
    rates = {
        "input_dropout": drop.check_rate("input_dropout", input_dropout),
        "recurrent_dropout": drop.check_rate("recurrent_dropout", recurrent_dropout),
        "output_dropout": drop.check_rate("output_dropout", output_dropout),
        "zoneout": drop.check_rate("zoneout", zoneout),
    }

    def apply(params, xs, *, length=None, mask=None, initial_state=None, key=None):
        k_in, k_rec, k_zone, k_out = split_key(key, 4)
        xs = drop.sequence_dropout(k_in, xs, rates["input_dropout"])
        run_cell, features = cell, [xs]
        if k_rec is not None and rates["recurrent_dropout"]:
            width = drop.fed_back_width(cell, params)
            recurrent_keep = drop.keep_mask(
                k_rec, rates["recurrent_dropout"], (*xs.shape[1:-1], width), xs.dtype
            )
            features.append(jnp.broadcast_to(recurrent_keep[None], (*xs.shape[:-1], width)))
            run_cell = drop.recurrent_dropout(run_cell)
        if rates["zoneout"]:
            stochastic = k_zone is not None
            if stochastic:
                width = sum(drop.carry_widths(cell, params))
                keep = jax.random.bernoulli(k_zone, rates["zoneout"], (*xs.shape[:-1], width))
                features.append(keep.astype(xs.dtype))
            run_cell = drop.zoneout(run_cell, rates["zoneout"], stochastic=stochastic)
        xs = jnp.concatenate(features, axis=-1) if len(features) > 1 else xs
        final, ys = scan(
            run_cell,
            params,
            xs,
            initial_state=initial_state,
            length=length,
            mask=mask,
            reverse=reverse,
            backend=backend,
            unroll=unroll,
        )
        return final, drop.sequence_dropout(k_out, ys, rates["output_dropout"])

    return Layer(
        init=cell.init,
        apply=apply,
        spec=Config(kind="rnn", cell=cell, reverse=reverse, **rates),
    )
