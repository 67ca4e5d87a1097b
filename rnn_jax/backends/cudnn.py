"""The ``cudnn`` backend: cuDNN's fused LSTM through ``jax.experimental.rnn``.

For dense float32 LSTMs (``rj.lstm`` without peepholes, projection or layer
normalisation, with the default tanh/sigmoid activations) on NVIDIA GPUs.
Our parameters map to cuDNN's packed weight vector exactly: ``W_ih =
kernel.T``, ``W_hh = recurrent_kernel.T`` (gate order i, f, g, o in both),
``b_ih = bias`` and ``b_hh = 0`` (see `pack_lstm_weights`); gradients flow
back through the packing to the parameters.

Lengths and reversal keep the library's semantics: cuDNN gets the sequence
lengths (at least 1; empty sequences are restored to their initial state and
zero outputs afterwards), and ``reverse=True`` flips each valid prefix before
and after the call.

``implementation="reference"`` runs the same packing through
``jax.experimental.rnn.lstm_ref``, the pure-JAX model of the cuDNN call, on
any platform: the tests use it to check everything but the cuDNN kernel
itself on a CPU.

Example:
    >>> cell = rj.lstm(128)
    >>> params = cell.init(jax.random.key(0), 64)
    >>> carry, ys = rj.scan(cell, params, xs, backend="cudnn")   # on an NVIDIA GPU
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import rnn as jrnn

from rnn_jax.backends.masking import flip_valid
from rnn_jax.backends.registry import Backend, register_backend
from rnn_jax.cells.lstm import LSTMParams, LSTMState

IMPLEMENTATIONS = ("cudnn", "reference")
_TANH = ("tanh", jnp.tanh, jax.nn.tanh)
_SIGMOID = ("sigmoid", jax.nn.sigmoid)


def pack_lstm_weights(params: LSTMParams) -> jax.Array:
    """Our dense LSTM parameters as cuDNN's flat weight vector (one layer, one direction).

    Layout (see ``jax.experimental.rnn``): ``W_ih [4H, F]``, ``W_hh [4H, H]``,
    ``b_ih [4H]``, ``b_hh [4H]``, each flattened row-major, gates i, f, g, o.
    Our single bias is ``b_ih``; ``b_hh`` is zero.
    """
    bias = params.bias
    return jnp.concatenate(
        [
            params.kernel.T.reshape(-1),
            params.recurrent_kernel.T.reshape(-1),
            bias,
            jnp.zeros_like(bias),
        ]
    )


def unpack_lstm_weights(weights: jax.Array, input_size: int, hidden_size: int) -> LSTMParams:
    """cuDNN's flat weight vector (one layer, one direction) as our `LSTMParams`.

    The two biases are summed, as for PyTorch's ``b_ih + b_hh``.
    """
    W_ih, W_hh, b_ih, b_hh = jrnn.unpack_lstm_weights(
        weights, input_size, hidden_size, num_layers=1, bidirectional=False
    )
    return LSTMParams(kernel=W_ih[0].T, recurrent_kernel=W_hh[0].T, bias=b_ih[0] + b_hh[0])


def check_cell(cell, params, xs, initial_state, backend: str = "cudnn") -> None:
    """Raises a ValueError naming the cell and the backend unless it is a dense float32 LSTM."""
    config = dict(cell.config)
    reasons = []
    if cell.name != "lstm" or not isinstance(params, LSTMParams):
        reasons.append("it is not an rj.lstm")
    else:
        if config.get("peephole") or params.peephole is not None:
            reasons.append("peepholes")
        if config.get("proj_size") or params.projection is not None:
            reasons.append("a projection (proj_size)")
        if config.get("layer_norm") or params.input_norm is not None:
            reasons.append("layer normalisation")
        if config.get("activation", "tanh") not in _TANH:
            reasons.append(f"activation {config.get('activation')!r} (cuDNN has tanh)")
        if config.get("gate_activation", "sigmoid") not in _SIGMOID:
            reasons.append(f"gate_activation {config.get('gate_activation')!r} (cuDNN has sigmoid)")
        dtypes = {jnp.dtype(x.dtype) for x in jax.tree.leaves((params, initial_state))}
        dtypes.add(jnp.dtype(xs.dtype))
        if dtypes != {jnp.dtype(jnp.float32)}:
            reasons.append(f"dtypes {sorted(str(d) for d in dtypes)} (cuDNN runs float32)")
    if reasons:
        raise ValueError(
            f"the {backend} backend runs dense float32 LSTMs only; the {cell.name} cell has "
            + ", ".join(reasons)
        )


def check_platform(backend: str = "cudnn") -> None:
    """Raises a ValueError unless JAX runs on an NVIDIA GPU with its cuDNN RNN kernels."""
    where = jax.default_backend()
    if where != "gpu" or jrnn.gpu_rnn is None:
        raise ValueError(
            f"the {backend} backend needs an NVIDIA GPU (cuDNN through jax.experimental.rnn); "
            f"JAX runs on {where!r} here. Use backend='sequential', or "
            f"rnn_jax.backends.cudnn.cudnn(implementation='reference') to check the mapping"
        )
    version = str(getattr(jax.devices()[0].client, "platform_version", "")).lower()
    if "rocm" in version or "hip" in version:
        raise ValueError(
            f"the {backend} backend runs on NVIDIA GPUs (cuDNN); this GPU runs ROCm: {version}"
        )


def _reference_call(x, h0, c0, weights, seq_lengths, *, input_size, hidden_size, precision):
    del precision
    W_ih, W_hh, b_ih, b_hh = jrnn.unpack_lstm_weights(
        weights, input_size, hidden_size, num_layers=1, bidirectional=False
    )
    return jrnn.lstm_ref(
        x, h0, c0, W_ih, W_hh, b_ih, b_hh, seq_lengths, input_size, hidden_size, 1, 0.0, False
    )


def _cudnn_call(x, h0, c0, weights, seq_lengths, *, input_size, hidden_size, precision):
    return jrnn.lstm(
        x,
        h0,
        c0,
        weights,
        seq_lengths,
        input_size=input_size,
        hidden_size=hidden_size,
        num_layers=1,
        dropout=0.0,
        bidirectional=False,
        precision=precision,
    )


def cudnn(*, implementation: str = "cudnn", precision: Any = None) -> Backend:
    """A configured ``cudnn`` backend.

    Args:
        implementation: ``"cudnn"`` (``jax.experimental.rnn.lstm``: NVIDIA GPUs
            only) or ``"reference"`` (``jax.experimental.rnn.lstm_ref``: the
            same packing and semantics in plain JAX, on any platform).
        precision: the matmul precision handed to cuDNN (``None``: cuDNN may
            use TF32, like XLA's default float32 matmuls on the same GPU;
            ``jax.lax.Precision.HIGHEST``: full float32).
    """
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}; got {implementation!r}")
    call = _cudnn_call if implementation == "cudnn" else _reference_call

    def run(cell, params, xs, *, initial_state, length, reverse, unroll):
        del unroll
        check_cell(cell, params, xs, initial_state)
        if implementation == "cudnn":
            check_platform()
        T, F = xs.shape[0], xs.shape[-1]
        batch_shape = tuple(xs.shape[1:-1])
        B = int(np.prod(batch_shape, dtype=int))
        H = params.recurrent_kernel.shape[0]
        x = xs.reshape(T, B, F)
        lengths = None if length is None else length.reshape(B).astype(jnp.int32)
        if reverse:
            x = flip_valid(x, lengths)
        seq = jnp.full((B,), T, jnp.int32) if lengths is None else jnp.maximum(lengths, 1)
        h0 = initial_state.h.reshape(1, B, H)
        c0 = initial_state.c.reshape(1, B, H)
        y, h_n, c_n = call(
            jnp.swapaxes(x, 0, 1),
            h0,
            c0,
            pack_lstm_weights(params),
            seq,
            input_size=F,
            hidden_size=H,
            precision=precision,
        )
        ys = jnp.swapaxes(y, 0, 1)  # [T, B, H]
        h, c = h_n[0], c_n[0]
        if lengths is not None:
            ys = jnp.where((jnp.arange(T)[:, None] < lengths)[..., None], ys, 0.0)
            empty = (lengths == 0)[:, None]
            h = jnp.where(empty, h0[0], h)
            c = jnp.where(empty, c0[0], c)
        if reverse:
            ys = flip_valid(ys, lengths)
        carry = LSTMState(h.reshape(*batch_shape, H), c.reshape(*batch_shape, H))
        return carry, ys.reshape(T, *batch_shape, H)

    return Backend("cudnn", run)


default = register_backend(cudnn())
