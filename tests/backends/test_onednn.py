"""The ``onednn`` backend: oneDNN's RNN, LSTM and GRU through XLA's FFI, against the reference.

Values and gradients (the training forward pass with oneDNN's workspace, then its backward
pass) and inference (the forward pass alone) equal the ``lax.scan`` reference for every
cell oneDNN computes, with and without lengths, in both directions; what it cannot compute
exactly is refused in words, and so is everything where the kernels are absent. Tests that
run the kernels skip where they were not built (the refusal says why).
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scan_helpers

import rnn_jax as rj
from rnn_jax.backends import _onednn_library, auto
from rnn_jax.backends.onednn import OneDNN, unavailable

T, B, F, H = 7, 5, 3, 4
LENGTHS = {
    "full": None,
    "padded": [7, 3, 0, 5, 3],  # unsorted, repeated, one empty, one full
    "every_length": [2, 7, 4, 1, 6],  # a segment per sequence
}
CELLS = {
    "lstm": rj.lstm(H),
    "gru": rj.gru(H),
    "rnn_tanh": rj.simple(H),
    "rnn_relu": rj.simple(H, activation="relu"),
}
needs_kernels = pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))


def close(got, want, tol=2e-5):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=tol, atol=tol), got, want)


def case(name, lengths, seed=0, steps=T, batch=B):
    cell = CELLS[name]
    params, xs, h0 = scan_helpers.random_case(cell, steps, batch, F, seed)
    length = None if lengths is None else jnp.asarray(lengths, jnp.int32)
    return cell, params, xs, h0, length


def carry_loss(final):
    return sum(jnp.sum(jnp.sin(leaf)) for leaf in jax.tree.leaves(final))


# the gated cells without lengths, padded and with a segment per sequence (the most the
# workspace holds, min(B, T)); the Elman cells once each (they share the gated cells' code)
GRID = [
    *[(name, lengths) for name in ("lstm", "gru") for lengths in LENGTHS],
    ("rnn_tanh", "padded"),
    ("rnn_relu", "full"),
]


@needs_kernels
@pytest.mark.parametrize("name, lengths", GRID)
def test_values_and_gradients_equal_the_reference(name, lengths):
    """Both directions in one loss over outputs and final carries; gradients with respect to
    the parameters, the inputs and the initial state."""
    cell, params, xs, h0, length = case(name, LENGTHS[lengths])

    def run(backend):
        return jax.jit(
            lambda p, x, h: scan_helpers.value_and_grads_both_ways(
                cell, backend, p, x, h, length, carry_loss
            )
        )(params, xs, h0)

    got, want = run("onednn"), run("reference")
    close(got, want)
    (_, runs), _ = got
    empty = np.zeros(B, bool) if length is None else np.asarray(length) == 0
    for final, ys in runs.values():  # an empty sequence keeps its initial state
        assert not np.asarray(ys)[:, empty].any()
        close(jax.tree.map(lambda c: c[empty], final), jax.tree.map(lambda c: c[empty], h0))


@needs_kernels
def test_more_segment_shapes_than_a_thread_keeps_primitives_for():
    """Lengths 1, 3, 6, ..., 153 cut the time axis into segments of 1, 2, ..., 17 steps: more
    shapes than the 16 primitives each thread keeps (csrc/onednn/reused.h), so each pass
    evicts the ones it made first and the next call makes them again; every result equals
    the reference's."""
    lengths = np.cumsum(np.arange(1, 18)).tolist()
    steps, batch = lengths[-1], len(lengths)
    cell, params, xs, h0, length = case("lstm", lengths, seed=4, steps=steps, batch=batch)

    def run(backend, length):
        return jax.jit(
            lambda p, x, h: scan_helpers.value_and_grads_both_ways(
                cell, backend, p, x, h, length, carry_loss
            )
        )(params, xs, h0)

    want = run("reference", length)
    close(run("onednn", length), want)
    close(run("onednn", length), want)
    close(run("onednn", None), run("reference", None))


@needs_kernels
@pytest.mark.parametrize("threads", [None, 2])
@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_inference_equals_the_reference(name, threads):
    """No gradient taken: the forward-only handler, on the runtime's default threads or, for
    an OpenMP build, two (a SYCL build refuses them in words)."""
    cell, params, xs, h0, length = case(name, LENGTHS["padded"], seed=1)
    if threads is not None and _onednn_library.cpu_runtime() != "OpenMP":
        with pytest.raises(ValueError, match="threads=2 sets OpenMP threads, and this oneDNN"):
            rj.scan(cell, params, xs, backend=OneDNN(threads=threads))
        return

    def run(backend):
        scans = jax.jit(
            lambda p, x, h: scan_helpers.both_directions(cell, p, x, h, length, backend)
        )
        return scans(params, xs, h0)

    close(run(OneDNN(threads=threads)), run("reference"))


