"""The ``onednn`` backend: oneDNN's fused RNN, LSTM and GRU on the CPU, through XLA's FFI.

For cells that declare `rnn_jax.cells.CudnnLayout` (PyTorch's ``nn.RNN`` with
tanh or ReLU, ``nn.LSTM`` without a projection, ``nn.GRU``: ``rj.simple``,
``rj.lstm`` and ``rj.gru`` with their default activations), in float32, where
JAX runs on the CPU. oneDNN's vanilla RNN, LSTM and linear-before-reset GRU
(``lbr_gru``: the reset applied after the recurrent matmul, as in PyTorch and
``rj.gru``) run in C++ handlers that XLA calls (``jax.ffi.ffi_call``; sources
in ``csrc/onednn``). Under a gradient the forward pass runs in training mode and
keeps oneDNN's workspace, which oneDNN's backward pass reads (a
``jax.custom_vjp``); inference runs the forward pass alone and keeps nothing.
The cell's own `CudnnWeights` give the weights (in the GRU's case reordered to
oneDNN's gates u, r, o with the candidate's recurrent bias as a fourth), so
gradients flow back to the parameters through that map.

Lengths are exact: the handler cuts the time axis at every distinct length and
runs oneDNN once per stretch over the whole batch, so each sequence's final
carry is the state where it ends; padded inputs are zeroed first and padded
outputs zeroed after, and the backward pass sends a final carry's cotangent in
where its sequence ended. ``reverse=True`` without lengths runs oneDNN right to
left; with lengths each valid prefix is flipped before and after. Masks with
holes and resets have no such form: refused, as are other cells and dtypes.

One call runs one direction: ``rj.bidirectional`` scans twice (the backward
scan with ``reverse=True``), two oneDNN calls, where oneDNN's bidirectional
primitive would run both in one.

Which oneDNN: the ``onednn`` extra installs the ``onednn`` wheel, oneDNN 3.13,
whose CPU primitives run on the SYCL CPU device of Intel's OpenCL runtime over
its own TBB threads, on every core, while the XLA thread that calls it waits
(see `rnn_jax.backends._onednn_library`). Its RNN kernels are the ones PyTorch
ships (oneDNN 3.12 in PyTorch 2.13); oneDNN 3.2 (``onednn-cpu-gomp``, the
newest GNU OpenMP build on the package index, used where it is the one
installed) ran an LSTM at B32 T128 H256 in 1.47x ``sequential``'s time forward,
where 3.13 takes 0.76x (the README's "The oneDNN kernels"). ``threads``
applies to an OpenMP build only: ``threads=n`` runs each call on ``n`` OpenMP
threads, and the default, None, on the calling XLA thread alone, since
OpenMP's workers keep spinning after a call, on the cores XLA's pool runs the
rest of the program on (measured on 2 cores, an LSTM B16 T256 I32 H64 training
step: 62.6 ms on OpenMP's default of every core, 29.9 ms on one thread,
``sequential`` 24.1 ms). A SYCL build refuses ``threads=n`` in words.

Between calls each XLA thread keeps its oneDNN stream, the primitives of the
last 16 shapes it ran and the buffers of its reordered weights
(``csrc/onednn/reused.h``), so that a training step reuses oneDNN's scratchpad
and those buffers instead of faulting in fresh memory on every call; the cost is
the memory of the largest of each a thread has used.

Where the kernels were not built or oneDNN is not installed, `unavailable`
gives the reason and ``supports`` refuses with it, so ``auto`` never picks it.

Example:
    >>> cell = rj.lstm(16)
    >>> params = cell.init(jax.random.key(0), 8)
    >>> backend = rj.backends.OneDNN() if unavailable() is None else "reference"
    >>> carry, ys = rj.scan(cell, params, jnp.ones((5, 2, 8)), backend=backend)
    >>> ys.shape
    (5, 2, 16)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax import _validate
from rnn_jax.backends import _onednn_library
from rnn_jax.backends.contract import Backend, Problem
from rnn_jax.backends.masking import flip_valid
from rnn_jax.cells.layouts import CudnnWeights

unavailable = _onednn_library.unavailable

# The "mode" attribute of the handlers, by CudnnLayout mode (csrc/onednn/cells.h).
MODES = {"rnn_tanh": 0, "rnn_relu": 1, "lstm": 2, "gru": 3}


def onednn_weights(mode: str, weights: CudnnWeights) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(weights_layer [F, G*H], weights_iter [H, G*H], bias [Gb*H])`` as oneDNN takes them.

    PyTorch's matrices transposed, which is oneDNN's ``ldigo`` and the layout the cells
    keep their kernels in (so the transposes cancel and XLA copies no weights), gate
    blocks in oneDNN's order: the LSTM's i, f, g, o and the RNN's one block as they are;
    the GRU's r, z, n as u (= z), r, o (= n), whose bias has four blocks (the u and r
    biases summed, n's input and recurrent bias apart).
    """
    if mode != "gru":
        return weights.weight_ih.T, weights.weight_hh.T, weights.bias_ih + weights.bias_hh

    def update_first(rows):
        r, z, n = jnp.split(rows, 3)
        return jnp.concatenate([z, r, n])

    b_ih, b_hh = update_first(weights.bias_ih), update_first(weights.bias_hh)
    H = b_ih.shape[0] // 3
    bias = jnp.concatenate([b_ih[: 2 * H] + b_hh[: 2 * H], b_ih[2 * H :], b_hh[2 * H :]])
    return update_first(weights.weight_ih).T, update_first(weights.weight_hh).T, bias


