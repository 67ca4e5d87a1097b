"""PyTorch interop: parity with nn.RNN / LSTM / GRU (outputs, final states, gradients, packed
batches), round trips, and what to_torch refuses."""

from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scan_helpers

torch = pytest.importorskip("torch")
rjt = pytest.importorskip("rnn_jax.interop.torch")

import rnn_jax as rj  # noqa: E402

nn = torch.nn
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
T, B, F, H, P = 5, 3, 3, 4, 2
LENGTHS = [5, 2, 4]  # unsorted, one full

KINDS = {
    "rnn_tanh": lambda **kw: nn.RNN(F, H, **kw),
    "rnn_relu": lambda **kw: nn.RNN(F, H, nonlinearity="relu", **kw),
    "lstm": lambda **kw: nn.LSTM(F, H, **kw),
    "lstm_proj": lambda **kw: nn.LSTM(F, H, proj_size=P, **kw),
    "gru": lambda **kw: nn.GRU(F, H, **kw),
}
SHAPES = {
    "one_layer": {},
    "two_layers_bidirectional_batch_first": {
        "num_layers": 2,
        "bidirectional": True,
        "batch_first": True,
        "dropout": 0.25,
    },
}
CASES = [(kind, shape) for kind in KINDS for shape in SHAPES]


def make_module(kind, shape, seed=0):
    torch.manual_seed(seed)
    module = KINDS[kind](**SHAPES[shape])
    with torch.no_grad():  # biases away from PyTorch's small uniform init, so each one shows
        for name, parameter in module.named_parameters():
            if name.startswith("bias"):
                parameter.uniform_(-0.5, 0.5)
    return module.eval()  # torch's inter-layer dropout off, as ours without a key


def numpy(value):
    return value.detach().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def assert_close(got, want, tol=1e-5):
    np.testing.assert_allclose(numpy(got), numpy(want), rtol=tol, atol=tol)


def as_tuple(h_n):
    return h_n if isinstance(h_n, tuple) else (h_n,)


def torch_run(module, x, lengths, h0=None):
    """Time-major outputs and ``(h_n[, c_n])`` of ``module`` on ``x [T, B, F]``, padded by
    ``lengths`` through pack_padded_sequence when given."""
    bf = module.batch_first
    inputs = x.transpose(0, 1) if bf else x
    if lengths is not None:
        inputs = nn.utils.rnn.pack_padded_sequence(
            inputs, torch.tensor(lengths), batch_first=bf, enforce_sorted=False
        )
    out, h_n = module(inputs, h0)
    if lengths is not None:
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=bf, total_length=x.shape[0])
    return (out.transpose(0, 1) if bf else out), as_tuple(h_n)


def weights_for(kind, shape, seed=1):
    """Fixed random weights of the outputs and final states, so the losses see every entry."""
    module = make_module(kind, shape)
    out, h_n = torch_run(module, torch.zeros(T, B, F), None)
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(tuple(t.shape)).astype(np.float32) for t in (out, *h_n)]


def torch_loss(module, x, lengths, weights):
    out, h_n = torch_run(module, x, lengths)
    return sum((t * torch.from_numpy(w)).sum() for t, w in zip((out, *h_n), weights, strict=True))


def jax_loss(layer, params, xs, length, weights, batch_major):
    if batch_major:  # a batch-first module's data: vmap over sequences instead of transposing
        state, ys = jax.vmap(lambda x, n: layer.apply(params, x, length=n))(
            xs.swapaxes(0, 1), length
        )
        ys = ys.swapaxes(0, 1)
    else:
        state, ys = layer.apply(params, xs, length=length)
    h_n = rjt.torch_final_state(state)
    return sum(jnp.sum(t * w) for t, w in zip((ys, *as_tuple(h_n)), weights, strict=True)), (
        ys,
        h_n,
    )


def skip_unless_runs(backend, kind):
    """Skips a case ``backend`` refuses: oneDNN's LSTM has no projection here, and the backend
    is absent where its kernels were not built."""
    if backend == "auto":
        return
    cell = rjt.from_torch(make_module(kind, "one_layer"))[0].spec.cell
    params = jax.eval_shape(lambda key: cell.init(key, F), jax.random.key(0))
    scan_helpers.skip_unless_supported(
        backend, cell, params, jax.ShapeDtypeStruct((T, B, F), jnp.float32)
    )


