"""The `Cell` protocol: a recurrent cell as a NamedTuple of pure functions.

A factory (``rj.lstm(128)``) closes over the hyperparameters and returns a
`Cell`. Parameters and carries are pytrees of arrays, so they pass through
``jit``, ``vmap``, ``grad``, optax and checkpoints unchanged.

Required fields::

    params = cell.init(key, input_size)
    carry = cell.initial_state(params, batch_shape=())
    carry, y = cell.step(params, carry, x)          # x: [*batch, input_size]

Optional fast paths, which backends ask for and never assume:

- ``project(params, x) -> xp`` and ``recur(params, carry, xp) -> (carry, y)``:
  the carry-free part of ``step`` (the input projection, one large matmul over
  ``[T, *batch, F]`` at once) and the recurrent part, with
  ``step(params, carry, x) == recur(params, carry, project(params, x))``.
- ``input_size(params) -> int``: the feature size ``params`` expect, so the
  driver can reject a wrong input at trace time.
- ``gates``: a `Gates`, the split of ``recur`` around its one recurrent
  matmul, which fused and custom-gradient kernels use.
- ``linear``: a `LinearRecurrence`, for cells whose state obeys
  ``h_t = a_t * h_{t-1} + b_t``, which parallel scans use.

``name`` and ``config`` describe the cell (its factory and hyperparameters);
they make summaries, exports and checkpoints self-describing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

PyTree = Any
Params = PyTree
Carry = PyTree
Initializer = Callable[..., jax.Array]


class Gates(NamedTuple):
    """``recur`` split around its recurrent matmul.

    ``recur(params, carry, xp) == combine(params, carry, xp, fed_back(carry) @ kernel(params))``
    where ``kernel(params): [R, G*H]`` is the recurrent matrix and
    ``fed_back(carry): [*batch, R]`` the state that multiplies it. Everything
    else in the step (biases, gates, normalisation, peepholes, projection) is
    in ``combine``, which a kernel may run wherever it likes, e.g. inside a
    fused loop that keeps ``kernel`` on chip.
    """

    kernel: Callable[[Params], jax.Array]
    fed_back: Callable[[Carry], jax.Array]
    combine: Callable[[Params, Carry, PyTree, jax.Array], tuple[Carry, jax.Array]]


class LinearRecurrence(NamedTuple):
    """The linear form of a cell whose carry ``h [*batch, H]`` obeys ``h_t = a_t * h_{t-1} + b_t``.

    - ``coefficients(params, xs) -> (a, b)``: both ``[T, *batch, H]`` for
      ``xs: [T, *batch, F]`` (complex for complex-state cells such as the LRU).
    - ``output(params, hs, xs) -> ys``: outputs from all states ``hs: [T, *batch, H]``
      and the inputs.
    - ``log_coefficients(params, xs) -> (log_a, log_b)``, optional: for cells
      whose ``a`` and ``b`` are positive, their logarithms, so a log-space scan
      stays finite over very long sequences.

    The cell's ``step`` must compute the same: ``h = a * h_prev + b`` then
    ``y = output`` at that step.
    """

    coefficients: Callable[[Params, jax.Array], tuple[jax.Array, jax.Array]]
    output: Callable[[Params, jax.Array, jax.Array], jax.Array]
    log_coefficients: Callable[[Params, jax.Array], tuple[jax.Array, jax.Array]] | None = None


class Cell(NamedTuple):
    """A recurrent cell: pure functions over parameter and carry pytrees.

    Example:
        >>> import jax, jax.numpy as jnp, rnn_jax as rj
        >>> cell = rj.gru(16)
        >>> params = cell.init(jax.random.key(0), 8)
        >>> carry = cell.initial_state(params, batch_shape=(4,))
        >>> carry, y = cell.step(params, carry, jnp.ones((4, 8)))
        >>> y.shape
        (4, 16)
    """

    init: Callable[[jax.Array, int], Params]
    initial_state: Callable[..., Carry]
    step: Callable[[Params, Carry, jax.Array], tuple[Carry, jax.Array]]
    input_size: Callable[[Params], int] | None = None
    project: Callable[[Params, jax.Array], PyTree] | None = None
    recur: Callable[[Params, Carry, PyTree], tuple[Carry, jax.Array]] | None = None
    gates: Gates | None = None
    linear: LinearRecurrence | None = None
    name: str = "cell"
    config: Mapping[str, Any] = {}


def split_cell(
    *,
    init: Callable[[jax.Array, int], Params],
    initial_state: Callable[..., Carry],
    project: Callable[[Params, jax.Array], PyTree],
    recur: Callable[[Params, Carry, PyTree], tuple[Carry, jax.Array]] | None = None,
    gates: Gates | None = None,
    input_size: Callable[[Params], int] | None,
    name: str,
    config: Mapping[str, Any],
    **fast_paths: Any,
) -> Cell:
    """Builds a `Cell` whose ``step`` is ``recur`` after ``project``.

    Give ``recur``, or ``gates`` (then ``recur`` is composed from it). One
    composition serves every built-in cell, so the fast paths and the plain
    step can never disagree.
    """
    if (recur is None) == (gates is None):
        raise ValueError("split_cell needs exactly one of recur and gates")
    if gates is not None:

        def recur(params, carry, xp):
            hu = gates.fed_back(carry) @ gates.kernel(params)
            return gates.combine(params, carry, xp, hu)

    def step(params, carry, x):
        return recur(params, carry, project(params, x))

    return Cell(
        init=init,
        initial_state=initial_state,
        step=step,
        input_size=input_size,
        project=project,
        recur=recur,
        gates=gates,
        name=name,
        config=dict(config),
        **fast_paths,
    )


def diagonal_recur(params, h: jax.Array, coefficients) -> tuple[jax.Array, jax.Array]:
    """``recur`` of a cell whose projection gives ``(a, b)``: ``h = a * h + b``, output ``h``."""
    del params
    a, b = coefficients
    h = a * h + b
    return h, h


def zeros_state(hidden_size: int) -> Callable[..., jax.Array]:
    """``initial_state`` for cells whose carry is one ``[*batch, hidden_size]`` array."""

    def initial_state(params, batch_shape=()):
        return jnp.zeros((*tuple(batch_shape), hidden_size), dtype_of(params))

    return initial_state


def dtype_of(params: Params) -> jnp.dtype:
    """The dtype of a cell's carry: float32 or wider, whatever the parameters' dtype.

    Low-precision (bf16/fp16) parameters keep a float32 state, the usual
    mixed-precision contract for recurrences.
    """
    leaves = [leaf for leaf in jax.tree.leaves(params) if jnp.issubdtype(leaf.dtype, jnp.floating)]
    if not leaves:
        return jnp.dtype(jnp.float32)
    return jnp.promote_types(leaves[0].dtype, jnp.float32)


def check_positive_int(name: str, value: Any) -> int:
    """Returns ``value`` if it is a positive int, else raises a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int; got {value!r}")
    return value


