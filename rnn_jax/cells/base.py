"""The `Cell` protocol: a recurrent cell as a NamedTuple of pure functions.

A factory (``rj.lstm(128)``) closes over the hyperparameters and returns a
`Cell`. Parameters and carries are pytrees of arrays, so they pass through
``jit``, ``vmap``, ``grad``, optax and checkpoints unchanged. A cell is
hashable (its configuration is a `Config`), so it can be a static argument
of ``jax.jit``.

Required fields::

    params = cell.init(key, input_size)
    carry = cell.initial_state(params, batch_shape=())
    carry, y = cell.step(params, carry, x)          # x: [*batch, *features]

``features`` is one axis (``[input_size]``) unless the cell declares a
``feature_rank`` above 1 (a convolutional cell reads ``[height, width,
channels]``).

Optional capabilities, typed fields that backends ask for and never assume:

- ``project(params, x) -> xp`` and ``recur(params, carry, xp) -> (carry, y)``:
  the carry-free part of ``step`` (the input projection, one large matmul over
  ``[T, *batch, F]`` at once) and the recurrent part, with
  ``step(params, carry, x) == recur(params, carry, project(params, x))``.
- ``input_size(params) -> int``: the feature size ``params`` expect (the last
  feature axis), so the driver can reject a wrong input at trace time.
- ``gates``: a `Gates`, the split of ``recur`` around its one recurrent
  matmul, which fused and custom-gradient kernels use; its ``heads`` field,
  where present, is the per-head view of a block-diagonal recurrence.
- ``linear``: a `LinearRecurrence`, for cells whose state obeys
  ``h_t = a_t * h_{t-1} + b_t``, which parallel scans use.
- ``memory``: a `MatrixMemory`, for cells whose carry is the mLSTM's gated
  matrix memory, which chunkwise-parallel solvers use.
- ``cudnn_layout``: a `CudnnLayout`, for cells that compute exactly cuDNN's
  (and PyTorch's) RNN, LSTM or GRU, which the ``cudnn`` backend and the
  PyTorch interop use.

``name`` and ``config`` describe the cell (its factory and hyperparameters);
they make summaries, exports and checkpoints self-describing, and no backend
decides anything by them. A wrapper that changes what a step computes
(dropout, zoneout) builds its cell with `wrap_cell`, which keeps only the
capabilities the wrapper declares again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

PyTree = Any
Params = PyTree
Carry = PyTree
Initializer = Callable[..., jax.Array]


class Config(Mapping):
    """An immutable, hashable mapping of hyperparameters (of a cell, a layer or a model).

    Lists become tuples and mappings become `Config`, so the whole value is
    hashable; a value that cannot be hashed is refused with a TypeError
    naming its key.

    Example:
        >>> config = Config(hidden_size=64, activation="tanh")
        >>> config["hidden_size"], hash(config) == hash(Config(activation="tanh", hidden_size=64))
        (64, True)
    """

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, Any] | None = None, /, **values: Any):
        merged = {**dict(items or {}), **values}
        frozen = {key: _frozen(key, value) for key, value in merged.items()}
        object.__setattr__(self, "_items", tuple(frozen.items()))

    def __getitem__(self, key: str) -> Any:
        for name, value in self._items:
            if name == key:
                return value
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(frozenset(self._items))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        return dict(self._items) == dict(other.items())

    def __setattr__(self, name: str, value: Any):
        raise AttributeError("a Config is immutable; use replace")

    def __repr__(self) -> str:
        return f"Config({dict(self._items)!r})"

    def replace(self, **values: Any) -> Config:
        """A copy with ``values`` set."""
        return Config(self, **values)


def _frozen(key: str, value: Any) -> Any:
    if isinstance(value, Mapping) and not isinstance(value, Config):
        return Config(value)
    if isinstance(value, list):
        value = tuple(value)
    try:
        hash(value)
    except TypeError:
        raise TypeError(
            f"config value {key!r} must be hashable (numbers, strings, tuples, cells, functions); "
            f"got {type(value).__name__}"
        ) from None
    return value


class HeadedGates(NamedTuple):
    """`Gates` as ``num_heads`` independent blocks: what a fused kernel runs per head.

    - ``gates``: the `Gates` of one head, over one head's arrays:
      ``gates.kernel(head_params) : [R_head, G*H_head]``, ``gates.fed_back``
      and ``gates.combine`` on one head's carry and projected input.
    - ``head_params(params)``: the parameters one head's ``gates`` read, every
      leaf with a leading ``[num_heads]`` axis (head ``n`` gets
      ``tree.map(lambda p: p[n], head_params(params))``).
    - ``to_heads(tree)``: carry or projected-input leaves ``[*lead, ...]`` to
      ``[num_heads, *lead, ...]`` (any leading axes: batch, or time and batch).
    - ``from_heads(tree)``: the inverse, for carries and outputs.

    Running head ``n`` on ``to_heads(carry)[n]`` and ``to_heads(xp)[n]`` for
    every ``n`` and merging with ``from_heads`` equals ``recur``.
    """

    num_heads: int
    gates: Gates
    head_params: Callable[[Params], PyTree]
    to_heads: Callable[[PyTree], PyTree]
    from_heads: Callable[[PyTree], PyTree]


class Gates(NamedTuple):
    """``recur`` split around its recurrent matmul.

    ``recur(params, carry, xp) == combine(params, carry, xp, fed_back(carry) @ kernel(params))``
    where ``kernel(params): [R, G*H]`` is the recurrent matrix and
    ``fed_back(carry): [*batch, R]`` the state that multiplies it (a linear
    function of the carry). Everything else in the step (biases, gates,
    normalisation, peepholes, projection) is in ``combine``, which a kernel may
    run wherever it likes, e.g. inside a fused loop that keeps ``kernel`` on chip.

    ``heads``: for a block-diagonal recurrence (multi-head cells), the
    `HeadedGates` view of the same step, so a kernel holds only the blocks;
    None for a dense ``kernel``.
    """

    kernel: Callable[[Params], jax.Array]
    fed_back: Callable[[Carry], jax.Array]
    combine: Callable[[Params, Carry, PyTree, jax.Array], tuple[Carry, jax.Array]]
    heads: HeadedGates | None = None


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


class MemoryInputs(NamedTuple):
    """What a matrix memory reads and writes at each step, per head (see `MatrixMemory`).

    Leading axes ``[*lead]`` are time and batch, or batch alone for one step.
    """

    q: jax.Array  # [*lead, NH, dk]: the query
    k: jax.Array  # [*lead, NH, dk]: the key (any scaling already applied)
    v: jax.Array  # [*lead, NH, dv]: the value
    log_f: jax.Array  # [*lead, NH]: log of the forget gate
    log_i: jax.Array  # [*lead, NH]: log of the input gate (its pre-activation for exp gates)


class MatrixMemoryState(NamedTuple):
    """The carry of a matrix memory, stabilised: ``C`` and ``n`` stored times ``exp(-m)``."""

    c: jax.Array  # [*batch, NH, dk, dv]
    n: jax.Array  # [*batch, NH, dk]
    m: jax.Array  # [*batch, NH]


class MatrixMemory(NamedTuple):
    """The form of a cell whose carry is the mLSTM's matrix memory (Beck et al. 2024).

    Per head, from `MemoryInputs` ``(q, k, v, log f, log i)`` of each step::

        C_t = f_t C_{t-1} + i_t k_t v_t^T      [dk, dv]
        n_t = f_t n_{t-1} + i_t k_t            [dk]
        h_t = q_t^T C_t / max(|q_t . n_t|, 1)  [dv]

    carried as a `MatrixMemoryState` stabilised by ``m_t = max(log f_t +
    m_{t-1}, log i_t)``: the gates become ``f_t exp(m_{t-1} - m_t)`` and
    ``exp(log i_t - m_t)`` (at most 1), ``C`` and ``n`` are stored times
    ``exp(-m_t)``, and ``h_t = q^T C / max(|q . n|, exp(-m_t))``, unchanged.
    The recurrence is linear in ``(C, n)`` with a scalar decay per head, which
    is what a chunkwise-parallel solver uses: within a chunk a masked
    ``[L, L]`` attention-like form, across chunks the recurrence on the states.

    - ``inputs(xp) -> MemoryInputs``: from the projected inputs
      ``xp = cell.project(params, x)`` (any leading axes).
    - ``output(params, h, xp) -> y``: the cell's output from the read-outs
      ``h [*lead, NH, dv]`` and the projected inputs.

    The cell's ``recur`` must compute the same, one step at a time.
    """

    inputs: Callable[[PyTree], MemoryInputs]
    output: Callable[[Params, jax.Array, PyTree], jax.Array]


def memory_read_out(read: jax.Array, norm: jax.Array, m: jax.Array) -> jax.Array:
    """A `MatrixMemory`'s ``h = read / max(|norm|, exp(-m))``, from the stabilised ``read =
    q^T C [..., dv]``, ``norm = q . n [...]`` and the stabiliser ``m [...]``."""
    return read / jnp.maximum(jnp.abs(norm), jnp.exp(-m))[..., None]


class CudnnWeights(NamedTuple):
    """One layer and direction of a cuDNN/PyTorch RNN, in PyTorch's names and shapes.

    ``G`` gates (1 for RNN, 4 for LSTM in order i, f, g, o; 3 for GRU in
    order r, z, n), ``H`` hidden units, ``F`` inputs, ``R`` fed-back units
    (``proj_size`` for an LSTM with a projection, else ``H``).
    """

    weight_ih: jax.Array  # [G*H, F]
    weight_hh: jax.Array  # [G*H, R]
    bias_ih: jax.Array  # [G*H]
    bias_hh: jax.Array  # [G*H]
    weight_hr: jax.Array | None = None  # [P, H]: LSTM with proj_size only


class CudnnLayout(NamedTuple):
    """The capability of computing exactly cuDNN's (and PyTorch's) RNN of ``mode``.

    - ``mode``: ``"rnn_tanh"``, ``"rnn_relu"``, ``"lstm"`` or ``"gru"``
      (PyTorch's ``nn.RNN`` with that nonlinearity, ``nn.LSTM``, ``nn.GRU``).
    - ``hidden_size``, ``proj_size`` (0 without a projection; cuDNN's RNN
      API in JAX has none, PyTorch has).
    - ``to_weights(params) -> CudnnWeights`` and ``from_weights(weights) -> params``.
    """

    mode: str
    hidden_size: int
    proj_size: int
    to_weights: Callable[[Params], CudnnWeights]
    from_weights: Callable[[CudnnWeights], Params]


class Cell(NamedTuple):
    """A recurrent cell: pure functions over parameter and carry pytrees.

    Example:
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
    config: Config = Config()
    cudnn_layout: CudnnLayout | None = None
    feature_rank: int = 1
    memory: MatrixMemory | None = None


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
    feature_rank: int = 1,
    **capabilities: Any,
) -> Cell:
    """Builds a `Cell` whose ``step`` is ``recur`` after ``project``.

    Give ``recur``, or ``gates`` (then ``recur`` is composed from it). One
    composition serves every built-in cell, so the fast paths and the plain
    step can never disagree. ``step`` checks its arguments' shapes at trace
    time (a carry for another batch shape or width is refused in words, never
    broadcast); ``capabilities`` are the other optional fields (``linear``,
    ``cudnn_layout``, ``memory``).
    """
    if (recur is None) == (gates is None):
        raise ValueError("split_cell needs exactly one of recur and gates")
    if gates is not None:

        def recur(params, carry, xp):
            hu = gates.fed_back(carry) @ gates.kernel(params)
            return gates.combine(params, carry, xp, hu)

    def step(params, carry, x):
        check_step_arguments(name, feature_rank, initial_state, input_size, params, carry, x)
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
        config=Config(config),
        feature_rank=feature_rank,
        **capabilities,
    )


