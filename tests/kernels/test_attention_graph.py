"""GlobalSelfAttention and Aggregate: Monte Carlo over finite networks, layouts, errors."""
import pytest
import torch
try:  # tests/ is a package on main, plain directories here
    from ._mc import assert_mc_close, mc_kernels
except ImportError:
    from _mc import assert_mc_close, mc_kernels

from widelimit import layers as L

DT = torch.float64


def _x(n, shape, seed):
    return torch.randn((n,) + shape, generator=torch.Generator().manual_seed(seed), dtype=DT)


def _attention_net(w, **kw):
    return L.serial(L.Conv(w, (1,), W_std=1.4, b_std=0.1),
                    L.GlobalSelfAttention(w, w, w, 2, W_key_std=1.2, W_query_std=1.1, b_std=0.1, **kw),
                    L.Relu(), L.GlobalAvgPool(), L.Dense(32, W_std=1.2))


@pytest.mark.parametrize("kw", [dict(), dict(pos_emb_type="SUM", W_pos_emb_std=0.8),
                                dict(pos_emb_type="CONCAT", pos_emb_decay_fn=lambda d: 1 / (1 + d),
                                     val_pos_emb=True, attention_mechanism="RELU")],
                         ids=["softmax", "sum_pe", "concat_decay_relu"])
def test_attention_nngp_monte_carlo(kw):
    w = 128
    x1, x2 = _x(3, (3, 5), 1), _x(2, (3, 5), 2)
    net = _attention_net(w, **kw)
    exact = net.kernel_fn(x1, x2, get="nngp").numpy()
    samples, _ = mc_kernels(net, x1, x2, n_nets=16)
    assert_mc_close(samples, exact, w, bias=6.0, what=str(kw))


def test_attention_ntk_monte_carlo():
    w = 64
    x1, x2 = _x(2, (2, 4), 3), _x(2, (2, 4), 4)
    net = _attention_net(w)
    exact = net.kernel_fn(x1, x2, get="ntk").numpy()
    _, samples = mc_kernels(net, x1, x2, n_nets=6, ntk=True)
    assert_mc_close(samples, exact, w, bias=6.0, what="attention ntk")


def _graph_net(w, pattern):
    return L.serial(L.Conv(w, (1,), W_std=1.4, b_std=0.1), L.Relu(), L.Aggregate(pattern),
                    L.Conv(w, (1,), W_std=1.2, b_std=0.1), L.Erf(), L.Aggregate(pattern),
                    L.GlobalSumPool(), L.Dense(32))


def test_aggregate_monte_carlo():
    g = torch.Generator().manual_seed(5)
    pattern = (torch.rand(6, 6, generator=g) < 0.4).to(DT) + torch.eye(6, dtype=DT)
    x1, x2 = _x(3, (2, 6), 6), _x(2, (2, 6), 7)
    net = _graph_net(128, pattern)
    exact = net.kernel_fn(x1, x2, get="nngp").numpy()
    samples, _ = mc_kernels(net, x1, x2, n_nets=16)
    assert_mc_close(samples, exact, 128, what="aggregate")
    _, ntk_samples = mc_kernels(_graph_net(64, pattern), x1[:2], x2, n_nets=5, ntk=True)
    assert_mc_close(ntk_samples, net.kernel_fn(x1[:2], x2, get="ntk").numpy(), 64, what="agg ntk")


def test_aggregate_edges_and_permutation_invariance():
    edges = [(0, 1), (1, 2), (2, 0), (2, 3), (3, 3)]
    a = L.Aggregate(edges=edges, n_nodes=4)
    dense = torch.zeros(4, 4, dtype=DT)
    for i, j in edges:
        dense[i, j] += 1
    assert torch.equal(a.pattern.to(DT), dense)
    # relabelling the nodes of the graph and of the inputs together leaves a GSP kernel unchanged
    perm = torch.tensor([2, 0, 3, 1])
    net = L.serial(L.Conv(8, (1,), W_std=1.3), L.Relu(), L.Aggregate(dense), L.Conv(8, (1,)),
                   L.Relu(), L.GlobalSumPool())
    net_p = L.serial(L.Conv(8, (1,), W_std=1.3), L.Relu(), L.Aggregate(dense[perm][:, perm]),
                     L.Conv(8, (1,)), L.Relu(), L.GlobalSumPool())
    x1, x2 = _x(3, (2, 4), 8), _x(2, (2, 4), 9)
    torch.testing.assert_close(net.kernel_fn(x1, x2, get="nngp"),
                               net_p.kernel_fn(x1[..., perm], x2[..., perm], get="nngp"), rtol=1e-12, atol=0)


