"""The contract between ``rj.scan`` and its backends: modules and classes of options, capabilities
instead of names, hashable configuration, and the ``rnn_scan`` primitive under ``jit``,
``vmap``, forward and reverse mode."""

from __future__ import annotations

import dataclasses
import importlib
import os
import subprocess
import sys
import types

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scan_helpers

import rnn_jax as rj
from rnn_jax.backends.reference import reference_scan
from rnn_jax.cells.arrays import along

T, B, F, H = 6, 3, 2, 4
LENGTH = jnp.array([6, 0, 3])


@dataclasses.dataclass(frozen=True)
class Spy(rj.Backend):
    """The reference loop, whose ``supports`` reports the cells it is asked about."""

    name = "spy"
    report: object

    def supports(self, cell, problem):
        return self.report(cell, problem)

    def run(self, cell, params, problem):
        return reference_scan(cell, params, problem)


def normal(shape, seed):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def close(got, want, tol=1e-5):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=tol, atol=tol), got, want)


# ----------------------------------------------------------------------------- modules


@pytest.mark.parametrize("name", rj.backends.names())
def test_every_backend_has_a_module_and_a_class_of_its_options(name):
    module = importlib.import_module(f"rnn_jax.backends.{name}")
    assert isinstance(module, types.ModuleType)
    assert getattr(rj.backends, name) is module  # no function shadows the module
    backend = rj.backends.get(name)
    assert isinstance(backend, rj.Backend) and backend.name == name
    assert dataclasses.is_dataclass(backend) and type(backend) is getattr(
        rj.backends, type(backend).__name__
    )
    assert backend == type(backend)() and hash(backend) == hash(type(backend)())
    with pytest.raises(dataclasses.FrozenInstanceError):
        backend.name = "other"