@needs_kernels
def test_a_segment_per_sequence_fits_the_workspace_of_a_wider_lstm():
    """At a width where oneDNN's workspace grows with the steps rather than by whole pages
    (``every_length`` above is the other regime): ``min(B, T)`` segments fit the bound, which
    the kernel checks (it would raise), and the result is exact."""
    steps = batch = 16
    cell = rj.lstm(64)
    params, xs, h0 = scan_helpers.random_case(cell, steps, batch, F, 2)
    length = jnp.asarray(np.random.default_rng(2).permutation(np.arange(1, steps + 1)))
    got = scan_helpers.value_and_grads(cell, "onednn", params, xs, h0, length=length)
    want = scan_helpers.value_and_grads(cell, "reference", params, xs, h0, length=length)
    close(got, want, 5e-5)


@needs_kernels
@pytest.mark.parametrize(
    "steps, batch, lengths",
    [(0, B, None), (T, 0, None), (T, B, [0] * B)],
    ids=["no_steps", "no_sequences", "all_empty"],
)
def test_degenerate_shapes_give_what_the_reference_gives(steps, batch, lengths):
    cell, params, xs, h0, length = case("lstm", lengths, steps=steps, batch=batch)
    got = scan_helpers.value_and_grads(cell, "onednn", params, xs, h0, length=length)
    want = scan_helpers.value_and_grads(cell, "reference", params, xs, h0, length=length)
    close(got, want)


@needs_kernels
def test_vmap_over_parameters_runs_one_call_per_member():
    """Mapped parameters cannot fold into the batch: the handler runs per member."""
    cell = CELLS["gru"]
    _, xs, h0, _ = case("gru", None)[1:]
    ensemble = jax.vmap(lambda k: cell.init(k, F))(jax.random.split(jax.random.key(0), 2))

    def loss(params, backend):
        return jnp.sum(rj.scan(cell, params, xs, initial_state=h0, backend=backend)[1] ** 2)

    def per_member(backend):
        return jax.jit(jax.vmap(jax.value_and_grad(loss), in_axes=(0, None)), static_argnums=1)(
            ensemble, backend
        )

    close(per_member("onednn"), per_member("reference"))


@pytest.mark.parametrize(
    "cell, extra, reason",
    [
        (rj.gru(H, reset_after=False), {}, "not PyTorch's RNN, LSTM or GRU"),
        (rj.lstm(H, peephole=True), {}, "not PyTorch's RNN, LSTM or GRU"),
        (rj.lstm(H, layer_norm=True), {}, "not PyTorch's RNN, LSTM or GRU"),
        (rj.lstm(H, activation="relu"), {}, "not PyTorch's RNN, LSTM or GRU"),
        (rj.mgu(H), {}, "not PyTorch's RNN, LSTM or GRU"),
        (rj.lstm(H, proj_size=2), {}, "without a projection"),
        (rj.lstm(H, dtype=jnp.bfloat16), {}, r"float32 only; got dtypes \['bfloat16'"),
        (rj.lstm(H), {"mask": jnp.ones((T, B), bool).at[2, 0].set(False)}, "masks with holes"),
        (rj.lstm(H), {"resets": jnp.zeros((T, B), bool).at[2, 0].set(True)}, "resets"),
    ],
    ids=["gru_reset_before", "peephole", "layer_norm", "relu_lstm", "mgu", "proj", "bf16"]
    + ["holes", "resets"],
)
def test_refuses_in_words_what_it_cannot_compute_exactly(cell, extra, reason):
    shapes = jax.eval_shape(lambda key: cell.init(key, F), jax.random.key(0))
    params = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    xs = jnp.ones((T, B, F))
    with pytest.raises(ValueError, match=rf"onednn backend cannot run the .*{reason}"):
        rj.scan(cell, params, xs, backend="onednn", **extra)


def test_options_are_checked_and_make_equal_backends():
    assert OneDNN(threads=2) == OneDNN(threads=2) and hash(OneDNN()) == hash(OneDNN())
    with pytest.raises(ValueError, match="threads must be a positive int or None; got 0"):
        OneDNN(threads=0)


def absent_distribution(name):
    raise importlib.metadata.PackageNotFoundError(name)


