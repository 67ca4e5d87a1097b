"""Real-gated linear recurrent unit (De et al. 2024, Griffin; RecurrentGemma).

``r = sigmoid(x W_a + b_a)`` (recurrence gate), ``i = sigmoid(x W_x + b_x)`` (input
gate), ``log a_t = -c * r * softplus(Lambda)`` (so ``a_t = sigma(-Lambda)^(c r)`` in
``(0, 1)``), and ``h = a_t * h_prev + sqrt(1 - a_t^2) * (i * x)`` with ``c = 8``.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnn_jax._validate import positive_int
from rnn_jax.cells.arrays import add_bias, along, zeros_state
from rnn_jax.cells.bound import bound
from rnn_jax.cells.capabilities import LinearRecurrence, diagonal_recur, states_as_outputs
from rnn_jax.cells.cell import Cell, split_cell
from rnn_jax.cells.config import Config
from rnn_jax.cells.initializers import Initializer, glorot_uniform, zeros


class RGLRUParams(NamedTuple):
    gate_kernel: jax.Array  # [F, 2H]: gates a (recurrence), x (input)
    gate_bias: jax.Array  # [2H]
    a_param: jax.Array  # [H]: log a = -softplus(a_param) before the gate's power c * r
    input_kernel: jax.Array | None = None  # [F, H] when F != H; else the input itself is gated


@partial(jax.custom_jvp, nondiff_argnums=(1,))
def sqrt_bound_derivative(x: jax.Array, max_gradient: float) -> jax.Array:
    """``sqrt(x)`` whose derivative is capped at ``max_gradient`` near 0 (RecurrentGemma's)."""
    return jnp.sqrt(x)


@sqrt_bound_derivative.defjvp
def _sqrt_bound_derivative_jvp(max_gradient, primals, tangents):
    (x,), (dx,) = primals, tangents
    clipped = jnp.maximum(x, 1.0 / (4.0 * max_gradient**2))
    return jnp.sqrt(x), 0.5 * dx / jnp.sqrt(clipped)


def _ring(key, shape, dtype=jnp.float32, *, min_rad: float, max_rad: float) -> jax.Array:
    u = jax.random.uniform(key, shape, dtype)
    log_a = 0.5 * jnp.log(u * (max_rad**2 - min_rad**2) + min_rad**2)
    return jnp.log(jnp.expm1(-log_a))  # softplus^-1(-log a)


def ring_init(min_rad: float = 0.9, max_rad: float = 0.999) -> Initializer:
    """Initialises ``a_param`` so ``a = exp(-softplus(a_param))`` has ``a^2`` uniform in
    ``[min_rad^2, max_rad^2]`` (RecurrentGemma's ``rnn_param_init``)."""
    return bound(_ring, min_rad=min_rad, max_rad=max_rad)


class RGLRUInit(NamedTuple):
    """How an RG-LRU initialises its weights."""

    kernel_init: Initializer
    bias_init: Initializer
    a_init: Initializer
    dtype: jnp.dtype


def init_rg_lru(key, input_size, *, hidden_size: int, init: RGLRUInit) -> RGLRUParams:
    """``init`` of an RG-LRU; ``input_kernel`` only where ``F != H``."""
    positive_int("input_size", input_size)
    H, dtype = hidden_size, init.dtype
    k_gate, k_bias, k_a, k_in = jax.random.split(key, 4)
    return RGLRUParams(
        gate_kernel=init.kernel_init(k_gate, (input_size, 2 * H), dtype),
        gate_bias=init.bias_init(k_bias, (2 * H,), dtype),
        a_param=init.a_init(k_a, (H,), dtype),
        input_kernel=(init.kernel_init(k_in, (input_size, H), dtype) if input_size != H else None),
    )


def project(params: RGLRUParams, x, *, c: float, max_gradient: float):
    """``(a, b)`` of every step: ``a = exp(log a)``, ``b = sqrt(1 - a^2) * (i * value)``."""
    r, i = jnp.split(jax.nn.sigmoid(add_bias(x @ params.gate_kernel, params.gate_bias)), 2, -1)
    log_a = -c * r * along(jax.nn.softplus(params.a_param), r)
    value = x if params.input_kernel is None else x @ params.input_kernel
    scale = sqrt_bound_derivative(-jnp.expm1(2.0 * log_a), max_gradient)
    return jnp.exp(log_a), scale * (i * value)


def gate_input_size(params: RGLRUParams) -> int:
    """The feature size an RG-LRU's ``gate_kernel`` expects."""
    return params.gate_kernel.shape[0]


def rg_lru(
    hidden_size: int,
    *,
    c: float = 8.0,
    max_gradient: float = 1000.0,
    kernel_init: Initializer = glorot_uniform,
    bias_init: Initializer = zeros,
    a_init: Initializer | None = None,
    dtype=jnp.float32,
) -> Cell:
    """RG-LRU cell (Griffin / RecurrentGemma) with ``hidden_size`` real state units.

    Carry and output: ``h: [*batch, hidden_size]``. The gates are dense
    (``gate_kernel [F, 2H]``; RecurrentGemma uses block-diagonal ones, a
    special case). The gated value is the input itself when ``F == H``, as in
    the paper; otherwise ``x input_kernel`` with ``input_kernel [F, H]``.
    ``sqrt(1 - a^2)`` has its derivative capped at ``max_gradient`` as in
    RecurrentGemma. The document-start reset of RecurrentGemma (no
    normalisation at position 0) is not applied: a sequence here starts from
    ``initial_state``.

    ``linear`` gives ``a_t`` and ``b_t = sqrt(1 - a_t^2) * i_t * x_t`` (``b`` may be
    negative, so there is no log-space form).

    Example:
        >>> cell = rj.rg_lru(32)
        >>> params = cell.init(jax.random.key(0), 32)
        >>> params.input_kernel is None
        True
    """
    positive_int("hidden_size", hidden_size)
    if not c > 0:
        raise ValueError(f"c must be positive; got {c}")
    init = RGLRUInit(kernel_init, bias_init, a_init or ring_init(), dtype)
    coefficients = bound(project, c=c, max_gradient=max_gradient)
    return split_cell(
        init=bound(init_rg_lru, hidden_size=hidden_size, init=init),
        initial_state=zeros_state(hidden_size),
        project=coefficients,
        recur=diagonal_recur,
        input_size=gate_input_size,
        name="rg_lru",
        config=Config(hidden_size=hidden_size, c=c, max_gradient=max_gradient),
        linear=LinearRecurrence(coefficients=coefficients, output=states_as_outputs),
    )
