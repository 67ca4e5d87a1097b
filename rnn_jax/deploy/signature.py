"""A model as a function of named arrays, batch first: what an exported program takes and gives.

Two forms, both over positional arrays whose names and shapes are `Port`\\ s:

- the whole sequence: ``(inputs [batch, time, *features], length [batch]) -> outputs``
  (``[batch, K]`` for a classifier, ``[batch, time, K]`` per step); token ids are
  ``[batch, time]`` ints;
- one step of a stream: ``(inputs [batch, *features], *state) -> (outputs, *state)``,
  the state explicit, starting from zeros; only for models that read forwards
  (`streaming_refusal` says why another cannot stream).

``batch`` and ``time`` are symbolic sizes (chosen when the program runs) unless the
export fixes them to the example's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax.layers.base import Layer, reads_ahead

BATCH, TIME = "batch", "time"
# Layers and models whose output at a step reads no later step (their parts checked too).
FORWARD_KINDS = ("classifier", "tagger", "forecaster", "generator")


class Port(NamedTuple):
    """An input or output of an exported program: ``shape`` holds ints and the symbolic
    sizes ``"batch"`` and ``"time"``."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str


class Signature(NamedTuple):
    """``function(*inputs) -> tuple of outputs``, over the arrays its ports describe."""

    function: Callable[..., tuple[jax.Array, ...]]
    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]

    def specs(self) -> list[jax.ShapeDtypeStruct]:
        """The inputs as shape structs, ``batch`` and ``time`` as JAX symbolic dimensions."""
        return [shape_struct(port) for port in self.inputs]


@cache
def symbols() -> dict[str, Any]:
    """``batch`` and ``time`` as JAX symbolic dimensions, of one scope (so they compare equal)."""
    return dict(zip((BATCH, TIME), jax.export.symbolic_shape(f"{BATCH}, {TIME}"), strict=True))


def shape_struct(port: Port) -> jax.ShapeDtypeStruct:
    sizes = symbols()
    return jax.ShapeDtypeStruct(tuple(sizes.get(d, d) for d in port.shape), port.dtype)


def named_leaves(prefix: str, tree: Any) -> list[tuple[str, Any]]:
    """``(name, leaf)`` pairs: ``prefix`` for a lone array, else ``prefix.0.h``-style paths."""
    named = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        key = jax.tree_util.keystr(path, simple=True, separator=".")
        named.append((f"{prefix}.{key}" if key else prefix, leaf))
    return named


def ports_of(prefix: str, tree: Any) -> list[Port]:
    """The ports of the shape structs in ``tree``: a symbolic size by its name."""
    return [
        Port(name, tuple(d if isinstance(d, int) else str(d) for d in leaf.shape), str(leaf.dtype))
        for name, leaf in named_leaves(prefix, tree)
    ]


def check_example(example: Any) -> tuple[tuple[int, ...], np.dtype]:
    """``example``'s shape and dtype: ``[batch, time, *features]`` floats or ``[batch, time]``
    token ids."""
    shape, dtype = tuple(getattr(example, "shape", ())), getattr(example, "dtype", None)
    if dtype is None or len(shape) < 2:
        raise ValueError(
            f"example must be an array or shape struct [batch, time, *features] (or token ids "
            f"[batch, time]); got {type(example).__name__} of shape {shape}"
        )
    dtype = np.dtype(dtype)
    if not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)):
        raise TypeError(f"example must hold floats or token ids; got dtype {dtype}")
    return shape, dtype


def fixed(ports: Sequence[Port], sizes: dict[str, int]) -> tuple[Port, ...]:
    """``ports`` with ``batch`` and ``time`` replaced by ``sizes``."""
    return tuple(p._replace(shape=tuple(sizes.get(d, d) for d in p.shape)) for p in ports)


def signature(
    function: Callable,
    inputs: tuple[Port, ...],
    outputs: tuple[str, ...],
    sizes: dict[str, int] | None,
) -> Signature:
    """The `Signature` of ``function`` over ``inputs`` (fixed to ``sizes`` when given).

    ``function`` returns a tuple of pytrees, named by ``outputs``; the signature's
    function returns their leaves.
    """
    if sizes is not None:
        inputs = fixed(inputs, sizes)
    shapes = jax.eval_shape(function, *[shape_struct(p) for p in inputs])
    ports = [p for name, part in zip(outputs, shapes, strict=True) for p in ports_of(name, part)]
    return Signature(lambda *args: tuple(jax.tree.leaves(function(*args))), inputs, tuple(ports))


def where_leaves(tree: Any, chosen: list[bool], change: Callable) -> Any:
    """``tree`` with ``change`` applied to the leaves ``chosen`` marks."""
    leaves, structure = jax.tree.flatten(tree)
    changed = [change(x) if c else x for x, c in zip(leaves, chosen, strict=True)]
    return jax.tree.unflatten(structure, changed)


def per_step(tree: Any, leading: tuple[str, str]) -> list[bool]:
    """For each leaf of the shape structs ``tree``: whether its first two axes are
    ``leading`` (sizes as text, ``"time"`` or ``"1"``, then ``"batch"``): a value per step."""
    return [tuple(map(str, leaf.shape[:2])) == leading for leaf in jax.tree.leaves(tree)]


def apply_of(model: Any) -> Callable:
    """``model.apply`` of a `Model` or `Layer`, or ``model`` itself when it is the function."""
    apply = getattr(model, "apply", model)
    if not callable(apply):
        raise TypeError(
            f"model must be an rnn_jax Model or Layer, or its apply function; got "
            f"{type(model).__name__}"
        )
    spec = getattr(model, "spec", None) or {}
    if spec.get("kind") == "seq2seq":
        raise ValueError(
            "a seq2seq model reads two sequences (source and decoder inputs) and decodes by "
            "feeding its outputs back; rj.export takes models over one sequence"
        )
    return apply


