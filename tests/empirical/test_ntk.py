"""empirical_ntk: implementations agree with each other and with independent references."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import widelimit as wl
from tests.empirical.helpers import (IMPLS, MODELS, Scaled, make_model, reduce_reference,
                                      reference_full_ntk)

TOL = 1e-10


def _x(shape, n, seed):
    return torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)


def _close(a, b, tol=TOL):
    a = a.numpy() if isinstance(a, torch.Tensor) else a
    scale = max(1.0, float(np.abs(b).max()))
    np.testing.assert_allclose(a, b, rtol=0, atol=tol * scale)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("impl", IMPLS)
def test_matches_per_example_jacobian_reference(name, impl):
    model, shape = make_model(name)
    x1, x2 = _x(shape, 4, 1), _x(shape, 3, 2)
    full = reference_full_ntk(model, x1, x2)
    nd = (full.ndim - 2) // 2
    cases = [((-1,), ()), ((), ())]
    if nd == 2:
        cases += [((0,), ()), ((0, 1), ()), ((), (0,)), ((1,), (0,)), ((), (0, 1))]
    for trace, diag in cases:
        got = wl.empirical_ntk(model, x1, x2, trace_axes=trace, diagonal_axes=diag,
                               implementation=impl)
        want = reduce_reference(full, trace, diag)
        assert got.shape == want.shape, (trace, diag)
        _close(got, want)


def test_finite_differences():
    """J by central differences of the outputs; O(eps^2) truncation error."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x1, x2 = _x((3,), 3, 1), _x((3,), 2, 2)
    eps = 1e-5
    params = list(model.parameters())

    def jac(x):
        cols = []
        with torch.no_grad():
            for p in params:
                flat = p.view(-1)
                for k in range(flat.numel()):
                    old = flat[k].item()
                    flat[k] = old + eps
                    up = model(x)
                    flat[k] = old - eps
                    down = model(x)
                    flat[k] = old
                    cols.append((up - down) / (2 * eps))
        return torch.stack(cols, -1)  # (N, O, P)

    j1, j2 = jac(x1), jac(x2)
    want = torch.einsum("iap,jbp->ijab", j1, j2).numpy()
    for impl in IMPLS:
        got = wl.empirical_ntk(model, x1, x2, trace_axes=(), implementation=impl)
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("impl", IMPLS)
def test_traced_is_mean_of_untraced_diagonal(impl):
    model, shape = make_model("multi_out")
    x = _x(shape, 3, 4)
    full = wl.empirical_ntk(model, x, trace_axes=(), implementation=impl)  # (3,3,3,3,4,4)
    traced = wl.empirical_ntk(model, x, trace_axes=(-1,), implementation=impl)
    diag = wl.empirical_ntk(model, x, trace_axes=(), diagonal_axes=(-1,), implementation=impl)
    _close(traced, torch.diagonal(full, dim1=4, dim2=5).mean(-1).numpy())
    _close(diag, torch.diagonal(full, dim1=4, dim2=5).numpy())


@pytest.mark.parametrize("impl", ["jacobian_contraction", "ntk_vector_products", "structured"])
@pytest.mark.parametrize("name,block_size", [("mlp", 1), ("mlp", 3), ("conv_bn", 2)])
def test_blocked_equals_unblocked(impl, name, block_size):
    model, shape = make_model(name)
    x1, x2 = _x(shape, 5, 5), _x(shape, 4, 6)
    for trace in [(-1,), ()]:
        for a, b in [(x1, x2), (x1, None)]:
            ref = wl.empirical_ntk(model, a, b, trace_axes=trace, implementation=impl)
            got = wl.empirical_ntk(model, a, b, trace_axes=trace, implementation=impl,
                                   block_size=block_size)
            _close(got, ref.numpy())


def test_max_memory_blocks_and_matches():
    model, shape = make_model("mlp")
    x = _x(shape, 6, 7)
    ref = wl.empirical_ntk(model, x, trace_axes=())
    for budget in ["1KB", 2000, "1MiB"]:
        _close(wl.empirical_ntk(model, x, trace_axes=(), max_memory=budget), ref.numpy())


@pytest.mark.parametrize("impl", IMPLS)
def test_symmetric_case(impl):
    model, shape = make_model("conv1d")
    x = _x(shape, 4, 8)
    k_none = wl.empirical_ntk(model, x, implementation=impl, trace_axes=())
    k_copy = wl.empirical_ntk(model, x, x.clone(), implementation=impl, trace_axes=())
    _close(k_none, k_copy.numpy())
    _close(k_none, k_none.permute(1, 0, 3, 2).numpy())
    ev = torch.linalg.eigvalsh(k_none.permute(0, 2, 1, 3).reshape(8, 8))
    assert ev.min() > -1e-10 * ev.max()


