"""Masking of variable-length inputs (``mask_constant`` / ``mask``): kernels against
truncated inputs, Monte Carlo over masked finite networks, blocking, bad input.

Agreement with neural-tangents' ``mask_constant`` is in test_peer_reference.py
(``MASKED_ARCHITECTURES``)."""
import numpy as np
import pytest
import torch
try:  # tests/ is a package on main, plain directories here
    from ._mc import assert_mc_close, mc_kernels
except ImportError:
    from _mc import assert_mc_close, mc_kernels

from widelimit import layers as L

DT = torch.float64
NAN = float("nan")


def _padded(lengths, channels=2, length=6, seed=0, constant=NAN):
    """(N, C, T) sequences; positions >= lengths[i] hold ``constant`` in every channel."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((len(lengths), channels, length), generator=g, dtype=DT)
    for i, n in enumerate(lengths):
        x[i, :, n:] = constant
    return x


def _gap_net(w=8):
    return L.serial(L.Conv(w, (3,), padding="SAME", W_std=1.4, b_std=0.1), L.Relu(),
                    L.Conv(w, (2,), padding="SAME", W_std=1.3, b_std=0.1), L.Relu(),
                    L.GlobalAvgPool(), L.Dense(32, W_std=1.2, b_std=0.05))


def _attention_net(w=8, heads=2, **kw):
    return L.serial(L.Conv(w, (1,), W_std=1.4, b_std=0.1),
                    L.GlobalSelfAttention(w, w, w, heads, W_key_std=1.2, W_query_std=1.1, b_std=0.1,
                                          **kw),
                    L.Relu(), L.GlobalAvgPool(), L.Dense(32, W_std=1.2))


def _phi_net(w, phi):
    return L.serial(L.Conv(w, (3,), padding="SAME", W_std=1.4, b_std=0.3), phi,
                    L.Conv(w, (2,), padding="SAME"), L.Relu(), L.GlobalAvgPool(), L.Dense(32))


NETS = {
    "gap": _gap_net,
    # phi(0) != 0: masked positions of the first conv's output are not zero after phi; the
    # second conv must still see zeros there, as the finite network does (neural-tangents
    # remasks after Cos; it does not after Polynomial, and returns NaN for this one)
    "cos": lambda w=8: _phi_net(w, L.Cos(a=1.0, b=1.0, c=0.4)),
    "poly": lambda w=8: _phi_net(w, L.Polynomial([0.5, 1.0, 0.3])),
    "softmax_pe": lambda w=8: _attention_net(w, pos_emb_type="SUM", W_pos_emb_std=0.8),
    "relu_concat_decay": lambda w=8: _attention_net(
        w, attention_mechanism="RELU", pos_emb_type="CONCAT", val_pos_emb=True,
        pos_emb_decay_fn=lambda d: 1 / (1 + d)),
    "sqrt_identity": lambda w=8: _attention_net(w, 16, linear_scaling=False,
                                                attention_mechanism="IDENTITY"),
}


@pytest.mark.parametrize("name", sorted(NETS))
def test_masked_equals_truncated(name):
    """With SAME padding, GAP, and attention, the padding of a length-n sequence is exactly
    a sequence of length n: masked == truncated inputs, for both kernels."""
    net = NETS[name]()
    x = _padded([4, 4, 6, 2])
    k = net.kernel_fn(x, None, get=("nngp", "ntk"), mask_constant=NAN)
    short = net.kernel_fn(x[:2, :, :4], None, get=("nngp", "ntk"))
    # 1e-8: entries of an input with itself sit where the relu dual's sqrt(v1 v2 - c^2)
    # cancels, which amplifies last-bit differences of the summation order
    for kind in ("nngp", "ntk"):
        torch.testing.assert_close(getattr(k, kind)[:2, :2], getattr(short, kind), rtol=1e-8, atol=0)
    full = net.kernel_fn(x[2:3], None, get="nngp")
    torch.testing.assert_close(k.nngp[2:3, 2:3], full, rtol=1e-8, atol=0)


def test_mask_argument_forms_agree():
    net = _attention_net()
    x1, x2 = _padded([6, 3, 5], seed=1), _padded([2, 6], seed=2)
    ref = net.kernel_fn(x1, x2, get="ntk", mask_constant=NAN)
    m1, m2 = torch.isnan(x1), torch.isnan(x2)
    z1, z2 = x1.nan_to_num(7.0), x2.nan_to_num(-7.0)
    for mask in ((m1, m2), (m1[:, :1], m2[:, :1]), (m1[:, 0], m2[:, 0].numpy())):
        torch.testing.assert_close(net.kernel_fn(z1, z2, get="ntk", mask=mask), ref, rtol=0, atol=0)
    # a constant other than NaN; numpy in, numpy out
    c = net.kernel_fn(x1.nan_to_num(-2.5).numpy(), x2.nan_to_num(-2.5).numpy(), get="ntk",
                      mask_constant=-2.5)
    assert isinstance(c, np.ndarray)
    np.testing.assert_allclose(c, ref.numpy(), rtol=0, atol=0)
    # x2 without a mask: unmasked; x2=None: one mask
    k12 = net.kernel_fn(z1, z1, get="nngp", mask=(m1, None))
    k11 = net.kernel_fn(z1, None, get="nngp", mask=m1)
    torch.testing.assert_close(k11, net.kernel_fn(z1, z1, get="nngp", mask=(m1, m1)), rtol=1e-12,
                               atol=0)
    assert not torch.allclose(k12, k11)


def test_masked_outputs_are_zero():
    net = L.serial(L.Conv(8, (3,), padding="SAME", W_std=1.4, b_std=0.3), L.Erf(),
                   L.Conv(8, (2,), strides=(2,), padding="SAME", b_std=0.2))
    x1, x2 = _padded([6, 3, 0]), _padded([5, 2], seed=3)
    k = net.kernel_fn(x1, x2, mask_constant=NAN, diagonal_spatial=False)
    m1, m2 = k.mask1, k.mask2                       # (N, T') after the strided conv
    assert m1.shape == (3, 3) and m2.shape == (2, 3)
    assert torch.equal(m1, torch.tensor([[0, 0, 0], [0, 0, 1], [1, 1, 1]], dtype=torch.bool))
    pair = m1[:, None, :, None] | m2[None, :, None, :]
    assert (k.nngp[pair] == 0).all() and (k.ntk[pair] == 0).all()
    assert (k.nngp[~pair] != 0).all()
    assert (k.cov1[m1[:, :, None] | m1[:, None, :]] == 0).all()
    diag = net.kernel_fn(x1, x2, mask_constant=NAN)       # the cheap diagonal-spatial layout
    assert diag.diagonal_spatial
    torch.testing.assert_close(diag.nngp, torch.diagonal(k.nngp, dim1=2, dim2=3), rtol=1e-12, atol=0)
    assert (diag.ntk[m1[:, None] | m2[None]] == 0).all()
    # an example masked everywhere has zero kernel rows after global pooling
    gap = L.serial(net, L.Relu(), L.GlobalAvgPool(), L.Dense(1))
    k = gap.kernel_fn(x1, x2, get="ntk", mask_constant=NAN)
    assert (k[2] == 0).all() and (k[:2] != 0).all()


@pytest.fixture
def block_grids(monkeypatch):
    """The (row, column) block counts of every blocked kernel computed in the test."""
    import widelimit.scale.blocking as blocking
    grids, assemble = [], blocking._assemble

    def spy(blocks, rows, cols, symmetric):
        grids.append((len(rows), len(cols)))
        return assemble(blocks, rows, cols, symmetric)

    monkeypatch.setattr(blocking, "_assemble", spy)
    return grids


@pytest.mark.parametrize("same", [True, False])
def test_blocked_equals_unblocked_with_masks(same, block_grids):
    net = L.serial(L.Conv(8, (3,), padding="SAME", W_std=1.5, b_std=0.1), L.Relu(),
                   L.GlobalSelfAttention(8, 8, 8, 2, b_std=0.1, pos_emb_type="SUM"), L.Relu(),
                   L.AvgPool((2,), (2,), "SAME"), L.Conv(8, (2,), padding="SAME"), L.Relu())
    x1 = _padded([12, 9, 5, 12, 1, 7, 3], length=12, seed=4)
    x2 = None if same else _padded([4, 12, 8, 2, 11], length=12, seed=5)
    ref = net.kernel_fn(x1, x2, mask_constant=NAN)
    got = net.kernel_fn(x1, x2, mask_constant=NAN, max_memory="0.4MB")
    torch.testing.assert_close(got.nngp, ref.nngp, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(got.ntk, ref.ntk, rtol=1e-12, atol=1e-15)
    assert torch.equal(got.mask1, ref.mask1)
    assert (got.mask2 is None) == same and (same or torch.equal(got.mask2, ref.mask2))
    assert block_grids and all(r * c > 1 for r, c in block_grids)
    top = L.serial(net, L.GlobalAvgPool(), L.Dense(1))
    torch.testing.assert_close(top.kernel_fn(x1, x2, "ntk", mask_constant=NAN, max_memory="0.4MB"),
                               top.kernel_fn(x1, x2, "ntk", mask_constant=NAN), rtol=1e-12, atol=0)


def test_blocking_splits_masks(block_grids):
    """A budget of about one pair per block: each block must see its own examples' masks."""
    net = _gap_net()
    x1 = _padded([16, 1, 9, 2, 5, 12], length=16, seed=6)
    x2 = _padded([3, 16, 7], length=16, seed=7)
    for b in (None, x2):
        ref = net.kernel_fn(x1, b, "nngp", mask_constant=NAN)
        got = net.kernel_fn(x1, b, "nngp", mask_constant=NAN, max_memory="100KB")
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=0)
    assert block_grids == [(6, 6), (6, 3)]