def resolve_activation(name: str, value: str | Callable[[jax.Array], jax.Array]):
    """Maps an activation given by name (``"tanh"``, ``"relu"``, ...) or callable to a callable."""
    if callable(value):
        return value
    table = {
        "tanh": jnp.tanh,
        "relu": jax.nn.relu,
        "sigmoid": jax.nn.sigmoid,
        "hard_sigmoid": jax.nn.hard_sigmoid,
        "gelu": jax.nn.gelu,
        "silu": jax.nn.silu,
        "identity": lambda x: x,
        "linear": lambda x: x,
    }
    if value not in table:
        raise ValueError(f"{name} must be a callable or one of {sorted(table)}; got {value!r}")
    return table[value]


def stacked_orthogonal(key: jax.Array, shape: tuple[int, int], dtype=jnp.float32) -> jax.Array:
    """Orthogonal init of an ``[H, G*H]`` recurrent kernel, one orthogonal block per gate.

    Each gate's ``[H, H]`` block is orthogonal on its own, so every gate starts
    norm-preserving (as Flax's and cuDNN-trained defaults do); ``[H, H]`` is
    the single-gate case.
    """
    rows, cols = shape
    orthogonal = jax.nn.initializers.orthogonal()
    # QR in float32 at least: LAPACK has no bf16/fp16 kernels, so a low-precision cell
    # (``rj.gru(64, dtype=jnp.bfloat16)``) could not even be initialised on a CPU.
    wide = jnp.promote_types(dtype, jnp.float32)
    if cols % rows:
        return orthogonal(key, shape, wide).astype(dtype)
    keys = jax.random.split(key, cols // rows)
    blocks = [orthogonal(k, (rows, rows), wide) for k in keys]
    return jnp.concatenate(blocks, axis=1).astype(dtype)


glorot_uniform = jax.nn.initializers.glorot_uniform()
zeros = jax.nn.initializers.zeros