@pytest.mark.parametrize("backend", ["auto", "onednn"])
@pytest.mark.parametrize("kind, shape", CASES)
def test_outputs_final_states_and_gradients_match_torch(kind, shape, backend):
    """Outputs, ``h_n``/``c_n``, and the gradients of a loss over all of them with respect to
    the inputs and every weight, on a packed batch (one sequence full) and, for one layer, an
    unpadded one too; by the default backend and by oneDNN's (what PyTorch runs on a CPU)."""
    skip_unless_runs(backend, kind)
    module = make_module(kind, shape)
    layer, params = rjt.from_torch(module, backend=backend)
    weights = weights_for(kind, shape)
    x = np.random.default_rng(0).standard_normal((T, B, F)).astype(np.float32)
    variants = [LENGTHS, None] if shape == "one_layer" else [LENGTHS]

    xt = torch.tensor(x, requires_grad=True)
    loss = sum(torch_loss(module, xt, lengths, weights) for lengths in variants)
    loss.backward()
    wanted = [torch_run(module, xt, lengths) for lengths in variants]

    def total(params, xs):
        values, outputs = [], []
        for lengths in variants:
            length = None if lengths is None else jnp.asarray(lengths)
            batch_major = module.batch_first and lengths is not None
            value, aux = jax_loss(layer, params, xs, length, weights, batch_major)
            values.append(value)
            outputs.append(aux)
        return sum(values), outputs

    (value, outputs), (d_params, d_xs) = jax.jit(
        jax.value_and_grad(total, argnums=(0, 1), has_aux=True)
    )(params, jnp.asarray(x))

    for (ys, h_n), (want_ys, want_h_n) in zip(outputs, wanted, strict=True):
        assert_close(ys, want_ys)
        for ours, theirs in zip(as_tuple(h_n), want_h_n, strict=True):
            assert_close(ours, theirs)
    assert_close(value, loss, 1e-4)

    assert_close(d_xs, xt.grad)
    grads = {name: p.grad for name, p in module.named_parameters()}
    if kind != "gru":  # one summed bias here: its gradient is either of torch's (they are equal)
        for name in [n for n in grads if n.startswith("bias_hh")]:
            assert_close(grads[name], grads[name.replace("bias_hh", "bias_ih")], 1e-6)
            grads[name] = torch.zeros_like(grads[name])
    want_d_params = rjt.params_from_torch(module, grads)
    assert jax.tree.structure(d_params) == jax.tree.structure(want_d_params)
    jax.tree.map(lambda g, w: assert_close(g, w, 2e-5), d_params, want_d_params)


@pytest.mark.parametrize("kind", ["lstm_proj", "gru"])
def test_initial_states_from_torch(kind):
    module = make_module(kind, "two_layers_bidirectional_batch_first")
    layer, params = rjt.from_torch(module)
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.standard_normal((T, B, F)).astype(np.float32))
    h0 = torch.from_numpy(rng.standard_normal((4, B, P if kind == "lstm_proj" else H)))
    hx = (h0.float(), torch.from_numpy(rng.standard_normal((4, B, H))).float())
    hx = hx if kind == "lstm_proj" else hx[0]
    want, want_h = torch_run(module, x, LENGTHS, hx)
    state, ys = jax.jit(layer.apply)(
        params,
        jnp.asarray(x.numpy()),
        length=jnp.asarray(LENGTHS),
        initial_state=rjt.initial_state_from_torch(layer, hx),
    )
    assert_close(ys, want)
    for ours, theirs in zip(as_tuple(rjt.torch_final_state(state)), want_h, strict=True):
        assert_close(ours, theirs)
    # the two layouts are inverse to each other
    again = rjt.initial_state_from_torch(layer, rjt.torch_final_state(state))
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), again, state)
    with pytest.raises(ValueError, match=r"hx must hold one state per layer and direction; got 3"):
        rjt.initial_state_from_torch(layer, jnp.zeros((3, B, H)))
    if kind == "lstm_proj":  # PyTorch refuses a c_0 of another count; so do we
        with pytest.raises(ValueError, match=r"c_0 must hold one state .* \(4\); got 2"):
            rjt.initial_state_from_torch(layer, (hx[0], hx[1][:2]))


