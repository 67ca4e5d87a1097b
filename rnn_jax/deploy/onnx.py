"""ONNX through jax2onnx: the model's jaxpr converted primitive by primitive, each scan one
``Loop`` over the cell's step (`rnn_jax.deploy.onnx_scan`).

The graph is of opset `OPSET`, float32, with the symbolic sizes ``batch`` and
``time`` as named dynamic axes; onnxruntime runs it. A model that computes with
complex numbers (the LRU), in another float type (bf16 params), or with a
primitive jax2onnx cannot convert, is refused in words.

jax2onnx is imported on first use. It is installed without its declared
dependencies (``pip install --no-deps jax2onnx``): its converter imports none of
them (Orbax, Hugging Face Hub, Netron, dm-pix), and its pin of
``orbax-checkpoint<0.11.37`` would downgrade the Orbax that checkpoints use.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import pkgutil
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax.deploy.signature import Signature

# ONNX 1.12's opset (2022): older runtimes take it, and every cell ONNX can hold converts at it
OPSET = 17
INSTALL = "pip install onnx onnx-ir onnxruntime && pip install --no-deps 'jax2onnx>=0.17.1,<0.18'"


@contextlib.contextmanager
def jax_plugins_only() -> Iterator[None]:
    """jax2onnx with the plugins of JAX's own primitives, and ``rnn_scan``'s.

    ``to_onnx`` otherwise imports every plugin it ships, whose Equinox and
    Flax examples build models at import (half a minute on two cores); the
    graphs here hold JAX primitives only. The registry is left whole for
    later conversions of other models.
    """
    try:
        from jax2onnx.plugins import jax as jax_plugins
        from jax2onnx.plugins import plugin_system
    except ImportError:
        raise ImportError(f"ONNX export needs jax2onnx and onnxruntime: {INSTALL}") from None
    for module in pkgutil.walk_packages(jax_plugins.__path__, f"{jax_plugins.__name__}."):
        importlib.import_module(module.name)
    importlib.import_module("rnn_jax.deploy.onnx_scan")
    imported = plugin_system._already_imported_plugins
    plugin_system._already_imported_plugins = True
    # onnx-ir warns of each intermediate value whose type it leaves out of the graph's
    # optional value_info; the graph is complete without them
    serde = logging.getLogger("onnx_ir.serde")
    level = serde.level
    serde.setLevel(logging.ERROR)
    try:
        yield
    finally:
        plugin_system._already_imported_plugins = imported
        serde.setLevel(level)


def jaxprs_in(value: Any) -> Iterator[Any]:
    """The jaxprs an equation's parameter holds (a scan's body, cond's branches, the
    programs of an ``rnn_scan``)."""
    for item in value if isinstance(value, tuple | list) else (value,):
        inner = getattr(item, "jaxpr", item)
        if isinstance(inner, jax.extend.core.Jaxpr):
            yield inner


def computed_dtypes(jaxpr: Any) -> set[np.dtype]:
    """The dtypes of every value ``jaxpr`` computes, at any depth."""
    found = set()
    for eqn in jaxpr.eqns:
        found.update(np.dtype(var.aval.dtype) for var in eqn.outvars)
        for value in eqn.params.values():
            for inner in jaxprs_in(value):
                found |= computed_dtypes(inner)
    return found


def dtype_refusal(form: Signature) -> str | None:
    """Why ONNX cannot hold ``form`` exactly: complex arithmetic, which its runtimes lack, or
    floats other than float32, which the conversion does not keep apart."""
    traced = jax.make_jaxpr(form.function)(*form.specs())
    computed = computed_dtypes(traced.jaxpr)
    complex_types = sorted(str(d) for d in computed if jnp.issubdtype(d, jnp.complexfloating))
    if complex_types:
        return (
            f"the model computes with {', '.join(complex_types)} values (as the lru cell's "
            "complex diagonal recurrence does), and ONNX runtimes have no complex arithmetic; "
            "export it as StableHLO"
        )
    floats = sorted(str(d) for d in computed if jnp.issubdtype(d, jnp.floating) and d != "float32")
    if floats:
        return (
            f"the model computes in {', '.join(floats)} beside float32, and the ONNX graph is "
            "float32 only; cast the params to float32, or export it as StableHLO"
        )
    return None


def serialize(form: Signature, *, opset: int = OPSET, name: str = "rnn_jax") -> bytes:
    """The ONNX model of ``form`` (its ports as the graph's inputs and outputs), serialized
    (``rj.export(..., format="onnx")`` calls it). A ValueError says why a model cannot be
    expressed exactly."""
    reason = dtype_refusal(form)
    if reason is not None:
        raise ValueError(f"ONNX cannot express this model exactly: {reason}")
    with jax_plugins_only():
        from jax2onnx import to_onnx

        try:
            proto = to_onnx(
                form.function,
                form.specs(),
                model_name=name,
                opset=opset,
                input_names=[port.name for port in form.inputs],
                output_names=[port.name for port in form.outputs],
            )
        except NotImplementedError as error:
            raise ValueError(f"ONNX cannot express this model through jax2onnx: {error}") from None
    drop_unused_initializers(proto.graph)
    return proto.SerializeToString()


def subgraphs(graph: Any) -> Iterator[Any]:
    """The graphs ``graph``'s nodes hold (a ``Loop``'s body), one level down."""
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("g"):
                yield attribute.g
            yield from attribute.graphs


def names_read(graph: Any) -> set[str]:
    """The names ``graph`` reads: its nodes' inputs and outputs, its subgraphs' reads."""
    names = {output.name for output in graph.output}
    for node in graph.node:
        names.update(node.input)
    for inner in subgraphs(graph):
        names |= names_read(inner)
    return names


def drop_unused_initializers(graph: Any) -> None:
    """Removes from ``graph`` and its subgraphs the constants nothing reads (jax2onnx leaves
    some beside its loops; runtimes warn of each)."""
    for inner in subgraphs(graph):
        drop_unused_initializers(inner)
    read = names_read(graph)
    kept = [tensor for tensor in graph.initializer if tensor.name in read]
    del graph.initializer[:]
    graph.initializer.extend(kept)
