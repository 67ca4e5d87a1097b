"""A cell's functions evaluated on lane tiles, so one kernel body runs any cell on GPU and TPU.

The fused kernel traces the cell's own ``fed_back`` and ``combine`` (and their
VJPs) into its body. Pallas' Triton lowering takes only arrays whose sizes
are powers of two and cannot slice a value (a GRU splits ``[B, 3H]`` into
three gates; its backward concatenates them again); Mosaic wants lane
offsets on its 128-wide vector tiles. So the kernel never holds a row of
``G*H`` pre-activations as one array: every array is cut along its feature
axes into *tiles* of `Lanes.chunk` logical lanes, each padded to
`Lanes.width` physical lanes (a power of two on GPU, a multiple of 128 on
TPU), and the cell's jaxpr is evaluated tile by tile (`evaluate`). A split
or a concatenation along a cut axis then only regroups tiles; elementwise
work runs per tile; a reduction or a matmul over a cut axis masks the
padding lanes first.

The batch axis is never cut: the row jaxprs are traced for a symbolic number
of rows (`ROWS`, JAX's symbolic dimension ``rows``), and that axis is a
tile's ``rows`` (the kernel's batch tile). An operation the tiles cannot
express (a gather, an iota along the batch, a reshape that merges axes, a
slice between tile edges) raises `Unsupported`, whose message ``supports``
returns.

Outside the kernel, `to_lanes` and `from_lanes` move arrays between their
logical layout and the tiled one (each tile's padding in place).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.extend.core as jex
import jax.numpy as jnp
import numpy as np
from jax import export
from jax.experimental import pallas as pl

from rnn_jax.backends.pallas.refusal import Refusal

(ROWS,) = export.symbolic_shape("rows")  # the batch axis of a traced row jaxpr


def is_rows(size) -> bool:
    """Whether an axis of ``size`` is the batch axis (symbolic) rather than a feature axis."""
    return export.is_symbolic_dim(size)


class Unsupported(Refusal):
    """An operation of a cell that lane tiles cannot express (the message says which)."""


@dataclass(frozen=True)
class Lanes:
    """How arrays are cut into tiles.

    An axis whose size is a multiple of ``chunk`` (above 1) is cut into tiles
    of ``chunk`` logical lanes, each ``width`` physical lanes wide (the rest
    is padding); any other feature axis into tiles of one lane (the tile
    shape then depends on the size alone, so slices agree); the batch axis
    (symbolic, `ROWS`, in traced jaxprs) stays whole, ``rows`` rows per tile.
    ``min_dot`` is the smallest M, N and K of a matrix-unit product (16 for
    Triton's ``tl.dot``); smaller products multiply and sum instead.

    Example:
        >>> lanes = Lanes(chunk=64, width=64, rows=16, min_dot=16)
        >>> lanes.cut(192), lanes.cut(3), lanes.grid((ROWS, 192)), lanes.tile_shape((ROWS, 192))
        ((64, 64), (1, 1), (1, 3), (16, 64))
    """

    chunk: int
    width: int
    rows: int
    min_dot: int = 1

    def cut(self, size: int) -> tuple[int, int]:
        """``(logical, physical)`` lanes per tile of a feature axis of ``size``."""
        if self.chunk > 1 and size % self.chunk == 0:
            return self.chunk, self.width
        return 1, 1

    def grid(self, shape: Sequence[int]) -> tuple[int, ...]:
        """Tiles per axis of a logical ``shape`` (one along the batch axis)."""
        return tuple(1 if is_rows(n) else n // self.cut(n)[0] for n in shape)

    def tile_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        return tuple(self.rows if is_rows(n) else self.cut(n)[1] for n in shape)

    def stored(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The tiled layout's shape of a logical ``shape`` (feature axes only)."""
        return tuple(g * p for g, p in zip(self.grid(shape), self.tile_shape(shape), strict=True))


def choose_lanes(
    sizes: Sequence[int], *, rows: int, width_of: Callable[[int], int], max_width: int, min_dot=1
) -> Lanes:
    """`Lanes` whose chunk divides every size in ``sizes`` (the feature sizes a cell's arrays
    have), as large as ``width_of(chunk) <= max_width`` allows.

    Example:
        >>> pow2 = lambda n: 1 << (n - 1).bit_length()
        >>> choose_lanes([768, 3072], rows=16, width_of=pow2, max_width=128).chunk
        128
    """
    common = 0
    for n in sizes:
        if not is_rows(n) and n > 1:
            common = math.gcd(common, int(n))
    common = max(common, 1)
    chunk = max(d for d in range(1, common + 1) if common % d == 0 and width_of(d) <= max_width)
    return Lanes(chunk=chunk, width=width_of(chunk), rows=rows, min_dot=min_dot)


def feature_sizes(*jaxprs: jex.ClosedJaxpr) -> list[int]:
    """The size of the last axis of every value in ``jaxprs`` (inner jaxprs included)."""
    sizes: list[int] = []

    def visit(jaxpr):
        for var in (*jaxpr.invars, *jaxpr.outvars, *(v for e in jaxpr.eqns for v in e.outvars)):
            shape = getattr(var.aval, "shape", ())
            if shape:
                sizes.append(shape[-1])
        for eqn in jaxpr.eqns:
            for inner in jex.jaxprs_in_params(eqn.params):
                visit(inner)

    for closed in jaxprs:
        visit(closed.jaxpr)
    return sizes


class Tiled(NamedTuple):
    """A logical array of ``shape`` as a grid of tiles (``tiles``: an object array of
    shape ``lanes.grid(shape)``; a 0-d value is one tile, possibly a Python scalar)."""

    shape: tuple[int, ...]
    tiles: np.ndarray

    def leaves(self) -> list[Any]:
        return list(self.tiles.flat)

    def tile(self, index: tuple[int, ...]) -> Any:
        return self.tiles[index]


def tiled(shape, make: Callable[[tuple[int, ...]], Any], lanes: Lanes) -> Tiled:
    """A `Tiled` of ``shape`` whose tile at grid index ``i`` is ``make(i)``."""
    grid = lanes.grid(shape)
    tiles = np.empty(grid, dtype=object)
    for index in np.ndindex(*grid):
        tiles[index] = make(index)
    return Tiled(tuple(shape), tiles)


def zeros(shape, dtype, lanes: Lanes) -> Tiled:
    """Zeros of a logical ``shape`` as tiles."""
    return tiled(shape, lambda _: jnp.zeros(lanes.tile_shape(shape), dtype), lanes)


def flatten(values: Sequence[Tiled]) -> list[Any]:
    """The tiles of ``values``, in order (a loop carry of plain arrays)."""
    return [t for v in values for t in v.tiles.flat]


def unflatten(tiles: Sequence[Any], like: Sequence[Tiled]) -> list[Tiled]:
    """``values`` shaped like ``like`` from the tiles `flatten` returned."""
    out, taken = [], 0
    for v in like:
        grid = np.empty(v.tiles.shape, dtype=object)
        for index in np.ndindex(*grid.shape):
            grid[index] = tiles[taken]
            taken += 1
        out.append(Tiled(v.shape, grid))
    return out


def map_tiles(fn: Callable[..., Any], *values: Tiled) -> Tiled:
    """``fn`` applied tile by tile to values of one shape."""
    first = values[0]
    out = np.empty(first.tiles.shape, dtype=object)
    for index in np.ndindex(*first.tiles.shape):
        out[index] = fn(*(v.tiles[index] for v in values))
    return Tiled(first.shape, out)


# ----------------------------------------------------------------------------- layouts


def to_lanes(x: jax.Array, lanes: Lanes, lead: int) -> jax.Array:
    """``x [*lead_axes, *features]`` in the tiled layout: each feature axis cut into tiles,
    each tile zero-padded to its physical width.

    Example:
        >>> lanes = Lanes(chunk=2, width=4, rows=1)
        >>> to_lanes(jnp.arange(4.0), lanes, 0)
        Array([0., 1., 0., 0., 2., 3., 0., 0.], dtype=float32)
    """
    for axis in range(lead, x.ndim):
        n = x.shape[axis]
        c, p = lanes.cut(n)
        if c == p:
            continue
        x = x.reshape(*x.shape[:axis], n // c, c, *x.shape[axis + 1 :])
        widths = [(0, 0)] * x.ndim
        widths[axis + 1] = (0, p - c)
        x = jnp.pad(x, widths)
        x = x.reshape(*x.shape[:axis], (n // c) * p, *x.shape[axis + 2 :])
    return x


def from_lanes(x: jax.Array, lanes: Lanes, lead: int, features: Sequence[int]) -> jax.Array:
    """The inverse of `to_lanes`: the logical ``[*lead_axes, *features]`` array."""
    for axis, n in zip(range(lead, x.ndim), features, strict=True):
        c, p = lanes.cut(n)
        if c == p:
            continue
        x = x.reshape(*x.shape[:axis], n // c, p, *x.shape[axis + 1 :])
        x = jax.lax.slice_in_dim(x, 0, c, axis=axis + 1)
        x = x.reshape(*x.shape[:axis], n, *x.shape[axis + 2 :])
    return x


def load(ref, prefix: tuple, shape: Sequence[int], lanes: Lanes) -> Tiled:
    """The value of logical ``shape`` at ``ref[*prefix, ...]``, tile by tile (``shape`` may
    start with the batch axis, which the block holds whole)."""

    def read(index):
        return ref[(*prefix, *_lane_slices(shape, index, lanes))]

    return tiled(shape, read, lanes)


class RefTiles(NamedTuple):
    """A value of logical ``shape`` left in ``ref[*prefix, ...]`` and read one tile at a time
    (`dot` reads each where its product needs it, so one tile is held at a time)."""

    ref: Any
    prefix: tuple
    shape: tuple[int, ...]
    lanes: Lanes

    def tile(self, index: tuple[int, ...]) -> Any:
        return self.ref[(*self.prefix, *_lane_slices(self.shape, index, self.lanes))]


def store(ref, prefix: tuple, value: Tiled, lanes: Lanes) -> None:
    """Writes ``value`` tile by tile into ``ref[*prefix, ...]``."""
    for index in np.ndindex(*value.tiles.shape):
        tile = value.tiles[index]
        ref[(*prefix, *_lane_slices(value.shape, index, lanes))] = tile.astype(ref.dtype)


def _lane_slices(shape, index, lanes: Lanes):
    out = []
    for n, i in zip(shape, index, strict=True):
        out.append(slice(None) if is_rows(n) else pl.ds(i * lanes.cut(n)[1], lanes.cut(n)[1]))
    return out


# ----------------------------------------------------------------------------- evaluation


def evaluate(closed: jex.ClosedJaxpr, lanes: Lanes, *args: Tiled) -> list[Tiled]:
    """Runs ``closed`` on tiled arguments; returns its tiled results."""
    for const in closed.consts:
        if np.shape(const):
            raise Unsupported(f"it captures an array constant of shape {np.shape(const)}")
    scalars = [Tiled((), _scalar_tiles(np.asarray(c))) for c in closed.consts]
    return _run(closed.jaxpr, lanes, [*scalars, *args])


def _scalar_tiles(value) -> np.ndarray:
    tiles = np.empty((), dtype=object)
    tiles[()] = value
    return tiles


def _run(jaxpr: jex.Jaxpr, lanes: Lanes, args: Sequence[Tiled]) -> list[Tiled]:
    env: dict[Any, Tiled] = {}

    def read(atom) -> Tiled:
        if isinstance(atom, jex.Literal):
            if np.shape(atom.val):
                raise Unsupported("it uses an array literal")
            return Tiled((), _scalar_tiles(np.asarray(atom.val, atom.aval.dtype)))
        return env[atom]

    for var, value in zip(jaxpr.invars, args, strict=True):
        env[var] = value
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        invals = [read(a) for a in eqn.invars]
        outs = [a.aval for a in eqn.outvars]
        if name in _CALLS:
            results = _run_call(eqn, lanes, invals)
        elif name in _SHARDING:  # a value's placement across devices: nothing in one kernel
            results = invals
        elif name in _ELEMENTWISE:
            results = [_elementwise(eqn, lanes, invals, outs[0])]
        elif name in _RULES:
            results = _RULES[name](lanes, eqn.params, invals, outs)
            results = results if isinstance(results, list) else [results]
        else:
            raise Unsupported(f"its `{name}` operation has no tiled form")
        for var, value in zip(eqn.outvars, results, strict=True):
            env[var] = value
    return [read(v) for v in jaxpr.outvars]


_CALLS = {
    "jit": "jaxpr",
    "pjit": "jaxpr",
    "closed_call": "call_jaxpr",
    "core_call": "call_jaxpr",
    "custom_jvp_call": "call_jaxpr",
    "custom_vjp_call": "call_jaxpr",
    "custom_vjp_call_jaxpr": "fun_jaxpr",
    "checkpoint": "jaxpr",
    "remat": "jaxpr",
}


def _run_call(eqn, lanes: Lanes, invals):
    inner = eqn.params[_CALLS[eqn.primitive.name]]
    if isinstance(inner, jex.ClosedJaxpr):
        return evaluate(inner, lanes, *invals[len(invals) - len(inner.jaxpr.invars) :])
    return _run(inner, lanes, invals)


_ELEMENTWISE_NAMES = """
    abs acos acosh add add_any and asin asinh atan atan2 atanh cbrt ceil clamp clz conj
    convert_element_type copy copy_p cos cosh digamma div eq erf erf_inv erfc exp exp2 expm1
    floor ge gt integer_pow is_finite le lgamma log log1p log2 logistic lt max min mul ne neg
    nextafter not one_minus_square or population_count pow reduce_precision rem round rsqrt
    select_n shift_left shift_right_arithmetic shift_right_logical sign sin sinh sqrt square sub
    tan tanh xor
"""
_ELEMENTWISE = frozenset(_ELEMENTWISE_NAMES.split())
_SHARDING = frozenset({"reshard", "sharding_constraint", "mesh_cast"})


def _elementwise(eqn, lanes: Lanes, invals: Sequence[Tiled], out) -> Tiled:
    """One primitive per tile. A 0-d operand goes to every tile as it is; so does a unit axis
    against a longer one (jaxprs broadcast those, ``[B, 32] - [B, 1]``), its one tile to all."""

    def source(v: Tiled, index):
        return tuple(0 if n == 1 else i for n, i in zip(v.shape, index, strict=True))

    def tile(index):
        operands = [v.tiles[source(v, index)] if v.shape else v.tiles[()] for v in invals]
        return eqn.primitive.bind(*operands, **eqn.params)

    return tiled(out.shape, tile, lanes)


# ----------------------------------------------------------------------------- rules


def _broadcast_in_dim(lanes, params, invals, outs):
    (x,), (out,) = invals, outs
    dims = params["broadcast_dimensions"]
    shape = lanes.tile_shape(out.shape)
    grown = [a for a, n in zip(dims, x.shape, strict=True) if n != out.shape[a]]

    def tile(index):
        source = tuple(0 if a in grown else index[a] for a in dims)
        return jax.lax.broadcast_in_dim(x.tiles[source], shape, dims)

    return tiled(out.shape, tile, lanes)


def _unit_axes(lanes, invals, outs):
    """A reshape that only adds or drops unit axes (``[H] -> [1, H]``): the tiles keep their
    lanes. Anything else would move lanes between tiles."""
    (x,), (out,) = invals, outs
    if [n for n in x.shape if n != 1] != [n for n in out.shape if n != 1]:
        raise Unsupported(f"it reshapes {x.shape} to {out.shape}, which moves lanes")
    grid = lanes.grid(out.shape)
    shape = lanes.tile_shape(out.shape)
    tiles = np.empty(grid, dtype=object)
    for source, target in zip(np.ndindex(*x.tiles.shape), np.ndindex(*grid), strict=True):
        tiles[target] = jax.lax.reshape(x.tiles[source], shape)
    return Tiled(tuple(out.shape), tiles)


def _reshape(lanes, params, invals, outs):
    if params.get("dimensions") is not None:
        raise Unsupported("it reshapes with a transposition (`dimensions`)")
    return _unit_axes(lanes, invals, outs)


def _squeeze(lanes, params, invals, outs):
    return _unit_axes(lanes, invals, outs)


def _lane_mask(tile_shape, axis: int, valid: int):
    return jax.lax.broadcasted_iota(jnp.int32, tile_shape, axis) < valid


def _is_padded(lanes: Lanes, size: int) -> bool:
    logical, physical = lanes.cut(size)
    return logical < physical


def _fill_padding(lanes: Lanes, x: Tiled, axes: Sequence[int], fill) -> Tiled:
    """``x`` with the padding lanes of ``axes`` set to ``fill`` (before reducing over them)."""
    padded = [a for a in axes if not is_rows(x.shape[a]) and _is_padded(lanes, x.shape[a])]
    if not padded:
        return x

    def fix(tile):
        keep = None
        for a in padded:
            mask = _lane_mask(tile.shape, a, lanes.cut(x.shape[a])[0])
            keep = mask if keep is None else keep & mask
        return jnp.where(keep, tile, jnp.asarray(fill, tile.dtype))

    return map_tiles(fix, x)


def _identity(name: str, dtype):
    if name in ("reduce_max", "argmax"):
        return -jnp.inf if jnp.issubdtype(dtype, jnp.floating) else jnp.iinfo(dtype).min
    if name == "reduce_min":
        return jnp.inf if jnp.issubdtype(dtype, jnp.floating) else jnp.iinfo(dtype).max
    return {"reduce_sum": 0, "reduce_prod": 1, "reduce_and": True, "reduce_or": False}[name]


_COMBINE = {
    "reduce_sum": jax.lax.add,
    "reduce_max": jax.lax.max,
    "reduce_min": jax.lax.min,
    "reduce_prod": jax.lax.mul,
    "reduce_and": jax.lax.bitwise_and,
    "reduce_or": jax.lax.bitwise_or,
}


def _reducer(name):
    primitive = getattr(jax.lax, f"{name}_p")

    def rule(lanes, params, invals, outs):
        (x,), (out,) = invals, outs
        axes = tuple(params["axes"])
        first = x.leaves()[0]
        x = _fill_padding(lanes, x, axes, _identity(name, first.dtype))
        kept = [a for a in range(len(x.shape)) if a not in axes]
        grid = lanes.grid(out.shape)
        tiles = np.empty(grid, dtype=object)
        for index in np.ndindex(*x.tiles.shape):
            part = primitive.bind(x.tiles[index], **params)
            target = tuple(index[a] for a in kept)
            tiles[target] = part if tiles[target] is None else _COMBINE[name](tiles[target], part)
        return Tiled(tuple(out.shape), tiles)

    return rule


def _check_cut(lanes: Lanes, size: int, offsets: Sequence[int], what: str) -> int:
    """The logical tile width along an axis of ``size`` cut at ``offsets`` (each a tile edge)."""
    if is_rows(size):
        raise Unsupported(f"it {what} the batch axis")
    c, _ = lanes.cut(size)
    if any(o % c for o in offsets) or any(lanes.cut(n)[0] != c for n in np.diff(offsets) if n):
        raise Unsupported(f"it {what} an axis of {size} at {list(offsets)}, between tile edges")
    return c


def _split(lanes, params, invals, outs):
    (x,) = invals
    axis, sizes = params["axis"], params["sizes"]
    edges = np.cumsum([0, *sizes])
    c = _check_cut(lanes, x.shape[axis], edges, "splits")
    parts = np.split(x.tiles, (edges[1:-1] // c).tolist(), axis=axis)
    return [Tiled(tuple(o.shape), p) for o, p in zip(outs, parts, strict=True)]


def _concatenate(lanes, params, invals, outs):
    axis, (out,) = params["dimension"], outs
    edges = np.cumsum([0, *(v.shape[axis] for v in invals)])
    _check_cut(lanes, out.shape[axis], edges, "concatenates")
    return Tiled(tuple(out.shape), np.concatenate([v.tiles for v in invals], axis=axis))


def _slice(lanes, params, invals, outs):
    (x,), (out,) = invals, outs
    strides = params["strides"] or (1,) * len(x.shape)
    index = []
    for n, start, stop, stride in zip(
        x.shape, params["start_indices"], params["limit_indices"], strides, strict=True
    ):
        if is_rows(n) and (start, stop, stride) == (0, n, 1):  # every row
            index.append(slice(None))
            continue
        c = _check_cut(lanes, n, (start, stop) if stride == 1 else (0,), "slices")
        if stride != 1 and c != 1:
            raise Unsupported(f"it slices an axis of {n} with stride {stride}")
        index.append(slice(start // c, -(-stop // c), stride))
    return Tiled(tuple(out.shape), x.tiles[tuple(index)])


def _pad(lanes, params, invals, outs):
    (x, fill), (out,) = invals, outs
    tiles = x.tiles
    for axis, (low, high, interior) in enumerate(params["padding_config"]):
        if not (low or high or interior):
            continue
        if interior or low < 0 or high < 0:
            raise Unsupported("it pads with interior or negative padding")
        n = out.shape[axis]
        c = _check_cut(lanes, n, (0, low, n - high, n), "pads")
        tile_shape = list(lanes.tile_shape(out.shape))
        grid = list(tiles.shape)

        def filler(count, grid=grid, axis=axis, tile_shape=tile_shape):
            block = np.empty(grid[:axis] + [count] + grid[axis + 1 :], dtype=object)
            for i in np.ndindex(*block.shape):
                block[i] = jnp.full(tile_shape, fill.tiles[()], out.dtype)
            return block

        tiles = np.concatenate([filler(low // c), tiles, filler(high // c)], axis=axis)
    return Tiled(tuple(out.shape), tiles)


def _transpose(lanes, params, invals, outs):
    (x,), (out,) = invals, outs
    perm = params["permutation"]
    moved = np.transpose(x.tiles, perm)
    tiles = np.empty(moved.shape, dtype=object)
    for index in np.ndindex(*moved.shape):
        tiles[index] = jax.lax.transpose(moved[index], perm)
    return Tiled(tuple(out.shape), tiles)


def _iota(lanes, params, invals, outs):
    (out,) = outs
    axis, dtype = params["dimension"], params["dtype"]
    if is_rows(out.shape[axis]):
        raise Unsupported("it counts along the batch axis (an iota over rows)")
    c, _ = lanes.cut(out.shape[axis])
    shape = lanes.tile_shape(out.shape)

    def tile(index):
        lanes_iota = jax.lax.broadcasted_iota(dtype, shape, axis)
        return lanes_iota + jnp.asarray(index[axis] * c, dtype) if index[axis] else lanes_iota

    return tiled(out.shape, tile, lanes)


def _dot_general(lanes, params, invals, outs):
    (lhs, rhs), (out,) = invals, outs
    (lc, rc), (lb, rb) = params["dimension_numbers"]
    if lb or rb or len(lc) > 1:
        raise Unsupported("it has a matmul with batch axes or several contracted axes")
    preferred = params.get("preferred_element_type") or out.dtype
    product = dot(lhs, rhs, (tuple(lc), tuple(rc)), lanes, preferred, params.get("precision"))
    return map_tiles(lambda t: t.astype(out.dtype), product)


def dot(lhs: Tiled, rhs: Tiled | RefTiles, contracting, lanes: Lanes, dtype, precision=None):
    """``dot_general`` of tiled values over at most one contracted axis, accumulating in
    ``dtype``; free axes: ``lhs``'s, then ``rhs``'s. The padding lanes of the contracted axis
    are zeroed first, except in a `RefTiles` ``rhs``, whose tiles are read where their product
    needs them (its padding holds zeros: a kernel input laid out by `to_lanes`)."""
    lc, rc = contracting
    lfree = [a for a in range(len(lhs.shape)) if a not in lc]
    rfree = [a for a in range(len(rhs.shape)) if a not in rc]
    if lc:
        lhs = _fill_padding(lanes, lhs, lc, 0)
        if isinstance(rhs, Tiled):
            rhs = _fill_padding(lanes, rhs, rc, 0)
    steps = lhs.tiles.shape[lc[0]] if lc else 1
    shape = tuple(lhs.shape[a] for a in lfree) + tuple(rhs.shape[a] for a in rfree)

    def tile(index):
        li, ri = index[: len(lfree)], index[len(lfree) :]
        total = None
        for k in range(steps):
            a = lhs.tiles[_place(li, lfree, lc, k)]
            b = rhs.tile(_place(ri, rfree, rc, k))
            part = tile_dot(a, b, (lc, rc), lanes, precision, dtype)
            total = part if total is None else total + part
        return total

    return tiled(shape, tile, lanes)


def _place(free_index, free_axes, contracted, k):
    index = [0] * (len(free_axes) + len(contracted))
    for a, i in zip(free_axes, free_index, strict=True):
        index[a] = i
    for a in contracted:
        index[a] = k
    return tuple(index)


def tile_dot(a, b, contracting, lanes: Lanes, precision, dtype):
    """``dot_general`` of two tiles with one or no contracted axis: on the matrix unit when
    both are 2-D and every extent reaches ``lanes.min_dot``, else as a product and a sum."""
    (lc, rc) = contracting
    if a.ndim == 2 and b.ndim == 2 and len(lc) == 1:
        m, k = a.shape[1 - lc[0]], a.shape[lc[0]]
        n = b.shape[1 - rc[0]]
        if min(m, n, k) >= lanes.min_dot:
            return jax.lax.dot_general(
                a,
                b,
                ((tuple(lc), tuple(rc)), ((), ())),
                precision=precision,
                preferred_element_type=dtype,
            )
    lfree = [d for d in range(a.ndim) if d not in lc]
    rfree = [d for d in range(b.ndim) if d not in rc]
    a = jax.lax.transpose(a, (*lfree, *lc)).astype(dtype)
    b = jax.lax.transpose(b, (*rc, *rfree)).astype(dtype)
    # a: [*lfree, (K)] -> [*lfree, (K), 1...]; b: [(K), *rfree] -> [1..., (K), *rfree]
    a = a.reshape(a.shape + (1,) * len(rfree))
    b = b.reshape((1,) * len(lfree) + b.shape)
    shape = tuple(max(x, y) for x, y in zip(a.shape, b.shape, strict=True))
    product = jax.lax.broadcast_in_dim(a, shape, tuple(range(a.ndim))) * jax.lax.broadcast_in_dim(
        b, shape, tuple(range(b.ndim))
    )
    return product.sum(axis=len(lfree)) if lc else product


_RULES: dict[str, Callable] = {
    "broadcast_in_dim": _broadcast_in_dim,
    "reshape": _reshape,
    "squeeze": _squeeze,
    "split": _split,
    "concatenate": _concatenate,
    "slice": _slice,
    "pad": _pad,
    "transpose": _transpose,
    "iota": _iota,
    "dot_general": _dot_general,
    **{name: _reducer(name) for name in _COMBINE},
}