def test_from_torch_builds_stacks_of_bidirectional_layers():
    module = make_module("lstm_proj", "two_layers_bidirectional_batch_first")
    layer, params = rjt.from_torch(module)
    assert isinstance(layer.spec, rj.layers.StackSpec) and layer.spec.dropout == 0.25
    parts = layer.spec.layers
    assert all(isinstance(p.spec, rj.layers.BidirectionalSpec) for p in parts)
    assert parts[0].spec.merge == "concat"
    cell = parts[1].spec.forward.spec.cell
    assert cell.name == "lstm" and cell.config["proj_size"] == P
    assert params[1].forward.kernel.shape == (2 * P, 4 * H)
    np.testing.assert_array_equal(params[0].backward.kernel, module.weight_ih_l0_reverse.T.detach())
    np.testing.assert_array_equal(params[1].forward.projection, module.weight_hr_l1.T.detach())
    np.testing.assert_allclose(
        params[0].forward.bias, (module.bias_ih_l0 + module.bias_hh_l0).detach(), rtol=1e-6
    )
    single, single_params = rjt.from_torch(nn.GRU(F, H))
    assert isinstance(single.spec, rj.layers.RNNSpec) and isinstance(single_params, rj.GRUParams)
    # the stack's dropout, like torch's in eval mode, is off without a key
    apply = jax.jit(layer.apply)
    _, ys = apply(params, jnp.ones((T, B, F)))
    _, noisy = apply(params, jnp.ones((T, B, F)), key=jax.random.key(0))
    assert (np.asarray(ys) != np.asarray(noisy)).any()


def test_a_module_without_biases():
    torch.manual_seed(0)
    module = nn.GRU(F, H, bias=False)
    layer, params = rjt.from_torch(module)
    assert not np.asarray(params.bias).any() and not np.asarray(params.recurrent_bias).any()
    x = torch.randn(T, B, F)
    _, ys = jax.jit(layer.apply)(params, jnp.asarray(x.numpy()))
    assert_close(ys, module(x)[0])


@pytest.mark.parametrize("kind, shape", CASES)
def test_to_torch_round_trip(kind, shape):
    module = make_module(kind, shape)
    layer, params = rjt.from_torch(module)
    back = rjt.to_torch(layer, params, batch_first=module.batch_first)
    assert type(back) is type(module) and not back.training
    for attribute in ("mode", "input_size", "hidden_size", "num_layers", "bidirectional"):
        assert getattr(back, attribute) == getattr(module, attribute), attribute
    for attribute in ("proj_size", "batch_first", "dropout"):
        assert getattr(back, attribute) == getattr(module, attribute), attribute
    theirs, ours = dict(module.named_parameters()), dict(back.named_parameters())
    assert theirs.keys() == ours.keys()
    for name, value in theirs.items():
        if kind != "gru" and name.startswith("bias_ih"):
            other = theirs[name.replace("bias_ih", "bias_hh")]
            assert_close(ours[name], value + other, 1e-6)  # the summed bias, in bias_ih
        elif kind != "gru" and name.startswith("bias_hh"):
            assert not ours[name].detach().any()
        else:
            np.testing.assert_array_equal(numpy(ours[name]), numpy(value))
    x = torch.randn(T, B, F, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, want_h = torch_run(module, x, LENGTHS)
        got, got_h = torch_run(back, x, LENGTHS)
    assert_close(got, want)
    for g, w in zip(got_h, want_h, strict=True):
        assert_close(g, w)


@pytest.mark.parametrize(
    "layer",
    [
        rj.rnn(rj.lstm(H, proj_size=P)),
        rj.bidirectional(rj.simple(H, activation="relu")),
        rj.stack([rj.bidirectional(rj.gru(H)), rj.bidirectional(rj.gru(H))], dropout=0.1),
        rj.stack([rj.lstm(H), rj.lstm(H), rj.lstm(H)]),
        rj.bidirectional(rj.rnn(rj.gru(H)), rj.reversed_layer(rj.rnn(rj.gru(H)))),
    ],
    ids=["lstm_proj", "bidirectional_relu", "stack_bidirectional_gru", "stack_lstm", "reversed"],
)
def test_to_torch_of_rnn_jax_layers_computes_the_same(layer):
    shapes = jax.eval_shape(lambda key: layer.init(key, F), jax.random.key(0))
    rng = np.random.default_rng(0)
    params = jax.tree.map(
        lambda s: jnp.asarray(0.5 * rng.standard_normal(s.shape), s.dtype), shapes
    )
    module = rjt.to_torch(layer, params)
    assert not module.training
    x = rng.standard_normal((T, B, F)).astype(np.float32)
    state, ys = jax.jit(layer.apply)(params, jnp.asarray(x), length=jnp.asarray(LENGTHS))
    with torch.no_grad():
        want, want_h = torch_run(module, torch.from_numpy(x), LENGTHS)
    assert_close(ys, want)
    for ours, theirs in zip(as_tuple(rjt.torch_final_state(state)), want_h, strict=True):
        assert_close(ours, theirs)
    # and back: the same params (biases of LSTM/RNN already summed in bias_ih)
    _, again = rjt.from_torch(module)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), again, params)