@pytest.mark.parametrize("impl", IMPLS)
def test_params_subset(impl):
    model, shape = make_model("conv_bn")
    x1, x2 = _x(shape, 3, 9), _x(shape, 2, 10)
    names = [n for n, _ in model.named_parameters()]
    subset = ["0.weight", "1.bias", "7.weight"]
    rest = [n for n in names if n not in subset]
    full = reference_full_ntk(model, x1, x2, params=subset)
    got = wl.empirical_ntk(model, x1, x2, params=subset, implementation=impl, trace_axes=())
    _close(got, full)
    whole = wl.empirical_ntk(model, x1, x2, implementation=impl)
    parts = (wl.empirical_ntk(model, x1, x2, params=subset, implementation=impl)
             + wl.empirical_ntk(model, x1, x2, params=rest, implementation=impl))
    _close(parts, whole.numpy())


@pytest.mark.parametrize("impl", IMPLS)
def test_batchnorm_dropout_use_eval_mode_and_restore_flags(impl):
    torch.manual_seed(11)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Dropout(0.5), nn.ReLU(),
                          nn.Linear(6, 2)).double()
    model[1].running_mean.normal_()
    model[1].running_var.uniform_(0.5, 2.0)
    x = _x((4,), 5, 12)
    model.eval()
    want = reference_full_ntk(model, x, x).trace(axis1=2, axis2=3) / 2
    model.train()
    got = wl.empirical_ntk(model, x, implementation=impl)
    assert model.training and model[1].training and model[2].training
    _close(got, want)
    stats = model[1].running_mean.clone()
    wl.empirical_ntk(model, x, implementation=impl)
    assert torch.equal(stats, model[1].running_mean)  # running statistics untouched


@pytest.mark.parametrize("impl", IMPLS)
def test_forward_kwargs(impl):
    torch.manual_seed(12)
    model = Scaled().double()
    x1, x2 = _x((4,), 3, 13), _x((4,), 2, 14)
    shift = torch.randn(8, dtype=torch.float64)
    want = reference_full_ntk(model, x1, x2, scale=0.7, shift=shift)
    got = wl.empirical_ntk(model, x1, x2, implementation=impl, trace_axes=(), scale=0.7,
                           shift=shift)
    _close(got, want)
    plain = wl.empirical_ntk(model, x1, x2, implementation=impl, trace_axes=())
    assert not np.allclose(plain.numpy(), want)


def test_numpy_in_numpy_out_and_float32():
    model, shape = make_model("mlp")
    x = _x(shape, 3, 15).numpy()
    k = wl.empirical_ntk(model, x)
    assert isinstance(k, np.ndarray) and k.dtype == np.float64 and k.shape == (3, 3)
    m32 = make_model("mlp")[0].float()
    k32 = wl.empirical_ntk(m32, torch.from_numpy(x).float(), implementation="structured")
    assert k32.dtype == torch.float32
    np.testing.assert_allclose(k32.numpy(), k, rtol=1e-4)


