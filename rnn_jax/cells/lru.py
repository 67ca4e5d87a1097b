"""Linear recurrent unit (Orvieto et al. 2023, "Resurrecting Recurrent Neural Networks").

A complex diagonal recurrence ``h = lambda * h_prev + gamma * (x B)`` with
``lambda = exp(-exp(nu_log) + i exp(theta_log))`` (stable for any parameters:
``|lambda| < 1``), the normalisation ``gamma = exp(gamma_log)`` initialised to
``sqrt(1 - |lambda|^2)``, and a real output ``y = Re(h C) + D * x``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnn_jax._validate import optional_positive_int, positive_int
from rnn_jax.cells.activations import resolve_activation
from rnn_jax.cells.arrays import along, dtype_of
from rnn_jax.cells.bound import bound
from rnn_jax.cells.capabilities import LinearRecurrence
from rnn_jax.cells.cell import Cell, split_cell
from rnn_jax.cells.config import Config


class LRUParams(NamedTuple):
    nu_log: jax.Array  # [N]: |lambda| = exp(-exp(nu_log))
    theta_log: jax.Array  # [N]: arg lambda = exp(theta_log)
    gamma_log: jax.Array  # [N]: the input normalisation
    B_re: jax.Array  # [F, N]
    B_im: jax.Array  # [F, N]
    C_re: jax.Array  # [N, O]
    C_im: jax.Array  # [N, O]
    D: jax.Array | None  # [F]: the diagonal skip, present when O == F


class LRURing(NamedTuple):
    """Where an LRU's eigenvalues start: ``r_min <= |lambda| <= r_max``, phases in
    ``[0, max_phase]``."""

    r_min: float
    r_max: float
    max_phase: float


def lru_lambda(params: LRUParams) -> jax.Array:
    """The complex diagonal ``lambda [N]`` of an LRU, ``|lambda| < 1`` by construction."""
    return jnp.exp(-jnp.exp(params.nu_log) + 1j * jnp.exp(params.theta_log))


def init_lru(key, input_size, *, hidden_size, output_size, ring: LRURing, dtype) -> LRUParams:
    """``init`` of an LRU as the paper: eigenvalues uniform on the ring, ``B ~ N(0, 1/(2F))``,
    ``C ~ N(0, 1/N)``, ``D ~ N(0, 1)``."""
    positive_int("input_size", input_size)
    N, out = hidden_size, output_size or input_size
    k_nu, k_theta, k_bre, k_bim, k_cre, k_cim, k_d = jax.random.split(key, 7)
    u1 = jax.random.uniform(k_nu, (N,), dtype)
    u2 = jax.random.uniform(k_theta, (N,), dtype)
    nu_log = jnp.log(-0.5 * jnp.log(u1 * (ring.r_max**2 - ring.r_min**2) + ring.r_min**2))
    b_std = 1.0 / math.sqrt(2 * input_size)
    c_std = 1.0 / math.sqrt(N)
    return LRUParams(
        nu_log=nu_log,
        theta_log=jnp.log(ring.max_phase * u2 + jnp.finfo(dtype).tiny),
        gamma_log=0.5 * jnp.log1p(-jnp.exp(-2.0 * jnp.exp(nu_log))),
        B_re=b_std * jax.random.normal(k_bre, (input_size, N), dtype),
        B_im=b_std * jax.random.normal(k_bim, (input_size, N), dtype),
        C_re=c_std * jax.random.normal(k_cre, (N, out), dtype),
        C_im=c_std * jax.random.normal(k_cim, (N, out), dtype),
        D=jax.random.normal(k_d, (input_size,), dtype) if out == input_size else None,
    )


def complex_dtype(params: LRUParams) -> jnp.dtype:
    """The LRU state's dtype: complex, as wide as `dtype_of` the params."""
    return jnp.result_type(dtype_of(params), jnp.complex64)


def lru_state(params, batch_shape=(), *, hidden_size: int) -> jax.Array:
    """``initial_state`` of an LRU: complex zeros ``[*batch, N]``."""
    return jnp.zeros((*tuple(batch_shape), hidden_size), complex_dtype(params))