@pytest.mark.parametrize(
    "layer, match",
    [
        (rj.rnn(rj.lstm(H, peephole=True)), r"the lstm cell \(.*peephole=True"),
        (rj.rnn(rj.lstm(H, layer_norm=True)), r"the lstm cell \(.*layer_norm=True"),
        (rj.rnn(rj.gru(H, reset_after=False)), r"the gru cell \(.*reset_after=False"),
        (rj.rnn(rj.mgu(H)), r"the mgu cell"),
        (rj.rnn(rj.indrnn(H)), r"the indrnn cell"),
        (rj.rnn(rj.simple(H, activation="gelu")), r"the simple cell \(.*activation='gelu'"),
        (rj.stack([rj.gru(H), rj.gru(H)], residual=True), r"a residual stack"),
        (rj.bidirectional(rj.gru(H), merge="sum"), r"merge='sum'"),
        (rj.rnn(rj.gru(H), zoneout=0.1), r"zoneout=0.1"),
        (rj.rnn(rj.gru(H), recurrent_dropout=0.2), r"recurrent_dropout=0.2"),
        (rj.rnn(rj.gru(H), reverse=True), r"an rnn layer with reverse=True outside bidirectional"),
        (rj.bidirectional(rj.rnn(rj.gru(H)), rj.rnn(rj.gru(H))), r"backward direction runs fo"),
        (rj.stack([rj.gru(H), rj.lstm(H)]), r"layers that differ in cell, size or direction"),
        (rj.stack([rj.gru(H), rj.gru(H + 1)]), r"layers that differ in cell, size or direction"),
        (rj.stack([rj.bidirectional(rj.gru(H)), rj.gru(H)]), r"layers that differ"),
        (rj.stack([rj.stack([rj.gru(H)])]), r"a layer of kind StackSpec"),
        (rj.stack([rj.gru(H), rj.gru(H)], skip_connections=True), r"skip connections"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_to_torch_refuses_what_torch_cannot_express(layer, match):
    params = jax.eval_shape(lambda key: layer.init(key, F), jax.random.key(0))
    with pytest.raises(ValueError, match=r"^to_torch cannot express .*" + match):
        rjt.to_torch(layer, params)


def test_from_torch_refuses_other_modules():
    with pytest.raises(TypeError, match=r"must be a torch.nn.RNN, .* got Linear$"):
        rjt.from_torch(nn.Linear(2, 3))
    with pytest.raises(TypeError, match=r"got LSTMCell$"):
        rjt.from_torch(nn.LSTMCell(2, 3))
    with pytest.raises(TypeError, match=r"layer must be an rnn_jax Layer; got Cell$"):
        rjt.to_torch(rj.gru(H), None)
    with pytest.raises(ValueError, match=r"tensors must hold 'weight_ih_l0'"):
        rjt.params_from_torch(nn.GRU(F, H), {})
    # PyTorch 2.13 refuses input_size=0 itself; a module that has one anyway (built by a
    # version that allowed it) is refused as the cells' init refuses it.
    without_inputs = nn.LSTM(F, H)
    without_inputs.input_size = 0
    with pytest.raises(ValueError, match=r"^input_size must be a positive int; got 0$"):
        rjt.from_torch(without_inputs)


def test_importing_rnn_jax_does_not_import_torch():
    code = (
        "import sys, rnn_jax, rnn_jax.interop; "
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "import rnn_jax.interop.torch; assert 'torch' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
