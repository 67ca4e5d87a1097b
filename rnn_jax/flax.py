"""Flax modules over the pure core: `RNN` for Linen and `NNXRNN` for NNX.

Both wrap any cell or `Layer` (``rj.lstm(64)``, ``rj.bidirectional(...)``,
``rj.stack([...])``) and compute exactly what ``layer.apply`` computes; the
parameters are the layer's own pytree, so ``rj.summary`` and PyTorch import
work on them too.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
from flax import nnx

from rnn_jax.cells.base import Cell
from rnn_jax.layers.base import Layer, as_layer


class RNN(nn.Module):
    """Linen module running ``layer`` over time-major ``xs: [T, *batch, F]``.

    Returns ``(final_state, ys)`` like ``Layer.apply``. Dropout draws from the
    ``"dropout"`` RNG stream when ``deterministic=False``.

    Example:
        >>> model = RNN(rj.stack([rj.lstm(32), rj.lstm(32)], dropout=0.1))
        >>> xs = jnp.ones((10, 4, 8))
        >>> variables = model.init(jax.random.key(0), xs)
        >>> state, ys = model.apply(variables, xs)
        >>> ys.shape
        (10, 4, 32)
    """

    layer: Cell | Layer

    @nn.compact
    def __call__(
        self,
        xs: jax.Array,
        *,
        length: jax.Array | None = None,
        initial_state: Any = None,
        deterministic: bool = True,
    ) -> tuple[Any, jax.Array]:
        layer = as_layer(self.layer)
        params = self.param("layer", lambda key: layer.init(key, xs.shape[-1]))
        key = None if deterministic else self.make_rng("dropout")
        return layer.apply(params, xs, length=length, initial_state=initial_state, key=key)


class NNXRNN(nnx.Module):
    """NNX module running ``layer`` over time-major ``xs: [T, *batch, F]``.

    Each parameter leaf is an ``nnx.Param``; dropout draws from
    ``rngs.dropout`` when the module is in training mode (``model.train()``).

    Example:
        >>> model = NNXRNN(rj.gru(16), input_size=8, rngs=nnx.Rngs(0, dropout=1))
        >>> state, ys = model(jnp.ones((10, 4, 8)))
        >>> ys.shape
        (10, 4, 16)
    """

    def __init__(self, layer: Cell | Layer, input_size: int, *, rngs: nnx.Rngs):
        self.layer = nnx.static(as_layer(layer))
        self.params = nnx.data(jax.tree.map(nnx.Param, self.layer.init(rngs.params(), input_size)))
        self.rngs = rngs
        self.deterministic = True

    def __call__(
        self,
        xs: jax.Array,
        *,
        length: jax.Array | None = None,
        initial_state: Any = None,
    ) -> tuple[Any, jax.Array]:
        params = jax.tree.map(
            lambda p: p[...], self.params, is_leaf=lambda x: isinstance(x, nnx.Variable)
        )
        key = None if self.deterministic else self.rngs.dropout()
        return self.layer.apply(params, xs, length=length, initial_state=initial_state, key=key)
