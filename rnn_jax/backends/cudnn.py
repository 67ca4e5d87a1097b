"""The ``cudnn`` backend: cuDNN's fused LSTM through ``jax.experimental.rnn``.

For cells that declare the capability of being cuDNN's LSTM
(`rnn_jax.cells.CudnnLayout` with mode ``"lstm"`` and no projection: ``rj.lstm``
without peepholes, projection or layer normalisation, with the default
tanh/sigmoid activations), in float32, on NVIDIA GPUs. A wrapped cell (dropout,
zoneout) has no such capability, so it is refused in words, never run as the
plain LSTM. The cell's own `CudnnWeights` map to cuDNN's packed weight vector
exactly (see `pack_lstm_weights`); gradients flow back through the packing to
the parameters.

Lengths and reversal keep the library's semantics: cuDNN gets the sequence
lengths (at least 1; empty sequences are restored to their initial state and
zero outputs afterwards), and ``reverse=True`` flips each valid prefix before
and after the call. Masks with holes and resets have no cuDNN form: refused.

``implementation="reference"`` runs the same packing through
``jax.experimental.rnn.lstm_ref``, the pure-JAX model of the cuDNN call, on
any platform: the tests use it to check everything but the cuDNN kernel
itself on a CPU.

Example:
    >>> cell = rj.lstm(16)
    >>> params = cell.init(jax.random.key(0), 8)
    >>> checked = rj.backends.Cudnn(implementation="reference")  # any platform
    >>> carry, ys = rj.scan(cell, params, jnp.ones((5, 2, 8)), backend=checked)
    >>> ys.shape
    (5, 2, 16)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import jax
import jax.numpy as jnp
from jax.experimental import rnn as jrnn

from rnn_jax import _validate
from rnn_jax.backends.contract import Backend, Problem
from rnn_jax.backends.masking import flip_valid
from rnn_jax.cells.layouts import CudnnWeights

IMPLEMENTATIONS = ("cudnn", "reference")


def pack_lstm_weights(weights: CudnnWeights) -> jax.Array:
    """One layer and direction of an LSTM's `CudnnWeights` as cuDNN's flat weight vector.

    Layout (see ``jax.experimental.rnn``): ``W_ih [4H, F]``, ``W_hh [4H, H]``,
    ``b_ih [4H]``, ``b_hh [4H]``, each flattened row-major, gates i, f, g, o.
    """
    return jnp.concatenate(
        [
            weights.weight_ih.reshape(-1),
            weights.weight_hh.reshape(-1),
            weights.bias_ih,
            weights.bias_hh,
        ]
    )


def unpack_lstm_weights(weights: jax.Array, input_size: int, hidden_size: int) -> CudnnWeights:
    """cuDNN's flat weight vector (one layer, one direction) as `CudnnWeights`."""
    W_ih, W_hh, b_ih, b_hh = jrnn.unpack_lstm_weights(
        weights, input_size, hidden_size, num_layers=1, bidirectional=False
    )
    return CudnnWeights(W_ih[0], W_hh[0], b_ih[0], b_hh[0])


def platform_reason() -> str | None:
    """Why cuDNN's kernels cannot run here, or None on an NVIDIA GPU with them."""
    where = jax.default_backend()
    if where != "gpu" or jrnn.gpu_rnn is None:
        return (
            f"it needs an NVIDIA GPU (cuDNN through jax.experimental.rnn) and JAX runs on "
            f"{where!r} here; rj.backends.Cudnn(implementation='reference') checks the "
            "mapping on any platform"
        )
    version = str(getattr(jax.devices()[0].client, "platform_version", "")).lower()
    if "rocm" in version or "hip" in version:
        return f"cuDNN runs on NVIDIA GPUs and this GPU runs ROCm: {version}"
    return None


def refusal(cell, problem: Problem, implementation: str) -> str | None:
    """Why this backend cannot run ``cell`` over ``problem``, or None."""
    layout = cell.cudnn_layout
    if layout is None or layout.mode != "lstm":
        return "it is not cuDNN's LSTM (it declares no CudnnLayout of mode 'lstm')"
    if layout.proj_size:
        return "cuDNN's LSTM in JAX has no projection (proj_size)"
    if problem.dtypes != {jnp.dtype(jnp.float32)}:
        return f"cuDNN runs float32 here; got dtypes {sorted(str(d) for d in problem.dtypes)}"
    if problem.valid is not None and problem.length is None:
        return "cuDNN takes lengths (right padding), not masks with holes"
    if problem.starts is not None:
        return "cuDNN does not restart its carry (resets)"
    if implementation == "cudnn":
        return platform_reason()
    return None


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


def cudnn_scan(cell, params, problem: Problem, *, implementation: str, precision: Any):
    call = _cudnn_call if implementation == "cudnn" else _reference_call
    x, lengths = problem.xs, problem.length
    T, B, F = x.shape
    H = cell.cudnn_layout.hidden_size
    state = problem.initial_state
    if problem.reverse:
        x = flip_valid(x, lengths)
    seq = jnp.full((B,), T, jnp.int32) if lengths is None else jnp.maximum(lengths, 1)
    h0, c0 = state.h[None], state.c[None]
    y, h_n, c_n = call(
        jnp.swapaxes(x, 0, 1),
        h0,
        c0,
        pack_lstm_weights(cell.cudnn_layout.to_weights(params)),
        seq.astype(jnp.int32),
        input_size=F,
        hidden_size=H,
        precision=precision,
    )
    ys = jnp.swapaxes(y, 0, 1)  # [T, B, H]
    h, c = h_n[0], c_n[0]
    if lengths is not None:
        ys = jnp.where(problem.valid[..., None], ys, 0.0)
        empty = (lengths == 0)[:, None]
        h = jnp.where(empty, state.h, h)
        c = jnp.where(empty, state.c, c)
    if problem.reverse:
        ys = flip_valid(ys, lengths)
    return state._replace(h=h, c=c), ys


@dataclass(frozen=True)
class Cudnn(Backend):
    """A configured ``cudnn`` backend.

    Args:
        implementation: ``"cudnn"`` (``jax.experimental.rnn.lstm``: NVIDIA GPUs
            only) or ``"reference"`` (``jax.experimental.rnn.lstm_ref``: the
            same packing and semantics in plain JAX, on any platform).
        precision: the matmul precision handed to cuDNN (``None``: cuDNN may
            use TF32, like XLA's default float32 matmuls on the same GPU;
            ``jax.lax.Precision.HIGHEST``: full float32).
    """

    name = "cudnn"
    implementation: Literal["cudnn", "reference"] = "cudnn"
    precision: Any = None

    def __post_init__(self):
        _validate.one_of("implementation", self.implementation, IMPLEMENTATIONS)

    def supports(self, cell, problem: Problem) -> str | None:
        return refusal(cell, problem, self.implementation)

    def run(self, cell, params, problem: Problem):
        return cudnn_scan(
            cell, params, problem, implementation=self.implementation, precision=self.precision
        )