@pytest.fixture(params=["kernels", "onednn"])
def absent(request, monkeypatch):
    """The process as if rnn_jax had been built without its kernels, or oneDNN's wheel were
    not installed (the loader's own lookups fail); yields the words the refusal says."""
    if request.param == "kernels":
        monkeypatch.setattr(_onednn_library, "KERNELS_MODULE", "rnn_jax.backends._no_kernels")
    else:
        monkeypatch.setattr("importlib.metadata.distribution", absent_distribution)
    _onednn_library._loaded.cache_clear()
    yield {"kernels": "without its oneDNN kernels", "onednn": "library is not installed"}[
        request.param
    ]
    monkeypatch.undo()
    _onednn_library._loaded.cache_clear()


def test_absent_the_backend_refuses_in_words_and_auto_never_picks_it(absent):
    cell = rj.lstm(H)
    params, xs, _ = scan_helpers.random_case(cell, T, B, F)
    assert absent in unavailable()
    with pytest.raises(ValueError, match=f"onednn backend cannot run the lstm .*{absent}"):
        rj.scan(cell, params, xs, backend="onednn")
    # a table measuring onednn ten times faster than sequential at this very shape
    row = {"cell": "lstm", "dtype": "float32", "B": B, "T": T, "I": F, "H": H}
    medians = {"sequential": 1.0, "onednn": 0.1}
    table = {"backends": {"cpu": [{**row, "forward": medians, "forward_backward": medians}]}}
    problem = scan_helpers.problem_of(cell, params, xs)
    assert auto.candidates(cell, problem, table=table) == ["onednn"]
    assert auto.choose(cell, problem, table=table).name == "sequential"
    _, ys = rj.scan(cell, params, xs)  # auto runs, on sequential
    close(ys, rj.scan(cell, params, xs, backend="reference")[1])


@needs_kernels
@pytest.mark.parametrize("backend", ["onednn", "sequential"])
def test_a_second_derivative_differentiates_the_reference(backend):
    """jax.grad of jax.grad: the outer derivative sees the scan's operands traced, and the
    reference loop is differentiated (oneDNN's backward pass has no derivative)."""
    cell, params, xs, _, _ = case("lstm", None, seed=3)

    def squared_gradient(x, chosen):
        inner = jax.grad(lambda y: jnp.sum(rj.scan(cell, params, y, backend=chosen)[1] ** 2))
        return jnp.sum(inner(x) ** 2)

    close(jax.grad(squared_gradient)(xs, backend), jax.grad(squared_gradient)(xs, "reference"))


@needs_kernels
def test_a_second_derivative_through_a_jitted_gradient_is_refused_in_words():
    """With a jit between the two derivatives the kernels' backward pass itself would be
    differentiated: refused, naming the backends that can."""
    cell, params, xs, _, _ = case("lstm", None, seed=3)
    inner = jax.jit(jax.grad(lambda y: jnp.sum(rj.scan(cell, params, y, backend="onednn")[1] ** 2)))
    with pytest.raises(ValueError, match='order two .* needs backend="sequential" or "reference"'):
        jax.grad(lambda x: jnp.sum(inner(x) ** 2))(xs)


@needs_kernels
def test_a_fixed_size_export_refuses_the_kernels_by_name():
    """jax.export serializes no custom call without a compatibility guarantee: the error names
    the handler (docs/deploy.md says to export with symbolic sizes or another backend)."""
    cell, params, xs, _, _ = case("lstm", None)
    program = jax.jit(lambda x: rj.scan(cell, params, x, backend="onednn")[1])
    with pytest.raises(ValueError, match="rnn_onednn_forward_inference"):
        jax.export.export(program)(jax.ShapeDtypeStruct(xs.shape, xs.dtype))


@needs_kernels
def test_without_a_cpu_device_the_sycl_build_refuses_in_words_at_load():
    """A SYCL build whose OpenCL CPU runtime is not found creates no engine: the backend
    says so when it loads, and auto runs sequential (a process of its own: the engine of
    this one exists already)."""
    if _onednn_library.cpu_runtime() != "SYCL":
        pytest.skip("the installed oneDNN is not a SYCL build")
    script = textwrap.dedent(
        """
        import jax
        import jax.numpy as jnp
        import rnn_jax as rj
        from rnn_jax.backends import _onednn_library
        _onednn_library.name_opencl_runtime = lambda: None  # the runtime never named
        print("REASON", _onednn_library.unavailable())
        cell = rj.lstm(4)
        params = cell.init(jax.random.key(0), 3)
        print("AUTO", rj.explain_auto(cell, params, jnp.ones((7, 5, 3))).backend.name)
        """
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "OCL_ICD_FILENAMES": ""}
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + ":" + env.get("PYTHONPATH", "")
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert "REASON oneDNN cannot run on this machine: could not create an engine" in done.stdout
    assert "AUTO sequential" in done.stdout