class Call(NamedTuple):
    """The static attributes of one handler call (see csrc/onednn/ffi.cc)."""

    mode: int
    reverse: bool  # right to left (no lengths)
    threads: int  # OpenMP threads; 0: the runtime's own setting
    max_segments: int  # the most distinct lengths the workspace makes room for

    def attributes(self, training: bool) -> dict[str, Any]:
        attributes = {
            "mode": np.int32(self.mode),
            "reverse": self.reverse,
            "threads": np.int32(self.threads),
        }
        if training:
            attributes["max_segments"] = np.int64(self.max_segments)
        return attributes


SECOND_ORDER = (
    "oneDNN's kernels have first derivatives only (their backward pass): a derivative of "
    'order two through backend="onednn", or through backend="auto" where it runs onednn '
    '(rj.explain_auto says), needs backend="sequential" or "reference"'
)


def _like(x: jax.Array) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(x.shape, x.dtype)


def kernel(target: str, results, attributes: dict[str, Any]):
    """The handler ``target`` as a function of its operands. Differentiating it is refused in
    words (`SECOND_ORDER`): `fused_scan`'s backward pass is the only derivative there is."""
    handler = jax.ffi.ffi_call(target, results, vmap_method="sequential")

    @jax.custom_jvp
    def run(*operands):
        return handler(*operands, **attributes)

    @run.defjvp
    def _refuse(primals, tangents):
        raise ValueError(SECOND_ORDER)

    return run


def _forward(call: Call, training: bool, x, h0, c0, weights_layer, weights_iter, bias, lengths):
    T, N, F = x.shape
    H = h0.shape[-1]
    results = [jax.ShapeDtypeStruct((T, N, H), x.dtype), _like(h0), _like(c0)]
    if training:
        size = _onednn_library.workspace_bytes(call.mode, T, N, F, H, call.max_segments)
        results.append(jax.ShapeDtypeStruct((size,), jnp.uint8))
    target = "rnn_onednn_forward_training" if training else "rnn_onednn_forward_inference"
    return kernel(target, results, call.attributes(training))(
        x, h0, c0, weights_layer, weights_iter, bias, lengths
    )


@partial(jax.custom_vjp, nondiff_argnums=(0,))
def fused_scan(call: Call, x, h0, c0, weights_layer, weights_iter, bias, lengths):
    """``(ys [T, N, H], h [N, H], c [N, H or 0])``: one oneDNN scan (a custom_vjp)."""
    return tuple(_forward(call, False, x, h0, c0, weights_layer, weights_iter, bias, lengths))


def _fused_scan_forward(call: Call, *inputs):
    ys, h, c, workspace = _forward(call, True, *inputs)
    return (ys, h, c), (inputs, ys, workspace)


def _fused_scan_backward(call: Call, residuals, cotangents):
    inputs, ys, workspace = residuals
    lengths = inputs[-1]
    results = [_like(x) for x in inputs[:-1]]
    gradients = kernel("rnn_onednn_backward", results, call.attributes(True))(
        *inputs, ys, workspace, *cotangents
    )
    return (*gradients, np.zeros(lengths.shape, jax.dtypes.float0))