def test_errors():
    with pytest.raises(ValueError, match="`pattern` must be"):
        L.serial(L.Conv(8, (1,)), L.Aggregate(torch.eye(5))).kernel_fn(_x(2, (2, 4), 0))
    with pytest.raises(ValueError, match="exactly one"):
        L.Aggregate()
    with pytest.raises(ValueError, match="`attention_mechanism`"):
        L.GlobalSelfAttention(8, 8, 8, 1, attention_mechanism="TANH")
    with pytest.raises(ValueError, match="`pos_emb_type`"):
        L.GlobalSelfAttention(8, 8, 8, 1, pos_emb_type="ROPE")
    with pytest.raises(ValueError, match="spatial"):
        L.serial(L.Dense(8), L.GlobalSelfAttention(8, 8, 8, 1)).kernel_fn(_x(2, (3,), 0))


def _sqrt_net(w, heads, **kw):
    return L.serial(L.Conv(w, (1,), W_std=1.4, b_std=0.1),
                    L.GlobalSelfAttention(w, w, w, heads, linear_scaling=False, W_key_std=1.2,
                                          W_query_std=0.9, W_value_std=1.1, b_std=0.1,
                                          attention_mechanism="IDENTITY", **kw),
                    L.Relu(), L.GlobalAvgPool(), L.Dense(32, W_std=1.2))


@pytest.mark.parametrize("kw", [dict(), dict(pos_emb_type="CONCAT", n_chan_pos_emb=64,
                                             pos_emb_decay_fn=lambda d: 1 / (1 + d))],
                         ids=["plain", "concat_pe"])
def test_sqrt_scaling_nngp_monte_carlo(kw):
    """1/sqrt(d) scaling with separate query and key weights: Gaussian logits."""
    w = 128
    x1, x2 = _x(3, (3, 4), 11), _x(2, (3, 4), 12)
    net = _sqrt_net(w, 16, **kw)
    exact = net.kernel_fn(x1, x2, get="nngp").numpy()
    samples, _ = mc_kernels(net, x1, x2, n_nets=48)
    assert_mc_close(samples, exact, w, bias=6.0, what="sqrt scaling")
    # the tied-weight, linear-scaling kernel is a different limit: the samples reject it
    linear = L.serial(*[layer.copy(linear_scaling=True) if isinstance(layer, L.GlobalSelfAttention)
                        else layer for layer in net.layers])
    with pytest.raises(AssertionError):
        assert_mc_close(samples, linear.kernel_fn(x1, x2, get="nngp").numpy(), w, bias=6.0)


def test_sqrt_scaling_ntk_monte_carlo():
    w = 64
    x1, x2 = _x(2, (2, 3), 13), _x(2, (2, 3), 14)
    net = _sqrt_net(w, 16, pos_emb_type="SUM", W_pos_emb_std=0.7)
    exact = net.kernel_fn(x1, x2, get="ntk").numpy()
    _, samples = mc_kernels(net, x1, x2, n_nets=8, ntk=True)
    assert_mc_close(samples, exact, w, bias=6.0, what="sqrt scaling ntk")


def test_sqrt_scaling_module_and_errors():
    layer = L.GlobalSelfAttention(8, 6, 5, 3, linear_scaling=False)
    m = layer.module((4, 7), dtype=DT, seed=0)
    assert m.query.shape == m.key.shape == (3, 4, 6)
    tied = L.GlobalSelfAttention(8, 6, 5, 3).module((4, 7), dtype=DT)
    assert tied.query is None
    x = _x(2, (4, 7), 15)
    assert m(x).shape == (2, 8, 7)
    for mech in ("SOFTMAX", "RELU", "ABS"):
        net = L.serial(L.Conv(8, (1,)), L.GlobalSelfAttention(8, 8, 8, 2, linear_scaling=False,
                                                              attention_mechanism=mech))
        with pytest.raises(NotImplementedError, match="only for attention_mechanism='IDENTITY'"):
            net.kernel_fn(x)
        assert torch.isfinite(net.module((4, 7), dtype=DT)(x)).all()   # the finite net works


def test_attention_first_uses_input_factors_and_they_never_go_stale():
    from widelimit.kernels.state import inputs_to_kernel
    x = torch.randn(7, 5, 6, dtype=torch.float64)
    k = inputs_to_kernel(x, None, diagonal_spatial=False)
    f = k.input_factors
    assert f[0] is k.nngp
    assert torch.allclose(torch.einsum("apc,bqc->abpq", f[1], f[2]), k.nngp)
    assert k.replace(cov1=k.cov1 * 1).input_factors is f            # nngp unchanged: kept
    assert k.replace(nngp=k.nngp * 2).input_factors is None          # a new nngp: dropped
    assert (2.0 * k).input_factors is None
    net = L.serial(L.GlobalSelfAttention(8, 8, 8, 2), L.Relu(), L.GlobalAvgPool(), L.Dense(1))
    assert net._factors_only()                                       # no input covariance formed
    assert not L.serial(L.Dense(4), net)._factors_only()
    pos = L.GlobalSelfAttention(8, 8, 8, 2, pos_emb_type="SUM")
    assert not L.serial(pos, L.GlobalAvgPool())._factors_only()