def test_pallas_cudnn_and_onednn_load_on_first_use():
    code = (
        "import sys, rnn_jax as rj; "
        "assert 'jax.experimental.pallas' not in sys.modules; "
        "assert 'rnn_jax.backends.cudnn' not in sys.modules; "
        "assert 'rnn_jax.backends._onednn_library' not in sys.modules; "
        "assert rj.backends.get('pallas').name == 'pallas'; "
        "assert 'jax.experimental.pallas' in sys.modules; "
        "assert rj.backends.get('onednn').name == 'onednn'; "
        "assert 'libdnnl' not in open('/proc/self/maps').read()"  # loaded when first asked
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_configured_backends_are_equal_by_options_and_hashable():
    assert rj.backends.Sequential(chunk=8) == rj.backends.Sequential(chunk=8)
    assert hash(rj.backends.Sequential(chunk=8)) == hash(rj.backends.Sequential(chunk=8))
    assert rj.backends.Sequential(chunk=8) != rj.backends.Sequential(chunk=4)
    assert len({rj.backends.Checkpointed(segment=4), rj.backends.Checkpointed(segment=4)}) == 1
    with pytest.raises(ValueError, match="segment must be a positive int"):
        rj.backends.Checkpointed(segment=0)


# ----------------------------------------------------------------------------- hashable


def test_cells_layers_and_models_are_hashable_static_arguments():
    cell = rj.lstm(H, peephole=True)
    layer = rj.stack([rj.bidirectional(rj.gru(H)), rj.rnn(cell, zoneout=0.1)], dropout=0.1)
    model = rj.models.classifier(layer, 2, input_size=F)
    for thing in (cell, layer, model):
        assert hash(thing) == hash(thing)
    assert cell.config["peephole"] is True and isinstance(layer.spec, rj.layers.StackSpec)
    with pytest.raises(TypeError, match="config value 'bad' must be hashable"):
        rj.Config(bad=np.ones(2))


def test_jit_with_the_cell_static_traces_once():
    cell = rj.gru(H)
    params = cell.init(jax.random.key(0), F)

    @chex.assert_max_traces(n=1)
    def outputs(cell, params, xs):
        return rj.scan(cell, params, xs)[1]

    jitted = jax.jit(outputs, static_argnums=0)
    first = jitted(cell, params, normal((T, B, F), 1))
    second = jitted(cell, params, normal((T, B, F), 2))
    assert first.shape == second.shape == (T, B, H)


# ----------------------------------------------------------------------------- capabilities

WRAPPERS = {
    "recurrent_dropout": {"recurrent_dropout": 0.3},
    "zoneout": {"zoneout": 0.2},
}
BACKENDS = {
    **{name: name for name in rj.backends.names() if name != "cudnn"},
    "cudnn_reference": rj.backends.Cudnn(implementation="reference"),
}


def test_wrappers_drop_the_capabilities_they_invalidate():
    cell = rj.lstm(H)
    assert cell.cudnn_layout is not None and cell.gates is not None
    for options in WRAPPERS.values():
        layer = rj.rnn(cell, **options)
        params = layer.init(jax.random.key(0), F)
        seen = []

        def spy(cell, problem, seen=seen):
            seen.append(cell)
            return "a spy"

        spying = Spy(spy)
        with pytest.raises(ValueError, match="a spy"):
            rj.rnn(cell, backend=spying, **options).apply(
                params, normal((T, B, F), 0), key=jax.random.key(1)
            )
        (wrapped,) = seen
        assert wrapped.name.endswith("(lstm)")
        assert wrapped.cudnn_layout is None and wrapped.linear is None


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("wrapper", list(WRAPPERS))
def test_every_wrapper_on_every_backend_is_exact_or_refused(wrapper, backend):
    """For every wrapper x backend: the result equals the reference's, or ``supports`` says
    why not (never the unwrapped cell run silently)."""
    cell = rj.lstm(H)
    options = WRAPPERS[wrapper]
    params = cell.init(jax.random.key(0), F)
    xs = normal((T, B, F), 1)
    key = jax.random.key(2)

    def run(chosen):
        layer = rj.rnn(cell, backend=chosen, **options)
        return jax.jit(lambda p, x: layer.apply(p, x, length=LENGTH, key=key))(params, xs)

    want = run("reference")
    try:
        got = run(BACKENDS[backend])
    except ValueError as error:
        assert "cannot run the" in str(error) and "(lstm)" in str(error)
        return
    close(got, want)


# ----------------------------------------------------------------------------- the primitive


def test_cell_step_refuses_to_broadcast_a_carry():
    gru, lstm = rj.gru(H), rj.lstm(H)
    gru_params, lstm_params = gru.init(jax.random.key(0), F), lstm.init(jax.random.key(0), F)
    x = jnp.ones((3, F))
    with pytest.raises(ValueError, match=r"carry must have shape \(3, 4\) .*batch shape \(3,\).*"):
        gru.step(gru_params, jnp.zeros((1, H)), x)
    state = rj.LSTMState(jnp.zeros((3, H)), jnp.zeros((3, 1)))
    with pytest.raises(ValueError, match=r"carry\.c must have shape \(3, 4\).*got \(3, 1\)"):
        lstm.step(lstm_params, state, x)
    with pytest.raises(ValueError, match=r"x must have 2 features"):
        gru.step(gru_params, jnp.zeros((3, H)), jnp.ones((3, F + 1)))


@pytest.mark.parametrize("backend", ["sequential", "checkpointed", "newton"])
def test_forward_mode_through_any_backend_equals_the_reference(backend):
    cell = rj.lstm(H)
    params = cell.init(jax.random.key(0), F)
    xs = normal((T, B, F), 3)

    def outputs(chosen):
        return lambda x: rj.scan(cell, params, x, length=LENGTH % (x.shape[0] + 1), backend=chosen)[
            1
        ]

    tangent = normal(xs.shape, 4)
    got = jax.jvp(outputs(backend), (xs,), (tangent,))
    want = jax.jvp(outputs("reference"), (xs,), (tangent,))
    close(got, want)
    small = xs[:3]  # a Jacobian of every output by every input, kept small
    close(jax.jacfwd(outputs(backend))(small), jax.jacfwd(outputs("reference"))(small))


def scans_in(fn, *args, primitive="rnn_scan"):
    """The ``primitive`` equations of ``fn``'s jaxpr (nested ones included)."""
    found = []

    def visit(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == primitive:
                found.append(eqn)
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                visit(sub)

    visit(jax.make_jaxpr(fn)(*args).jaxpr)
    return found


def test_vmap_folds_the_mapped_axis_into_the_batch_before_dispatch():
    cell = rj.gru(H)
    params = cell.init(jax.random.key(0), F)
    xs_btf = normal((5, T, F), 5)  # five batch-major sequences
    lengths = jnp.array([6, 1, 0, 3, 6])

    def one(x, n):  # one sequence [T, F]: the batch inside is ()
        return rj.scan(cell, params, x, length=n)

    (scan,) = scans_in(jax.vmap(one), xs_btf, lengths)
    xs_operand = scan.invars[len(jax.tree.leaves(params))]
    assert xs_operand.aval.shape == (T, 5, F)  # the kernel sees all five sequences
    # linearised (what grad transposes), the scan is of the folded batch too
    loss = lambda x: jnp.sum(jax.vmap(one)(x, lengths)[1] ** 2)
    _, linear = jax.linearize(loss, xs_btf)
    (tangent,) = scans_in(linear, xs_btf, primitive="rnn_scan_tangent")
    assert [a.shape for a in tangent.params["out_avals"]] == [(5, H), (T, 5, H)]
    # and computes what the batched call computes, values and gradients
    got = jax.vmap(one)(xs_btf, lengths)
    want = rj.scan(cell, params, xs_btf.swapaxes(0, 1), length=lengths)
    close((got[0], got[1].swapaxes(0, 1)), want)


def test_vmap_over_parameters_is_exact_too():
    cell = rj.simple(H)
    ensemble = jax.vmap(lambda k: cell.init(k, F))(jax.random.split(jax.random.key(0), 3))
    xs = normal((T, B, F), 6)
    got = jax.vmap(lambda p: rj.scan(cell, p, xs, backend="sequential")[1])(ensemble)
    for i in range(3):
        member = jax.tree.map(lambda leaf, i=i: leaf[i], ensemble)
        close(got[i], rj.scan(cell, member, xs, backend="reference")[1])


def test_cells_closing_over_traced_values_are_differentiated_through():
    """A cell may close over traced arrays (an attention memory, a dropout mask): they become
    the primitive's operands, so gradients reach them."""
    base = rj.lstm(H)
    params = base.init(jax.random.key(0), F)
    xs = normal((T, B, F), 7)

    def shifted(offset):
        def combine(p, carry, xp, hu):
            return base.gates.combine(p, carry, xp * offset[0], hu)

        return rj.split_cell(
            init=base.init,
            initial_state=base.initial_state,
            project=lambda p, x: base.project(p, x + along(offset, x)),
            gates=base.gates._replace(combine=combine),
            input_size=base.input_size,
            name="shifted_lstm",
            config={},
        )

    def loss(offset, backend):
        return jnp.sum(rj.scan(shifted(offset), params, xs, backend=backend)[1] ** 2)

    offset = normal((F,), 8)
    for backend in ("sequential", "checkpointed", "newton"):
        close(jax.grad(loss)(offset, backend), jax.grad(loss)(offset, "reference"), 2e-5)


def test_unroll_one_is_honoured():
    cell = rj.gru(H)
    params = cell.init(jax.random.key(0), F)
    xs = normal((T, B, F), 9)

    def unrolls(**kwargs):
        fn = lambda x: rj.scan(cell, params, x, backend="sequential", **kwargs)[1]
        found = []

        def visit(jaxpr):
            for eqn in jaxpr.eqns:
                if eqn.primitive.name == "scan" and eqn.params["length"] > 1:
                    found.append(eqn.params["unroll"])
                for sub in scan_helpers.inner_jaxprs(eqn):
                    visit(sub)

        visit(jax.make_jaxpr(fn)(xs).jaxpr)
        return found

    assert unrolls(unroll=1) and set(unrolls(unroll=1)) == {1}
    assert 2 in unrolls(unroll=2)
    with pytest.raises(ValueError, match="unroll must be None, a bool or a positive int; got 0"):
        rj.scan(cell, params, xs, unroll=0)


def test_inference_and_training_take_their_own_tuned_settings(monkeypatch):
    """The forward-only path (no gradient taken) and the differentiated one each run the
    settings measured for their mode: here one chunk for inference, chunks of 2 for training."""
    from rnn_jax.backends import auto

    row = {"cell": "gru", "dtype": "float32", "B": B, "T": T, "I": F, "H": H}
    settings = {"unroll": 1, "residuals": "recompute", "pipeline": False}
    swept = [
        {**row, **settings, "mode": "forward", "chunk": 0},
        {**row, **settings, "mode": "forward_backward", "chunk": 2},
    ]
    monkeypatch.setattr(auto, "packaged_table", lambda: {"sequential": {"cpu": swept}})
    cell = rj.gru(H)
    params = cell.init(jax.random.key(0), F)
    xs = normal((T, B, F), 10)

    def chunk_counts(fn):
        found = []

        def visit(jaxpr):
            for eqn in jaxpr.eqns:
                if eqn.primitive.name == "scan" and eqn.params["length"] in (1, T // 2):
                    found.append(eqn.params["length"])
                for sub in scan_helpers.inner_jaxprs(eqn):
                    visit(sub)

        visit(jax.make_jaxpr(fn)(xs).jaxpr)
        return set(found)

    def forward(x):
        return rj.scan(cell, params, x, backend="sequential")[1]

    assert chunk_counts(forward) == {1}  # one chunk of all T steps
    assert T // 2 in chunk_counts(jax.grad(lambda x: jnp.sum(forward(x) ** 2)))