fused_scan.defvjp(_fused_scan_forward, _fused_scan_backward)


def refusal(cell, problem: Problem) -> str | None:
    """Why this backend cannot run ``cell`` over ``problem`` exactly, or None."""
    layout = cell.cudnn_layout
    if layout is None or layout.mode not in MODES:
        return (
            "it is not PyTorch's RNN, LSTM or GRU (it declares no CudnnLayout): oneDNN computes "
            "rj.simple, rj.lstm and rj.gru with their default activations"
        )
    if layout.proj_size:
        return "oneDNN's LSTM is run here without a projection (proj_size)"
    if problem.dtypes != {jnp.dtype(jnp.float32)}:
        return f"it runs float32 only; got dtypes {sorted(str(d) for d in problem.dtypes)}"
    if problem.xs.ndim != 3 or problem.xs.shape[-1] == 0:
        return f"oneDNN takes inputs [T, B, F] with F >= 1; got shape {problem.xs.shape}"
    if problem.valid is not None and problem.length is None:
        return "oneDNN takes lengths (right padding), not masks with holes"
    if problem.starts is not None:
        return "oneDNN does not restart its carry (resets)"
    if jax.default_backend() != "cpu":
        return f"oneDNN runs on the CPU and JAX runs on {jax.default_backend()!r} here"
    return unavailable()


def openmp_threads(threads: int | None) -> int:
    """The handlers' ``threads`` attribute: ``threads``, else one thread for an OpenMP build
    and 0 (the runtime's own scheduling) for any other."""
    if threads is not None:
        return threads
    return 1 if _onednn_library.cpu_runtime() == "OpenMP" else 0


def onednn_scan(cell, params, problem: Problem, *, threads: int | None):
    """``(final_carry, ys)`` of ``cell`` over ``problem`` by oneDNN (see the module doc)."""
    layout = cell.cudnn_layout
    state, lengths, xs = problem.initial_state, problem.length, problem.xs
    T, B, _ = xs.shape
    lstm = layout.mode == "lstm"
    h0 = state.h if lstm else state
    if T == 0 or B == 0:
        return state, jnp.zeros((T, B, layout.hidden_size), xs.dtype)
    c0 = state.c if lstm else jnp.zeros((B, 0), h0.dtype)
    if lengths is not None:
        xs = flip_valid(xs, lengths) if problem.reverse else xs
        xs = jnp.where(problem.valid[..., None], xs, 0.0)
    call = Call(
        mode=MODES[layout.mode],
        reverse=problem.reverse and lengths is None,
        threads=openmp_threads(threads),
        max_segments=1 if lengths is None else min(B, T),
    )
    weights = onednn_weights(layout.mode, layout.to_weights(params))
    steps = jnp.full((B,), T, jnp.int32) if lengths is None else lengths.astype(jnp.int32)
    ys, h, c = fused_scan(call, xs, h0, c0, *weights, steps)
    if lengths is not None:
        ys = jnp.where(problem.valid[..., None], ys, 0.0)
        ys = flip_valid(ys, lengths) if problem.reverse else ys
    return (state._replace(h=h, c=c) if lstm else h), ys


@dataclass(frozen=True)
class OneDNN(Backend):
    """A configured ``onednn`` backend.

    Args:
        threads: OpenMP threads each call runs on, for an OpenMP build of oneDNN
            (None, the default: the calling XLA thread alone). A SYCL build (the
            ``onednn`` extra's) schedules its own threads and refuses ``threads=n``.
    """

    name = "onednn"
    threads: int | None = None

    def __post_init__(self):
        _validate.optional_positive_int("threads", self.threads)

    def supports(self, cell, problem: Problem) -> str | None:
        reason = refusal(cell, problem)
        if reason is None and self.threads is not None:
            runtime = _onednn_library.cpu_runtime()
            if runtime != "OpenMP":
                return (
                    f"threads={self.threads} sets OpenMP threads, and this oneDNN runs on "
                    f"{runtime}, which schedules its own: leave threads=None"
                )
        return reason

    def run(self, cell, params, problem: Problem):
        return onednn_scan(cell, params, problem, threads=self.threads)
