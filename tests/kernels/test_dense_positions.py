"""Dense on sequences and images: per position on the channel axis (a 1x1 convolution).

Checked against the 1x1 Conv (kernel rule, both spatial layouts, masks; finite module with
the same weights), Monte Carlo over finite nets (images and (N, L, d) tokens through
attention), and the errors.  neural-tangents reference values: test_peer_reference.py
(dense_* and tokens_* cases).
"""
import numpy as np
import pytest
import torch

from widelimit import layers as L

try:
    from ._mc import assert_mc_close, check_mc_nngp, check_mc_ntk, images, mc_kernels
except ImportError:  # pragma: no cover - run from tests/kernels
    from _mc import assert_mc_close, check_mc_nngp, check_mc_ntk, images, mc_kernels


def _pair(kind, head, param="ntk", b=0.2, n=2):
    """The same net with Dense per position or with 1x1 convolutions (``n`` spatial axes)."""
    def aff(c, W):
        if kind == "dense":
            return L.Dense(c, W_std=W, b_std=b, parameterization=param)
        return L.Conv(c, (1,) * n, W_std=W, b_std=b, parameterization=param)
    return L.serial(aff(8, 1.3), L.Relu(), aff(8, 1.2), L.Erf(), head,
                    L.Dense(1, W_std=1.1, b_std=0.05, parameterization=param))


@pytest.mark.parametrize("param", ["ntk", "standard"])
@pytest.mark.parametrize("diagonal", [True, False])
def test_dense_equals_1x1_conv(param, diagonal):
    x1, x2 = images(3, (3, 4, 5), 1), images(2, (3, 4, 5), 2)
    head = L.Flatten()
    kd = _pair("dense", head, param).kernel_fn(x1, x2, diagonal_spatial=diagonal)
    kc = _pair("conv", head, param).kernel_fn(x1, x2, diagonal_spatial=diagonal)
    for name in ("nngp", "ntk"):
        torch.testing.assert_close(getattr(kd, name), getattr(kc, name), rtol=1e-13, atol=0)
    # the kernel per position of a bare Dense: W^2 * input covariance + b^2, in either layout
    k = L.Dense(4, W_std=1.5, b_std=0.5).kernel_fn(x1, x2, diagonal_spatial=diagonal)
    k0 = L.Identity().kernel_fn(x1, x2, diagonal_spatial=diagonal)
    torch.testing.assert_close(k.nngp, 2.25 * k0.nngp + 0.25, rtol=1e-14, atol=0)
    assert k.shape1 == (3, 4, 4, 5)