def test_finite_module_masks():
    net = _gap_net()
    m = net.module((2, 6), dtype=DT, seed=0)
    x = _padded([6, 4, 0], seed=7)
    out = m(x, mask_constant=NAN)
    assert torch.isfinite(out).all() and (out[2] == 0).all()
    torch.testing.assert_close(out[1:2], m(x[1:2, :, :4]), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(m(x.nan_to_num(3.0), mask=torch.isnan(x)[:, 0]), out, rtol=0, atol=0)
    # spatial output: zero at the masked positions of the output
    conv = L.serial(L.Conv(4, (3,), strides=(2,), padding="SAME", b_std=0.5)).module((2, 6), dtype=DT)
    y = conv(x, mask_constant=NAN)
    assert (y[1, :, 2] == 0).all() and (y[1, :, :2] != 0).all() and (y[2] == 0).all()


@pytest.mark.parametrize("name", ["gap", "cos", "poly", "softmax_pe", "sqrt_identity"])
def test_masked_nngp_monte_carlo(name):
    w, n_nets = 128, 64
    x1, x2 = _padded([5, 2, 3], length=5, seed=8), _padded([4, 5], length=5, seed=9)
    net = NETS[name](w)
    kw = {"mask_constant": NAN}
    exact = net.kernel_fn(x1, x2, get="nngp", **kw).numpy()
    samples, _ = mc_kernels(net, x1, x2, n_nets=n_nets, kw1=kw, kw2=kw)
    assert_mc_close(samples, exact, w, bias=6.0, what=name)
    if name in ("gap", "softmax_pe"):   # (others: too noisy to tell these apart)
        # the padding read as data (zeros, no mask) gives a kernel the samples reject
        wrong = net.kernel_fn(x1.nan_to_num(0.0), x2.nan_to_num(0.0), get="nngp").numpy()
        with pytest.raises(AssertionError):
            assert_mc_close(samples, wrong, w, bias=6.0)


@pytest.mark.parametrize("name", ["gap", "softmax_pe"])
def test_masked_ntk_monte_carlo(name):
    w = 64
    x1, x2 = _padded([4, 2], length=4, seed=10), _padded([3, 4], length=4, seed=11)
    net = NETS[name](w)
    kw = {"mask_constant": NAN}
    exact = net.kernel_fn(x1, x2, get="ntk", **kw).numpy()
    _, samples = mc_kernels(net, x1, x2, n_nets=6, ntk=True, kw1=kw, kw2=kw)
    assert_mc_close(samples, exact, w, bias=6.0, what=name + " ntk")


def test_bad_masks():
    net = _gap_net()
    x1, x2 = _padded([6, 3]), _padded([2, 6, 4])
    z1 = x1.nan_to_num(0.0)
    m1 = torch.isnan(x1)
    with pytest.raises(ValueError, match="either `mask` or `mask_constant`"):
        net.kernel_fn(z1, None, mask=m1, mask_constant=NAN)
    with pytest.raises(ValueError, match=r"`mask` for `x1` must have shape \(2, 2, 6\)"):
        net.kernel_fn(z1, None, mask=m1[:, :, :5])
    with pytest.raises(ValueError, match="`mask` for `x2`"):
        net.kernel_fn(z1, x2.nan_to_num(0.0), mask=(m1, m1))
    with pytest.raises(ValueError, match=r"pair `\(mask1, mask2\)`"):
        net.kernel_fn(z1, x2.nan_to_num(0.0), mask=m1)
    with pytest.raises(ValueError, match="one boolean mask for `x1`"):
        net.kernel_fn(z1, None, mask=(m1, m1))
    with pytest.raises(TypeError, match="must be boolean"):
        net.kernel_fn(z1, None, mask=m1.double())
    with pytest.raises(TypeError, match="`mask_constant` must be a number"):
        net.kernel_fn(z1, None, mask_constant="nan")
    with pytest.raises(ValueError, match="mask_constant"):        # NaN padding without a mask
        net.kernel_fn(x1, None)
    with pytest.raises(ValueError, match="`x2` contains NaN"):    # NaN that the constant misses
        net.kernel_fn(x1.nan_to_num(1.5), x2, mask_constant=1.5)
    from widelimit.layers.masking import forward_masked
    with pytest.raises(ValueError, match="Linear does not support masked inputs"):
        forward_masked(torch.nn.Linear(6, 2), z1, m1[:, 0])


def test_monte_carlo_kernel_fn_with_masks():
    """wl.monte_carlo_kernel_fn passes masks to the finite networks (empirical NTK under vmap)."""
    import widelimit as wl
    w = 64
    net = NETS["softmax_pe"](w)
    x1, x2 = _padded([5, 2, 3], length=5, seed=12), _padded([4, 5], length=5, seed=13)
    mc = wl.monte_carlo_kernel_fn(net, 6)
    got = mc(x1, x2, ("nngp", "ntk"), return_samples=True, mask_constant=NAN)
    exact = net.kernel_fn(x1, x2, ("nngp", "ntk"), mask_constant=NAN)
    for kind in ("nngp", "ntk"):
        assert_mc_close(getattr(got, kind).numpy(), getattr(exact, kind).numpy(), w, bias=6.0,
                        what=kind)
    masks = (torch.isnan(x1)[:, 0], torch.isnan(x2)[:, 0])
    same = mc(x1.nan_to_num(2.0), x2.nan_to_num(2.0), "ntk", mask=masks)
    torch.testing.assert_close(same, got.ntk.mean(0), rtol=1e-10, atol=0)


@pytest.mark.parametrize("layer", [L.ConvTranspose(4, (2,), (2,), "SAME"),
                                   L.ImageResize((-1, -1, 8), "linear")])
def test_layers_without_mask_support_refuse_masks(layer):
    net = L.serial(L.Conv(4, (2,), padding="SAME"), L.Relu(), layer, L.GlobalAvgPool())
    x = torch.randn(3, 2, 5, dtype=torch.float64)
    x[0, :, 3:] = float("nan")
    with pytest.raises(NotImplementedError, match="masked inputs"):
        net.kernel_fn(x, None, mask_constant=float("nan"))
