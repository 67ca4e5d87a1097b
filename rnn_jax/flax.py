"""Flax modules over the pure core (`RNN` for Linen, `NNXRNN` for NNX), and NNX's cells in and out.

Both modules wrap any cell or `Layer` (``rj.lstm(64)``, ``rj.bidirectional(...)``,
``rj.stack([...])``) and compute exactly what ``layer.apply`` computes; the
parameters are the layer's own pytree, so ``rj.summary`` and PyTorch import
work on them too. The Linen module is time-major and returns
``(final_state, ys)`` as ``Layer.apply`` does; the NNX module follows
``flax.nnx.RNN``'s conventions.

`from_nnx` and `to_nnx` move weights between ``nnx.LSTMCell`` /
``nnx.GRUCell`` and the rnn_jax cells computing the same step; `from_linen` and
`to_linen` do the same for Linen's ``LSTMCell``, ``OptimizedLSTMCell``,
``GRUCell`` and ``SimpleCell``, and `carry_from_flax` / `carry_to_flax` turn
Flax's LSTM carry ``(c, h)`` into ``LSTMState(h, c)`` and back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rnn_jax.backends.masking import flip_valid
from rnn_jax.cells.activations import resolve_activation
from rnn_jax.cells.cell import Cell
from rnn_jax.cells.gru import GRUParams, gru
from rnn_jax.cells.lstm import LSTMParams, LSTMState, lstm
from rnn_jax.cells.simple import SimpleParams, simple
from rnn_jax.layers.base import Layer, feature_rank
from rnn_jax.layers.bidirectional import reversed_layer
from rnn_jax.layers.rnn import as_layer

__all__ = [
    "NNXRNN",
    "RNN",
    "carry_from_flax",
    "carry_to_flax",
    "from_linen",
    "from_nnx",
    "to_linen",
    "to_nnx",
]


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
      ``(c, h)``: `carry_to_flax` converts), else the outputs alone.
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


# --- Linen's cells ------------------------------------------------------------------------------

LinenCell = nn.LSTMCell | nn.OptimizedLSTMCell | nn.GRUCell | nn.SimpleCell

# Gates in rnn_jax's order; Linen names the input kernel of gate g "i" + g, the recurrent one
# "h" + g (the simple cell's two are "i" and "h").
_LSTM_GATES = ("i", "f", "g", "o")
_GRU_GATES = ("r", "z", "n")


def _linen_params(variables: Mapping[str, Any], names: list[str], module: LinenCell) -> Mapping:
    """The cell's own parameters from ``variables`` (``{"params": ...}`` or its content), checked
    to hold the modules ``names``."""
    params = variables.get("params", variables) if isinstance(variables, Mapping) else None
    if not isinstance(params, Mapping) or any(name not in params for name in names):
        got = sorted(params) if isinstance(params, Mapping) else type(params).__name__
        raise ValueError(
            f"variables must hold {type(module).__name__}'s parameters {sorted(names)} (for a "
            f"cell inside nn.RNN, variables['params'][<the RNN's name>]['cell']); got {got}"
        )
    return params


def _precision_of(params: Any, compute_dtype: Any, what: str) -> jnp.dtype:
    """The one float32-or-wider dtype of ``params`` (computed in, when ``compute_dtype`` is
    given, that dtype too), else a ValueError saying why the conversion would not be exact."""
    dtypes = sorted({str(jnp.dtype(leaf.dtype)) for leaf in jax.tree.leaves(params)})
    if len(dtypes) != 1 or jnp.finfo(dtypes[0]).bits < 32:
        raise ValueError(
            f"{what} converts cells whose parameters are all float32 (or float64); got "
            f"{dtypes}. Low precision computes differently in each library: convert the float32 "
            "cell and cast its parameters (docs: 'Coming from Flax', mixed precision)"
        )
    dtype = jnp.dtype(dtypes[0])
    if compute_dtype is not None and jnp.dtype(compute_dtype) != dtype:
        raise ValueError(
            f"{what} cannot convert a module computing in dtype={jnp.dtype(compute_dtype)} over "
            f"{dtype} parameters (Flax's mixed precision): rnn_jax's cells compute in their "
            "parameters' dtype; convert the module with dtype=None and cast the parameters "
            "(docs: 'Coming from Flax', mixed precision)"
        )
    return dtype


def _joined(params: Mapping, names: list[str], leaf: str) -> jax.Array:
    """The ``leaf`` ("kernel" or "bias") of the modules ``names``, side by side."""
    return jnp.concatenate([jnp.asarray(params[name][leaf]) for name in names], axis=-1)


def _cell_like(factory, module: LinenCell, converted: Any, **options: Any) -> Cell:
    """The rnn_jax cell of ``factory`` computing as ``module`` does with ``converted``."""
    return factory(
        converted.recurrent_kernel.shape[0],
        activation=module.activation_fn,
        dtype=_precision_of(converted, module.dtype, "from_linen"),
        **options,
    )


def _lstm_from_linen(module, variables) -> tuple[Cell, LSTMParams]:
    inputs, recurrent = [f"i{g}" for g in _LSTM_GATES], [f"h{g}" for g in _LSTM_GATES]
    params = _linen_params(variables, inputs + recurrent, module)
    converted = LSTMParams(
        kernel=_joined(params, inputs, "kernel"),
        recurrent_kernel=_joined(params, recurrent, "kernel"),
        bias=_joined(params, recurrent, "bias"),
    )
    return _cell_like(lstm, module, converted, gate_activation=module.gate_fn), converted


def _gru_from_linen(module, variables) -> tuple[Cell, GRUParams]:
    inputs, recurrent = [f"i{g}" for g in _GRU_GATES], [f"h{g}" for g in _GRU_GATES]
    params = _linen_params(variables, inputs + recurrent, module)
    candidate_bias = jnp.asarray(params["hn"]["bias"])
    converted = GRUParams(
        kernel=_joined(params, inputs, "kernel"),
        recurrent_kernel=_joined(params, recurrent, "kernel"),
        bias=_joined(params, inputs, "bias"),
        # Linen's r and z have no recurrent bias; n's sits inside the reset, as ours does.
        recurrent_bias=jnp.concatenate([jnp.zeros_like(candidate_bias)] * 2 + [candidate_bias]),
    )
    return _cell_like(gru, module, converted, gate_activation=module.gate_fn), converted


def _simple_from_linen(module, variables) -> tuple[Cell, SimpleParams]:
    params = _linen_params(variables, ["i", "h"], module)
    recurrent = jnp.asarray(params["h"]["kernel"])
    if module.residual:  # h U + h = h (U + I)
        recurrent = recurrent + jnp.eye(recurrent.shape[0], dtype=recurrent.dtype)
    converted = SimpleParams(
        jnp.asarray(params["i"]["kernel"]), recurrent, jnp.asarray(params["i"]["bias"])
    )
    return _cell_like(simple, module, converted), converted


_FROM_LINEN = {
    nn.LSTMCell: _lstm_from_linen,
    nn.OptimizedLSTMCell: _lstm_from_linen,
    nn.GRUCell: _gru_from_linen,
    nn.SimpleCell: _simple_from_linen,
}


def from_linen(module: LinenCell, variables: Mapping[str, Any]) -> tuple[Cell, Any]:
    """``(cell, params)`` computing what a Linen cell computes with ``variables``.

    ``module`` is an ``nn.LSTMCell``, ``nn.OptimizedLSTMCell`` (the same
    parameters), ``nn.GRUCell`` or ``nn.SimpleCell``; ``variables`` what its
    ``init`` returned, or the ``"params"`` mapping in it. ``cell.step(params,
    carry, x)`` is ``module.apply(variables, carry, x)`` with the carry
    converted by `carry_from_flax` (Flax's LSTM carry is ``(c, h)``, ours
    ``LSTMState(h, c)``); ``gate_fn`` and ``activation_fn`` become the cell's
    ``gate_activation`` and ``activation``.

    - LSTM: the per-gate kernels side by side in the order i, f, g, o; the
      recurrent biases are the bias.
    - GRU: Linen applies the reset after the recurrent matmul and has a
      recurrent bias for ``n`` only, inside the reset:
      ``n = tanh(x W_n + b_in + r * (h U_n + b_hn))``. That is ``rj.gru()``
      (``reset_after=True``) whose recurrent biases of r and z are zero.
    - Simple: ``residual=True`` (``h U + h``) becomes the recurrent kernel
      ``U + I`` (equal up to rounding).

    Sizes are read from the parameters (Linen's cells read theirs from the
    carry, not from ``features``). The cell's ``init`` keeps rnn_jax's
    initialisers ('Coming from Flax' in the docs). Subclasses and
    low-precision modules are refused in words.

    Example:
        >>> module = nn.LSTMCell(8)
        >>> carry = module.initialize_carry(jax.random.key(0), (2, 4))
        >>> variables = module.init(jax.random.key(1), carry, jnp.ones((2, 4)))
        >>> cell, params = from_linen(module, variables)
        >>> params.kernel.shape, params.recurrent_kernel.shape
        ((4, 32), (8, 32))
        >>> carry, y = cell.step(params, carry_from_flax(carry), jnp.ones((2, 4)))
    """
    convert = _FROM_LINEN.get(type(module))
    if convert is None:
        raise TypeError(
            "module must be an nn.LSTMCell, nn.OptimizedLSTMCell, nn.GRUCell or nn.SimpleCell "
            f"(not a subclass, whose step may differ); got {type(module).__name__}"
        )
    return convert(module, variables)


# Per cuDNN mode: Linen's gate names, and which of a gate's two modules holds its one bias.
_TO_LINEN = {
    "lstm": (_LSTM_GATES, "h"),
    "gru": (_GRU_GATES, "i"),
    "rnn_tanh": (("",), "i"),
    "rnn_relu": (("",), "i"),
}


def _linen_module(mode: str, hidden_size: int, dtype: jnp.dtype, optimized: bool) -> LinenCell:
    if mode == "lstm":
        return (nn.OptimizedLSTMCell if optimized else nn.LSTMCell)(hidden_size, param_dtype=dtype)
    if mode == "gru":
        return nn.GRUCell(hidden_size, param_dtype=dtype)
    activation = jnp.tanh if mode == "rnn_tanh" else jax.nn.relu
    return nn.SimpleCell(hidden_size, activation_fn=activation, param_dtype=dtype)


def to_linen(
    cell: Cell, params: Any, *, optimized: bool = False
) -> tuple[LinenCell, dict[str, Any]]:
    """``(module, variables)``: the Linen cell computing ``cell`` with ``params``.

    ``cell`` declares the dense cuDNN/PyTorch layout (`rnn_jax.cells.CudnnLayout`):
    an ``rj.lstm`` without peepholes, projection or layer norm (an
    ``nn.LSTMCell``, or ``nn.OptimizedLSTMCell`` with ``optimized``), an
    ``rj.gru()`` (reset after the matmul: an ``nn.GRUCell``, the recurrent
    biases of r and z folded into the input biases), or an ``rj.simple``
    with tanh or relu (an ``nn.SimpleCell``), default activations, float32
    parameters. Anything else raises a ValueError saying what. ``module.apply(
    variables, carry_to_flax(carry), x)`` is ``cell.step(params, carry, x)``.

    Example:
        >>> cell = rj.gru(8)
        >>> module, variables = to_linen(cell, cell.init(jax.random.key(0), 4))
        >>> variables["params"]["hn"]["bias"].shape
        (8,)
    """
    layout = cell.cudnn_layout
    if layout is None or layout.proj_size:
        raise ValueError(
            f"to_linen converts cells with the dense cuDNN layout (rj.lstm without peepholes, "
            "projection or layer norm, rj.gru with reset_after=True, rj.simple with tanh or "
            f"relu, default activations), which Linen's cells compute; the {cell.name} cell "
            f"{'has a projection' if layout else 'declares none'}"
        )
    dtype = _precision_of(params, None, "to_linen")
    gates, bias_holder = _TO_LINEN[layout.mode]
    weights = layout.to_weights(params)
    blocks = zip(
        gates,
        jnp.split(weights.weight_ih.T, len(gates), axis=-1),
        jnp.split(weights.weight_hh.T, len(gates), axis=-1),
        jnp.split(weights.bias_ih, len(gates)),
        jnp.split(weights.bias_hh, len(gates)),
        strict=True,
    )
    linen = {}
    for gate, kernel, recurrent_kernel, bias_ih, bias_hh in blocks:
        inputs, recurrent = {"kernel": kernel}, {"kernel": recurrent_kernel}
        if layout.mode == "gru" and gate == "n":  # its recurrent bias stays inside the reset
            inputs["bias"], recurrent["bias"] = bias_ih, bias_hh
        else:  # Linen sums both matmuls before the nonlinearity: one bias
            (recurrent if bias_holder == "h" else inputs)["bias"] = bias_ih + bias_hh
        linen[f"i{gate}"], linen[f"h{gate}"] = inputs, recurrent
    module = _linen_module(layout.mode, layout.hidden_size, dtype, optimized)
    return module, {"params": linen}


def carry_from_flax(carry: Any) -> Any:
    """Flax's carry of an LSTM, GRU or simple cell (Linen's or NNX's) as rnn_jax's.

    An LSTM's ``(c, h)`` becomes ``LSTMState(h, c)`` (``LSTMState(*carry)``
    would swap them); a ``[*batch, H]`` array stays as it is.

    Example:
        >>> c, h = jnp.zeros((2, 8)), jnp.ones((2, 8))
        >>> float(carry_from_flax((c, h)).h[0, 0])
        1.0
    """
    if isinstance(carry, LSTMState):
        raise TypeError(
            "carry is already an rnn_jax LSTMState(h, c); carry_from_flax reads Flax's (c, h)"
        )
    if isinstance(carry, tuple | list) and len(carry) == 2:
        c, h = carry
        return LSTMState(h=h, c=c)
    if isinstance(carry, jax.Array | np.ndarray):
        return carry
    raise TypeError(
        f"carry must be Flax's LSTM carry (c, h) or a [*batch, H] array; got {type(carry).__name__}"
    )


def carry_to_flax(carry: Any) -> Any:
    """rnn_jax's carry of an LSTM, GRU or simple cell as Flax's: ``LSTMState(h, c)`` becomes
    ``(c, h)``; a ``[*batch, H]`` array stays as it is.

    Example:
        >>> c, h = carry_to_flax(rj.LSTMState(h=jnp.ones(3), c=jnp.zeros(3)))
        >>> float(h[0])
        1.0
    """
    if isinstance(carry, LSTMState):
        return carry.c, carry.h
    if isinstance(carry, jax.Array | np.ndarray):
        return carry
    raise TypeError(
        f"carry must be an rnn_jax LSTMState or a [*batch, H] array; got {type(carry).__name__}"
    )