def test_dense_masked_equals_1x1_conv():
    x1, x2 = images(3, (2, 7), 1), images(2, (2, 7), 2)
    x1[0, :, 5:] = np.nan
    x2[1, :, 3:] = np.nan
    kw = dict(mask_constant=float("nan"))
    head = L.GlobalAvgPool()
    kd = _pair("dense", head, n=1).kernel_fn(x1, x2, **kw)
    kc = _pair("conv", head, n=1).kernel_fn(x1, x2, **kw)
    torch.testing.assert_close(kd.ntk, kc.ntk, rtol=1e-13, atol=0)
    assert not torch.equal(kd.ntk, _pair("dense", head, n=1).kernel_fn(
        torch.nan_to_num(x1), torch.nan_to_num(x2)).ntk)
    m1 = _pair("dense", head, n=1).module((2, 7), seed=0, dtype=torch.float64)
    c1 = _pair("conv", head, n=1).module((2, 7), seed=0, dtype=torch.float64)
    torch.testing.assert_close(m1(x1, mask_constant=float("nan")),
                               c1(x1, mask_constant=float("nan")), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("param", ["ntk", "standard"])
def test_module_is_per_position_linear(param):
    """The finite Dense on (N, C, *S) equals a 1x1 Conv with the same weights, and with
    channel_axis=-1 on channels-last inputs it writes PyTorch layout."""
    x = images(2, (3, 4, 5), 0)
    d = L.Dense(6, W_std=1.3, b_std=0.4, parameterization=param).module((3, 4, 5), dtype=torch.float64, seed=1)
    c = L.Conv(6, (1, 1), W_std=1.3, b_std=0.4, parameterization=param).module((3, 4, 5), dtype=torch.float64)
    with torch.no_grad():
        c.weight.copy_(d.weight.reshape(c.weight.shape))
        c.bias.copy_(d.bias)
    torch.testing.assert_close(d(x), c(x), rtol=1e-13, atol=1e-14)
    assert d(x).shape == (2, 6, 4, 5)
    last = L.Dense(6, W_std=1.3, b_std=0.4, parameterization=param, channel_axis=-1).module(
        (4, 5, 3), dtype=torch.float64, seed=1)
    torch.testing.assert_close(last(x.movedim(1, -1)), d(x), rtol=0, atol=0)
    # vectors: channel_axis is the one channel axis, whatever its sign
    v = images(3, (7,), 0)
    torch.testing.assert_close(L.Dense(2, channel_axis=-1).module((7,), seed=2, dtype=torch.float64)(v),
                               L.Dense(2).module((7,), seed=2, dtype=torch.float64)(v))


def _transformer(width, out=1):
    return L.serial(L.Dense(width, W_std=1.3, b_std=0.1, channel_axis=-1), L.Relu(),
                    L.GlobalSelfAttention(width, width, width, 2, W_key_std=1.2, W_value_std=1.1,
                                          W_query_std=0.9, W_out_std=1.0, b_std=0.1),
                    L.Relu(), L.GlobalAvgPool(), L.Dense(out, W_std=1.1, b_std=0.05))


def test_tokens_channels_last_equal_pytorch_layout():
    """(N, L, d) tokens with channel_axis=-1 give the kernel of the (N, d, L) inputs with
    channel_axis=1, bit for bit, also with entry masks in the inputs' own layout."""
    t1, t2 = images(3, (5, 4), 1), images(2, (5, 4), 2)
    net = _transformer(16)
    ref = L.serial(*([L.Dense(16, W_std=1.3, b_std=0.1)] + list(net.layers[1:])))
    k = net.kernel_fn(t1, t2, get=("nngp", "ntk"))
    r = ref.kernel_fn(t1.transpose(1, 2), t2.transpose(1, 2), get=("nngp", "ntk"))
    torch.testing.assert_close(k.ntk, r.ntk, rtol=0, atol=0)
    m1 = torch.zeros(t1.shape, dtype=torch.bool)
    m1[0, 3:] = True                                   # tokens 3, 4 of example 0
    km = net.kernel_fn(t1, get="ntk", mask=m1)
    rm = ref.kernel_fn(t1.transpose(1, 2), get="ntk", mask=m1.transpose(1, 2))
    torch.testing.assert_close(km, rm, rtol=0, atol=0)
    assert not torch.equal(km, ref.kernel_fn(t1.transpose(1, 2), get="ntk"))


def test_monte_carlo_dense_on_images():
    def build(width, out=1024):
        return L.serial(L.Dense(width, W_std=1.4, b_std=0.1), L.Relu(),
                        L.Conv(width, (2, 2), None, "SAME", W_std=1.3, b_std=0.1), L.Relu(),
                        L.Dense(width, W_std=1.2, b_std=0.2), L.Erf(), L.GlobalAvgPool(),
                        L.Dense(out, W_std=1.1, b_std=0.05))
    check_mc_nngp(build, (2, 3, 3), 256, "dense images nngp", n_nets=8)
    check_mc_ntk(lambda w: build(w, 4), (2, 3, 3), 128, "dense images ntk", n_nets=6)


def test_monte_carlo_transformer_tokens():
    """The standard transformer-kernel pattern on channels-last tokens, against finite nets."""
    x1, x2 = images(3, (4, 3), 1), images(2, (4, 3), 2)
    x2[0] = x1[0]
    width = 256
    exact = _transformer(width, 512).kernel_fn(x1, x2, get="nngp").numpy()
    samples, _ = mc_kernels(_transformer(width, 512), x1, x2, n_nets=8)
    assert_mc_close(samples, exact, width, what="transformer nngp")
    net = _transformer(96, 4)
    exact = net.kernel_fn(x1[:2], x2, get="ntk").numpy()
    _, samples = mc_kernels(net, x1[:2], x2, n_nets=6, ntk=True)
    assert_mc_close(samples, exact, 96, what="transformer ntk")


def test_errors():
    with pytest.raises(ValueError, match="channel_axis"):
        L.Dense(3, channel_axis=0)
    with pytest.raises(ValueError, match="channel_axis"):
        L.Dense(3, channel_axis=True)
    tok = images(2, (5, 4), 0)
    with pytest.raises(ValueError, match=r"only the first\s+layer may read another channel axis"):
        L.serial(L.Conv(8, (1,)), L.Dense(3, channel_axis=-1)).kernel_fn(tok)
    with pytest.raises(ValueError, match="not a channel axis"):
        L.Dense(3, channel_axis=5).kernel_fn(tok)
    assert "channel_axis=-1" in repr(L.Dense(3, channel_axis=-1))


def test_empirical_ntk_of_dense_on_images():
    """widelimit.empirical on the finite net (its structured derivatives are for vector
    inputs only; per-position Dense falls back to Jacobians) equals the Jacobian contraction."""
    import widelimit as wl
    x1, x2 = images(3, (2, 3, 3), 1), images(2, (2, 3, 3), 2)
    net = L.serial(L.Dense(8, W_std=1.3, b_std=0.1), L.Relu(), L.Dense(6, b_std=0.2),
                   L.GlobalAvgPool(), L.Dense(2))
    m = net.module((2, 3, 3), dtype=torch.float64, seed=4)
    assert [mod.structured_kind for mod in m if hasattr(mod, "structured_kind")] == [None, None, "linear"]
    got = wl.empirical_ntk(m, x1, x2)
    params = {k: v.detach() for k, v in m.named_parameters()}
    j1 = torch.func.jacrev(lambda p, x: torch.func.functional_call(m, p, (x,)))(params, x1)
    j2 = torch.func.jacrev(lambda p, x: torch.func.functional_call(m, p, (x,)))(params, x2)
    ref = sum(torch.einsum("ao...,bo...->ab", j1[k].flatten(2), j2[k].flatten(2)) for k in params) / 2
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