def inputs(params: LRUParams, x: jax.Array) -> jax.Array:
    """``b = gamma * (x B)``, complex ``[..., N]``."""
    scale = jnp.exp(params.gamma_log)
    bu = (x @ params.B_re) + 1j * (x @ params.B_im)
    return (bu * along(scale, bu)).astype(complex_dtype(params))


def output(params: LRUParams, h: jax.Array, x: jax.Array, *, act) -> jax.Array:
    """``y = act(Re(h C) + D * x)``."""
    y = h.real @ params.C_re - h.imag @ params.C_im
    if params.D is not None:
        y = y + x * along(params.D, x)
    return act(y)


def project(params: LRUParams, x: jax.Array):
    """The carry-free part of a step: ``(b, x)``, ``x`` kept for the skip ``D``."""
    return inputs(params, x), x


def recur(params: LRUParams, h: jax.Array, xp, *, act):
    """``h = lambda * h + b``, then the output."""
    b, x = xp
    h = along(lru_lambda(params).astype(h.dtype), h) * h + b
    return h, output(params, h, x, act=act)


def coefficients(params: LRUParams, xs: jax.Array):
    """``LinearRecurrence.coefficients``: ``a = lambda`` broadcast over time and batch, ``b``."""
    b = inputs(params, xs)
    return jnp.broadcast_to(lru_lambda(params).astype(b.dtype), b.shape), b


def lru(
    hidden_size: int,
    *,
    output_size: int | None = None,
    r_min: float = 0.9,
    r_max: float = 0.999,
    max_phase: float = 2 * math.pi,
    activation: str | Callable[[jax.Array], jax.Array] = "identity",
    dtype=jnp.float32,
) -> Cell:
    """LRU cell (Orvieto et al. 2023) with ``hidden_size`` complex state units.

    - Carry: ``h: [*batch, hidden_size]``, complex (complex64 for float32
      parameters); ``initial_state`` gives complex zeros.
    - Output: ``y = act(Re(h C) + D * x)``, real, ``[*batch, O]``, with
      ``act = activation`` (default the identity, the LRU alone; the paper's
      deep LRU puts a nonlinearity such as ``"gelu"`` after each one, which
      is what makes a stack of them more than one linear map). ``output_size``
      ``O`` defaults to the input size, as in the paper (the model width), and
      then has the diagonal skip ``D``; with another ``output_size`` there is
      no skip (``params.D is None``).
    - Initialisation as the paper: eigenvalues uniform on the ring
      ``r_min <= |lambda| <= r_max`` with phases in ``[0, max_phase]``,
      ``B ~ N(0, 1/(2F))``, ``C ~ N(0, 1/N)``, ``D ~ N(0, 1)``.

    ``linear`` gives ``a = lambda`` (broadcast over time and batch) and
    ``b = gamma * (x B)``, so the ``parallel`` backend applies (in linear, not
    log, space: the coefficients are complex).

    Example:
        >>> cell = rj.lru(64)
        >>> params = cell.init(jax.random.key(0), 16)
        >>> carry, ys = rj.scan(cell, params, jnp.ones((50, 16)), backend="parallel")
        >>> carry.dtype, ys.shape
        (dtype('complex64'), (50, 16))
    """
    positive_int("hidden_size", hidden_size)
    optional_positive_int("output_size", output_size)
    if not 0.0 <= r_min < r_max < 1.0:
        raise ValueError(f"need 0 <= r_min < r_max < 1; got r_min={r_min}, r_max={r_max}")
    if not max_phase > 0:
        raise ValueError(f"max_phase must be positive; got {max_phase}")
    act = resolve_activation("activation", activation)
    ring = LRURing(r_min, r_max, max_phase)
    return split_cell(
        init=bound(
            init_lru, hidden_size=hidden_size, output_size=output_size, ring=ring, dtype=dtype
        ),
        initial_state=bound(lru_state, hidden_size=hidden_size),
        project=project,
        recur=bound(recur, act=act),
        input_size=lru_input_size,
        name="lru",
        config=Config(
            hidden_size=hidden_size,
            output_size=output_size,
            r_min=r_min,
            r_max=r_max,
            max_phase=max_phase,
            activation=activation,
        ),
        linear=LinearRecurrence(coefficients=coefficients, output=bound(output, act=act)),
    )


def lru_input_size(params: LRUParams) -> int:
    """The feature size an LRU's ``B`` expects."""
    return params.B_re.shape[0]