def test_auto_prefers_structured_for_wide_mlp():
    from widelimit.empirical.ntk import _choose  # the FLOP estimate behind "auto"
    from widelimit.empirical._axes import OutAxes
    from widelimit.empirical._model import ModelFn
    from widelimit.empirical._structured import Structured
    model = nn.Sequential(nn.Linear(30, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                          nn.Linear(256, 4)).double()
    x = _x((30,), 20, 16)
    mf = ModelFn(model)
    axes = OutAxes.make((4,), (-1,), ())
    pick = _choose(mf, axes, x, 20, Structured(mf, axes, x))
    assert pick is wl.NtkImplementation.STRUCTURED


def test_enum_documents_costs():
    doc = wl.NtkImplementation.__doc__
    for word in ["Time", "memory", "jacobian_contraction", "ntk_vector_products", "structured"]:
        assert word in doc
    assert wl.NtkImplementation("structured") is wl.NtkImplementation.STRUCTURED


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("impl", IMPLS)
def test_cuda(impl):
    model, shape = make_model("conv_bn")
    x = _x(shape, 4, 17)
    ref = wl.empirical_ntk(model, x, implementation=impl, trace_axes=())
    got = wl.empirical_ntk(model.cuda(), x.cuda(), implementation=impl, trace_axes=(),
                           block_size=3)
    assert got.is_cuda
    _close(got.cpu(), ref.numpy(), tol=1e-8)


def test_structured_covers_linear_conv_bn_and_falls_back_elsewhere():
    from widelimit.empirical._axes import OutAxes
    from widelimit.empirical._model import ModelFn
    from widelimit.empirical._structured import Structured

    def plan(model, shape):
        x = _x(shape, 2, 18)
        mf = ModelFn(model)
        st = Structured(mf, OutAxes.make(mf.check(x, "x"), (-1,), ()), x)
        return [(l.name, l.kind) for l in st.layers], st.others

    layers, others = plan(*make_model("conv_bn"))
    assert layers == [("0", "conv"), ("1", "bn"), ("3", "conv"), ("5", "conv"), ("7", "linear")]
    assert others == []
    layers, others = plan(*make_model("multi_out"))
    assert others == ["norm.weight", "norm.bias"]  # LayerNorm: per-example Jacobians
    layers, others = plan(*make_model("shared"))
    assert layers == [("seq", "linear")] and others == ["fc.weight", "fc.bias"]  # reused module
    lin = wl.linearize(make_model("mlp")[0])  # weights swapped by a nested functional_call
    assert plan(lin, (5,))[0] == []


@pytest.mark.parametrize("materialize", [True, False])
def test_structured_weight_paths_agree(monkeypatch, materialize):
    """Both ways of handling a conv weight: formed Jacobian, or factored grams."""
    from widelimit.empirical import _structured
    monkeypatch.setattr(_structured.Structured, "_materialize", lambda self, l, n: materialize)
    model, shape = make_model("conv_bn")
    x1, x2 = _x(shape, 3, 19), _x(shape, 2, 20)
    for trace in [(-1,), ()]:
        want = wl.empirical_ntk(model, x1, x2, trace_axes=trace,
                                implementation="jacobian_contraction")
        got = wl.empirical_ntk(model, x1, x2, trace_axes=trace, implementation="structured")
        _close(got, want.numpy())


def test_structured_covers_widelimit_dense_modules():
    """widelimit's own Dense modules (multipliers in forward) take the structured path
    and agree with the Jacobian-contraction reference."""
    from widelimit import layers as L
    from widelimit.empirical._structured import _kind
    net = L.serial(L.Dense(16, W_std=1.5, b_std=0.3), L.Relu(),
                   L.Dense(16, W_std=1.2, b_std=0.1, parameterization="standard", s=(1, 2)), L.Erf(),
                   L.Dense(3, W_std=0.9, b_std=None))
    model = net.module(input_shape=(5,), dtype=torch.float64, seed=0)
    assert [_kind(m) for m in model if hasattr(m, "weight")] == ["linear"] * 3
    x1 = torch.randn(6, 5, dtype=torch.float64)
    x2 = torch.randn(4, 5, dtype=torch.float64)
    for trace in ((-1,), ()):
        ref = wl.empirical_ntk(model, x1, x2, trace_axes=trace, implementation="jacobian_contraction")
        got = wl.empirical_ntk(model, x1, x2, trace_axes=trace, implementation="structured")
        torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("trace", [(-1,), ()])
def test_mlp_fast_path_matches_generic_structured_pass(trace, monkeypatch):
    """Plain nn.Sequential MLPs get closed-form cotangents (_mlp.py); the generic
    probe-and-vjp pass must give the same kernel, and the fast path must be taken."""
    from widelimit.empirical import _mlp, _structured
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(6, 9), nn.GELU(), nn.Dropout(0.3), nn.Linear(9, 8), nn.Tanh(),
                          nn.Linear(8, 4, bias=False), nn.LeakyReLU(0.1), nn.Linear(4, 3)).double()
    x = torch.randn(7, 6, dtype=torch.float64)
    calls = []
    monkeypatch.setattr(_structured, "mlp_cotangents",
                        lambda *a: calls.append(1) or _mlp.mlp_cotangents(*a))
    fast = wl.empirical_ntk(model, x, trace_axes=trace, implementation="structured")
    assert calls, "the MLP fast path was not taken"
    monkeypatch.setattr(_structured, "mlp_chain", lambda *a: None)
    generic = wl.empirical_ntk(model, x, trace_axes=trace, implementation="structured")
    torch.testing.assert_close(fast, generic, rtol=1e-12, atol=1e-12)
    _close(fast, reduce_reference(reference_full_ntk(model, x, x), trace, ()))