def wrap_cell(
    cell: Cell,
    wrapper: str,
    options: Mapping[str, Any],
    *,
    project: Callable[[Params, jax.Array], PyTree],
    recur: Callable[[Params, Carry, PyTree], tuple[Carry, jax.Array]] | None = None,
    gates: Gates | None = None,
    input_size: Callable[[Params], int] | None,
) -> Cell:
    """The cell a wrapper makes of ``cell``: same parameters and carry, another step.

    Every capability the wrapper does not declare again (``gates`` unless
    given, ``linear``, ``cudnn_layout``, ``memory``) is dropped, since the
    wrapped step no longer computes what it described; a backend that needs one then
    refuses the wrapped cell in words instead of running the unwrapped one.
    The name says what was wrapped (``"recurrent_dropout(lstm)"``) and the
    config holds the wrapped cell and the wrapper's options.

    Example:
        >>> plain = rj.lstm(8)
        >>> wrapped = wrap_cell(plain, "identity", {}, project=plain.project,
        ...                     recur=plain.recur, input_size=plain.input_size)
        >>> wrapped.name, wrapped.cudnn_layout is None, plain.cudnn_layout is None
        ('identity(lstm)', True, False)
    """
    return split_cell(
        init=cell.init,
        initial_state=cell.initial_state,
        project=project,
        recur=recur,
        gates=gates,
        input_size=input_size,
        name=f"{wrapper}({cell.name})",
        config=Config(options, cell=cell),
        feature_rank=cell.feature_rank,
    )


