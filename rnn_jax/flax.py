"""Flax modules over the pure core (`RNN` for Linen, `NNXRNN` for NNX), and NNX's cells in and out.

Both modules wrap any cell or `Layer` (``rj.lstm(64)``, ``rj.bidirectional(...)``,
``rj.stack([...])``) and compute exactly what ``layer.apply`` computes; the
parameters are the layer's own pytree, so ``rj.summary`` and PyTorch import
work on them too. The Linen module is time-major and returns
``(final_state, ys)`` as ``Layer.apply`` does; the NNX module follows
``flax.nnx.RNN``'s conventions.

`from_nnx` and `to_nnx` move weights between ``nnx.LSTMCell`` /
``nnx.GRUCell`` and the rnn_jax cells computing the same step.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rnn_jax.backends.masking import flip_valid
from rnn_jax.cells.base import Cell, resolve_activation
from rnn_jax.cells.gru import GRUParams, gru
from rnn_jax.cells.lstm import LSTMParams, lstm
from rnn_jax.layers.base import Layer, as_layer, feature_rank
from rnn_jax.layers.bidirectional import reversed_layer

__all__ = ["NNXRNN", "RNN", "from_nnx", "to_nnx"]


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
    """NNX module running ``layer`` over a sequence, with ``flax.nnx.RNN``'s conventions.

    ``model(inputs, *, initial_carry=None, seq_lengths=None, return_carry=None,
    time_major=None, reverse=None, keep_order=None, rngs=None)``:

    - ``inputs``: ``[*batch, T, F]``, or ``[T, *batch, F]`` with
      ``time_major``; ``seq_lengths: [*batch]`` right-pads them (outputs past
      a length are zeros, where ``nnx.RNN`` leaves what the cell computed on
      the padding).
    - ``reverse`` runs over each sequence's valid prefix from its last step
      to its first; its outputs come in that reversed order unless
      ``keep_order``, which aligns them with the inputs.
    - ``return_carry``: return ``(carry, outputs)``, the carry being the
      state after each sequence's last valid step (``layer.apply``'s final
      state; an LSTM's is ``LSTMState(h, c)`` where ``nnx.LSTMCell`` has
      ``(c, h)``), else the outputs alone.
    - The call's arguments, where not None, override the constructor's.

    Each parameter leaf is an ``nnx.Param``; dropout draws from ``rngs.dropout``
    (the call's ``rngs``, else the constructor's) in training mode
    (``model.train()``).

    Example:
        >>> model = NNXRNN(rj.gru(16), input_size=8, rngs=nnx.Rngs(0, dropout=1))
        >>> model(jnp.ones((4, 10, 8))).shape
        (4, 10, 16)
        >>> carry, ys = model(jnp.ones((10, 4, 8)), time_major=True, return_carry=True)
        >>> carry.shape
        (4, 16)
    """

    def __init__(
        self,
        layer: Cell | Layer,
        input_size: int,
        *,
        time_major: bool = False,
        return_carry: bool = False,
        reverse: bool = False,
        keep_order: bool = False,
        rngs: nnx.Rngs,
    ):
        self.layer = nnx.static(as_layer(layer))
        self.params = nnx.data(jax.tree.map(nnx.Param, self.layer.init(rngs.params(), input_size)))
        self.rngs = rngs
        self.deterministic = True
        self.time_major = time_major
        self.return_carry = return_carry
        self.reverse = reverse
        self.keep_order = keep_order

    def __call__(
        self,
        inputs: jax.Array,
        *,
        initial_carry: Any = None,
        seq_lengths: jax.Array | None = None,
        return_carry: bool | None = None,
        time_major: bool | None = None,
        reverse: bool | None = None,
        keep_order: bool | None = None,
        rngs: nnx.Rngs | None = None,
    ) -> Any:
        def setting(value, default):
            return default if value is None else value

        time_major = setting(time_major, self.time_major)
        reverse = setting(reverse, self.reverse)
        time_axis = 0 if time_major else jnp.ndim(inputs) - 1 - feature_rank(self.layer)
        params = jax.tree.map(
            lambda p: p[...], self.params, is_leaf=lambda x: isinstance(x, nnx.Variable)
        )
        key = None if self.deterministic else setting(rngs, self.rngs).dropout()
        layer = reversed_layer(self.layer) if reverse else self.layer
        carry, ys = layer.apply(
            params,
            jnp.moveaxis(inputs, time_axis, 0),
            length=seq_lengths,
            initial_state=initial_carry,
            key=key,
        )
        if reverse and not setting(keep_order, self.keep_order):
            ys = flip_valid(ys, seq_lengths)
        outputs = jax.tree.map(lambda y: jnp.moveaxis(y, 0, time_axis), ys)
        return (carry, outputs) if setting(return_carry, self.return_carry) else outputs


def _concatenated_kernels(linears: list[nnx.Linear]) -> jax.Array:
    return jnp.concatenate([linear.kernel[...] for linear in linears], axis=-1)


def from_nnx(module: nnx.LSTMCell | nnx.GRUCell) -> tuple[Cell, Any]:
    """``(cell, params)`` computing what ``nnx.LSTMCell`` or ``nnx.GRUCell`` computes.

    ``cell.step(params, carry, x)`` is ``module(carry, x)`` with the carry
    ``LSTMState(h, c)`` for NNX's ``(c, h)``; the module's ``gate_fn`` and
    ``activation_fn`` become the cell's ``gate_activation`` and
    ``activation``. NNX's GRU is ``rj.gru()`` (reset after the matmul) with a
    zero recurrent bias.

    Example:
        >>> cell, params = from_nnx(nnx.LSTMCell(4, 8, rngs=nnx.Rngs(0)))
        >>> params.kernel.shape, params.bias.shape
        ((4, 32), (32,))
    """
    activations = {"activation": module.activation_fn, "gate_activation": module.gate_fn}
    H = module.hidden_features
    if isinstance(module, nnx.LSTMCell):
        inputs = [module.ii, module.if_, module.ig, module.io]
        recurrent = [module.hi, module.hf, module.hg, module.ho]
        params = LSTMParams(
            kernel=_concatenated_kernels(inputs),
            recurrent_kernel=_concatenated_kernels(recurrent),
            bias=jnp.concatenate([linear.bias[...] for linear in recurrent]),
        )
        return lstm(H, **activations), params
    if isinstance(module, nnx.GRUCell):
        bias = module.dense_i.bias[...]
        params = GRUParams(
            module.dense_i.kernel[...], module.dense_h.kernel[...], bias, jnp.zeros_like(bias)
        )
        return gru(H, **activations), params
    raise TypeError(f"module must be an nnx.LSTMCell or nnx.GRUCell; got {type(module).__name__}")


def _refuse(what: str) -> ValueError:
    return ValueError(f"to_nnx cannot express {what} in nnx.LSTMCell or nnx.GRUCell")


def to_nnx(cell: Cell, params: Any) -> nnx.LSTMCell | nnx.GRUCell:
    """The ``nnx.LSTMCell`` or ``nnx.GRUCell`` computing ``cell`` with ``params``.

    ``cell`` is an ``rj.lstm`` without peepholes, projection or layer norm,
    or an ``rj.gru()`` (reset after the matmul) whose recurrent bias of the
    candidate ``n`` is zero (NNX has none; those of r and z fold into the
    input bias), any activations. Anything else raises a ValueError saying what.

    Example:
        >>> cell = rj.gru(8)
        >>> module = to_nnx(cell, cell.init(jax.random.key(0), 4))
        >>> module.dense_i.kernel.shape
        (4, 24)
    """
    config = cell.config
    if cell.name not in ("lstm", "gru"):
        raise _refuse(f"the {cell.name} cell")
    H = int(config["hidden_size"])
    inputs = int(params.kernel.shape[0])
    options = {
        "activation_fn": resolve_activation("activation", config["activation"]),
        "gate_fn": resolve_activation("gate_activation", config["gate_activation"]),
        "param_dtype": params.kernel.dtype,
        "rngs": nnx.Rngs(0),  # every weight is overwritten
    }
    if cell.name == "lstm":
        extras = [name for name in ("peephole", "proj_size", "layer_norm") if config[name]]
        if extras:
            raise _refuse(f"an LSTM with {', '.join(extras)}")
        module = nnx.LSTMCell(inputs, H, **options)
        blocks = zip(
            [module.ii, module.if_, module.ig, module.io],
            [module.hi, module.hf, module.hg, module.ho],
            jnp.split(params.kernel, 4, axis=-1),
            jnp.split(params.recurrent_kernel, 4, axis=-1),
            jnp.split(params.bias, 4),
            strict=True,
        )
        for input_linear, recurrent_linear, kernel, recurrent_kernel, bias in blocks:
            input_linear.kernel[...] = kernel
            recurrent_linear.kernel[...] = recurrent_kernel
            recurrent_linear.bias[...] = bias
        return module
    if not config["reset_after"]:
        raise _refuse("a GRU with reset_after=False (NNX resets after the recurrent matmul)")
    if np.any(np.asarray(params.recurrent_bias[2 * H :]) != 0):
        raise _refuse("a GRU whose recurrent bias of n (inside the reset) is not zero")
    module = nnx.GRUCell(inputs, H, **options)
    module.dense_i.kernel[...] = params.kernel
    module.dense_i.bias[...] = params.bias + params.recurrent_bias.at[2 * H :].set(0)
    module.dense_h.kernel[...] = params.recurrent_kernel
    return module