def sequence_signature(model: Any, params: Any, example: Any, *, dynamic: bool) -> Signature:
    """The whole-sequence form of ``model`` (see the module docstring).

    Example:
        >>> model = rj.models.classifier(rj.gru(8), 3, input_size=2)
        >>> params = model.init(jax.random.key(0))
        >>> form = sequence_signature(model, params, jnp.zeros((4, 10, 2)), dynamic=True)
        >>> [(p.name, p.shape) for p in form.inputs + form.outputs]
        [('inputs', ('batch', 'time', 2)), ('length', ('batch',)), ('outputs', ('batch', 3))]
    """
    apply = apply_of(model)
    shape, dtype = check_example(example)

    def time_major(inputs, length):
        return apply(params, jnp.swapaxes(inputs, 0, 1), length=length)[1]

    inputs = (
        Port("inputs", (BATCH, TIME, *shape[2:]), str(dtype)),
        Port("length", (BATCH,), "int32"),
    )
    swapped = per_step(jax.eval_shape(time_major, *map(shape_struct, inputs)), (TIME, BATCH))

    def function(inputs, length):
        return (where_leaves(time_major(inputs, length), swapped, lambda y: jnp.swapaxes(y, 0, 1)),)

    sizes = None if dynamic else {BATCH: shape[0], TIME: shape[1]}
    return signature(function, inputs, ("outputs",), sizes)


def streaming_refusal(model: Any) -> str | None:
    """Why ``model`` cannot run one step at a time exactly, or None when it can."""
    if isinstance(model, Layer):
        return layer_refusal(model)
    spec = getattr(model, "spec", None)
    if not spec:
        return (
            "streaming needs an rnn_jax Model or Layer, whose spec shows that it reads forwards "
            f"only; got {type(model).__name__} without one"
        )
    return backwards_part(spec)


def backwards_part(spec: Any) -> str | None:
    """The part of the model ``spec`` whose output at a step reads later steps (its layers
    say it of themselves: `rnn_jax.layers.base.reads_ahead`)."""
    kind = spec.get("kind")
    if spec.get("pooling") in ("mean", "max"):
        return f"its {spec['pooling']} pooling is over the whole sequence, not the steps so far"
    if kind not in FORWARD_KINDS:
        return f"a layer of kind {kind!r} is not known to read forwards only"
    for value in spec.values():
        parts = value if isinstance(value, tuple) and not isinstance(value, Layer) else (value,)
        for part in parts:
            reason = layer_refusal(part) if isinstance(part, Layer) else None
            if reason is not None:
                return reason
    return None


def layer_refusal(layer: Layer) -> str | None:
    """Why ``layer`` cannot stream (`rnn_jax.layers.base.reads_ahead`), or None."""
    reason = reads_ahead(layer)
    return None if reason is None else f"{reason}, which a stream has not seen"


def streaming_signature(model: Any, params: Any, example: Any, *, dynamic: bool) -> Signature:
    """The one-step form of ``model``: the state in and out beside one step's inputs
    ``[batch, *features]``; the stream starts from zeros. A ValueError says why a model
    cannot stream (`streaming_refusal`, or an initial state other than zeros).

    Example:
        >>> model = rj.models.tagger(rj.lstm(8), 3, input_size=2)
        >>> params = model.init(jax.random.key(0))
        >>> form = streaming_signature(model, params, jnp.zeros((4, 10, 2)), dynamic=True)
        >>> [(p.name, p.shape) for p in form.inputs]
        [('inputs', ('batch', 2)), ('state.h', ('batch', 8)), ('state.c', ('batch', 8))]
    """
    reason = streaming_refusal(model)
    if reason is not None:
        raise ValueError(f"this model cannot be exported as a stream: {reason}")
    apply = apply_of(model)
    shape, dtype = check_example(example)
    step = Port("inputs", (BATCH, *shape[2:]), str(dtype))
    state = jax.eval_shape(lambda x: apply(params, x[None])[0], shape_struct(step))
    check_zero_start(apply, params, step)
    state_ports = ports_of("state", state)
    outputs = jax.eval_shape(lambda x: apply(params, x[None])[1], shape_struct(step))
    squeezed = per_step(outputs, ("1", BATCH))  # a tagger's [1, batch, K] of the one step
    tree = jax.tree.structure(state)

    def function(inputs, *leaves):
        carried, ys = apply(params, inputs[None], initial_state=jax.tree.unflatten(tree, leaves))
        return where_leaves(ys, squeezed, lambda y: y[0]), carried

    sizes = None if dynamic else {BATCH: shape[0]}
    return signature(function, (step, *state_ports), ("outputs", "next_state"), sizes)


def check_zero_start(apply: Callable, params: Any, step: Port) -> None:
    """A ValueError unless ``apply`` from its own initial state equals ``apply`` from zeros
    (a stream's consumer starts from zeros), checked on one step of one sequence."""
    shape = tuple(1 if d == BATCH else d for d in step.shape)
    x = jnp.full((1, *shape), 0 if np.issubdtype(step.dtype, np.integer) else 0.5, step.dtype)
    run = jax.jit(lambda params, x, state: apply(params, x, initial_state=state))
    own = run(params, x, None)
    from_zeros = run(params, x, jax.tree.map(jnp.zeros_like, own[0]))
    for a, b in zip(jax.tree.leaves(own), jax.tree.leaves(from_zeros), strict=True):
        if not np.allclose(a, b, rtol=1e-6, atol=1e-7):
            raise ValueError(
                "this model cannot be exported as a stream: its initial state is not zeros, "
                "from which a stream's consumer starts"
            )