def check_step_arguments(
    name: str, feature_rank: int, initial_state, input_size, params, carry, x
) -> None:
    """Raises a ValueError unless ``carry`` is the cell's carry for the batch shape of ``x``.

    Shapes are static, so the check costs nothing when the step runs.
    """
    shape = tuple(getattr(x, "shape", ()))
    if len(shape) < feature_rank:
        raise ValueError(
            f"x must have shape [*batch, *features] with {feature_rank} feature axes for the "
            f"{name} cell; got shape {shape}"
        )
    batch = shape[: len(shape) - feature_rank]
    if input_size is not None and shape[-1] != input_size(params):
        raise ValueError(
            f"x must have {input_size(params)} features (the {name} cell's input size) in its "
            f"last axis; got shape {shape}"
        )
    expected = jax.eval_shape(lambda p: initial_state(p, batch), params)
    if jax.tree.structure(carry) != jax.tree.structure(expected):
        raise ValueError(
            f"carry must have the structure of the {name} cell's carry "
            f"{jax.tree.structure(expected)}; got {jax.tree.structure(carry)}"
        )
    paths = jax.tree_util.tree_flatten_with_path(expected)[0]
    for (path, want), got in zip(paths, jax.tree.leaves(carry), strict=True):
        got_shape = tuple(getattr(got, "shape", ()))
        if got_shape != tuple(want.shape):
            raise ValueError(
                f"carry{jax.tree_util.keystr(path)} must have shape {tuple(want.shape)} for "
                f"inputs of batch shape {batch} (the {name} cell never broadcasts); got {got_shape}"
            )


def along(vector: jax.Array, y: jax.Array) -> jax.Array:
    """``vector [*tail]`` with leading unit axes, to broadcast against ``y [*lead, *tail]``.

    Broadcasts are written out so cells also run under
    ``jax_numpy_rank_promotion="raise"`` (as Equinox runs its tests).
    """
    return vector.reshape((1,) * (y.ndim - vector.ndim) + vector.shape)


def add_bias(y: jax.Array, bias: jax.Array) -> jax.Array:
    """``y + bias`` for ``y [*lead, G]`` and ``bias [G]``."""
    return y + along(bias, y)


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
