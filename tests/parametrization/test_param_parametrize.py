"""parametrize(): registry, init scales, multipliers, errors, persistence."""
from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

import widelimit as wl
from widelimit.parametrization import SCHEMES, abc, get_registry, get_scheme
from _param_models import TinyTransformer, mlp


def _pair(width: int, scheme: str = "mup", seed: int = 0, **kw):
    torch.manual_seed(123)
    base = mlp(64)
    torch.manual_seed(seed)
    return wl.parametrize(mlp(width), base=base, scheme=scheme, **kw)


def test_roles_and_factors_mup() -> None:
    reg = get_registry(_pair(256))
    roles = reg.roles()
    assert roles == {"0.weight": "input", "0.bias": "vector", "2.weight": "hidden", "2.bias": "vector",
                     "4.weight": "hidden", "4.bias": "vector", "6.weight": "output", "6.bias": "fixed"}
    n = 4.0
    out = reg["6.weight"]
    assert out.multiplier == pytest.approx(1 / n)
    assert out.init_scale == pytest.approx(math.sqrt(n))          # var 1/fan_in -> O(1)
    assert (out.lr_sgd, out.lr_adam) == (pytest.approx(n), pytest.approx(1.0))
    hid = reg["2.weight"]
    assert (hid.init_scale, hid.multiplier, hid.lr_sgd, hid.lr_adam) == (1.0, 1.0, 1.0, pytest.approx(1 / n))
    inp = reg["0.weight"]
    assert (inp.init_scale, inp.multiplier, inp.lr_sgd, inp.lr_adam) == (1.0, 1.0, pytest.approx(n), 1.0)
    assert reg["2.bias"].init_scale == pytest.approx(math.sqrt(n))  # bias var O(1), like mup
    assert reg["2.bias"].lr_sgd == pytest.approx(n)


@pytest.mark.parametrize("scheme", ["sp", "ntk", "mup", "mf"])
def test_init_std_scaling_measured(scheme: str) -> None:
    """Empirical std of each weight at width n vs base 64 follows n^{-b} of the table
    (relative to PyTorch's default 1/sqrt(fan_in)), within 5%."""
    sch = get_scheme(scheme)
    torch.manual_seed(0)
    small = wl.parametrize(mlp(64), base=mlp(64), scheme=scheme)
    big = _pair(1024, scheme)
    n = 16.0
    for name, role in [("0.weight", "input"), ("2.weight", "hidden"), ("6.weight", "output")]:
        ratio = dict(big.named_parameters())[name].std() / dict(small.named_parameters())[name].std()
        if sch.rescale_init:
            expected = n ** -sch.row(role).b
        else:
            expected = n ** (-0.5 if role != "input" else 0.0)
        assert ratio.item() == pytest.approx(expected, rel=0.05), (scheme, name)


def test_sp_is_identity_and_base_unchanged() -> None:
    torch.manual_seed(3)
    ref = mlp(128)
    torch.manual_seed(3)
    m = wl.parametrize(mlp(128), base=mlp(64), scheme="sp")
    x = torch.randn(5, 16)
    torch.testing.assert_close(m(x), ref(x))
    torch.manual_seed(3)
    ref64 = mlp(64)
    torch.manual_seed(3)
    m64 = wl.parametrize(mlp(64), base=mlp(64), scheme="mup")  # base width: every scheme = default
    torch.testing.assert_close(m64(x), ref64(x))


def test_mup_output_multiplier_in_forward() -> None:
    m = _pair(256, "mup")
    x = torch.randn(3, 16)
    h = m[:6](x)
    expected = nn.functional.linear(h / 4.0, m[6].weight, m[6].bias)
    torch.testing.assert_close(m(x), expected)


def test_mf_equals_mup_dynamics_sgd() -> None:
    """abc symmetry (Yang & Hu 2021, Eq. 5): mean-field and muP train identically."""
    x, y = torch.randn(32, 16), torch.randint(0, 4, (32,))
    outs = []
    for scheme in ("mup", "mf"):
        torch.manual_seed(1)
        base = mlp(64)
        torch.manual_seed(0)
        raw = mlp(256)
        m = wl.parametrize(raw, base=base, scheme=scheme)
        opt = wl.optim.SGD(m.parameters(), lr=0.1)
        for _ in range(3):
            opt.zero_grad()
            nn.functional.cross_entropy(m(x), y).backward()
            opt.step()
        outs.append(m(x).detach())
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-4, atol=1e-5)


def test_custom_abc_and_scheme_errors() -> None:
    s = abc(a=(0, 0, 1), b=(0, 0.5, 0), c=(-1, 0, -1), c_adam=(0, 1, 0), name="mine")
    m = _pair(128, s)
    assert get_registry(m)["6.weight"].multiplier == pytest.approx(0.5)
    with pytest.raises(ValueError, match="unknown scheme"):
        _pair(128, "muP2")
    with pytest.raises(ValueError, match="3 exponents"):
        abc(a=(0, 1), b=0, c=0)
    with pytest.raises(ValueError, match="multiplier"):
        _pair(128, abc(a=(1, 0, 0), b=0, c=0))  # multiplier on biases (vector row)
    assert set(SCHEMES) == {"sp", "ntk", "mup", "mf"}


def test_errors_bad_base() -> None:
    with pytest.raises(ValueError, match="different parameters"):
        wl.parametrize(mlp(128), base=mlp(64, depth=2))
    with pytest.raises(ValueError, match="different parameters"):
        wl.parametrize(mlp(128), base=mlp(64, bias=False))
    with pytest.raises(ValueError, match="shrinks"):
        wl.parametrize(mlp(64), base=mlp(128))
    with pytest.raises(ValueError, match="not a width"):
        wl.parametrize(mlp(128, d_in=32), base=mlp(64), delta=mlp(96))
    with pytest.raises(TypeError, match="nn.Module"):
        wl.parametrize(mlp(128), base=[1, 2])
    with pytest.raises(TypeError):
        wl.parametrize("model")  # type: ignore[arg-type]


def test_errors_twice_and_unparametrized_optimizer() -> None:
    m = _pair(128)
    with pytest.raises(RuntimeError, match="already parametrized"):
        wl.parametrize(m, base=mlp(64))
    with pytest.raises(ValueError, match="never parametrized"):
        wl.optim.Adam(mlp(128).parameters(), lr=1e-3)
    with pytest.raises(ValueError, match="never parametrized"):
        wl.optim.SGD(list(m.parameters()) + [nn.Parameter(torch.zeros(3))], lr=1e-3)
    with pytest.raises(RuntimeError, match="not been parametrized"):
        wl.optim.Adam(mlp(128), lr=1e-3)


def test_delta_model_marks_equal_width_as_inf() -> None:
    torch.manual_seed(0)
    m = wl.parametrize(mlp(64), base=mlp(64), delta=mlp(96), scheme="mup")
    reg = get_registry(m)
    assert reg["2.weight"].role == "hidden" and reg["2.weight"].fan_in_mult == 1.0
    m2 = wl.parametrize(mlp(256), base=mlp(64), delta=mlp(96), scheme="mup")
    assert get_registry(m2)["6.weight"].multiplier == pytest.approx(0.25)


def test_state_dict_and_torch_save_round_trip() -> None:
    m = _pair(128)
    opt = wl.optim.Adam(m.parameters(), lr=1e-2)
    x = torch.randn(4, 16)
    m(x).sum().backward()
    opt.step()
    fresh = _pair(128, seed=9)
    fresh.load_state_dict(m.state_dict())
    torch.testing.assert_close(fresh(x), m(x))
    buf = io.BytesIO()
    torch.save(m, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    torch.testing.assert_close(loaded(x), m(x))
    assert get_registry(loaded).roles() == get_registry(m).roles()
    groups = wl.param_groups(loaded, lr=1e-2, optimizer="adam")  # re-indexes the loaded model
    assert sorted(g["lr"] for g in groups) == pytest.approx([1e-2 / 2, 1e-2])


def test_readout_zero_init_and_readout_layer() -> None:
    m = _pair(128, readout_zero_init=True)
    assert m[6].weight.abs().sum() == 0 and m[6].bias.abs().sum() == 0
    with pytest.raises(ValueError, match="delta"):  # no width dims: output layer unknown
        wl.parametrize(mlp(64), base=mlp(64), readout_zero_init=True)
    torch.manual_seed(0)
    m64 = wl.parametrize(mlp(64), base=mlp(64), delta=mlp(128), readout_zero_init=True)
    assert m64[6].weight.abs().sum() == 0
    r = wl.Readout(8, 3, output_mult=2.0, readout_zero_init=True)
    assert r.weight.abs().sum() == 0
    r2 = wl.Readout(8, 3, output_mult=2.0)
    x = torch.randn(2, 8)
    torch.testing.assert_close(r2(x), nn.functional.linear(2 * x, r2.weight, r2.bias))


def test_attention_and_depth_scaling() -> None:
    assert wl.attention_scale(64, "mup") == pytest.approx(1 / 64)
    assert wl.attention_scale(64, "mup", base_d_head=16) == pytest.approx(4 / 64)
    assert wl.attention_scale(64, "sp") == pytest.approx(1 / 8)
    assert wl.attention_scale(64, "ntk") == pytest.approx(1 / 8)
    with pytest.raises(ValueError):
        wl.attention_scale(0)
    assert wl.parametrization.depth_multiplier(16, 4) == pytest.approx(0.5)
    torch.manual_seed(0)
    base = TinyTransformer(16, n_layers=4)  # base differs in width only; depth ratio is given as numbers
    m = TinyTransformer(64, n_layers=4)
    wl.parametrize(m, base=base, depth=4, base_depth=1,
                   residual_branches=[f"blocks.{i}.{b}" for i in range(4) for b in ("proj", "ff")])
    assert get_registry(m).branch_multiplier == pytest.approx(0.5)
    x = torch.randint(0, 16, (2, 8))
    h = m.emb(x) + m.pos(torch.arange(8))
    blk = m.blocks[0]
    ff_out = blk.ff(blk.ln2(h))                      # hooked: already scaled
    raw = blk.ff[2](blk.ff[1](blk.ff[0](blk.ln2(h))))
    torch.testing.assert_close(ff_out, 0.5 * raw)
    with pytest.raises(ValueError, match="depth"):
        wl.parametrize(TinyTransformer(64), base=TinyTransformer(16), residual_branches=["blocks.0.ff"])
    with pytest.raises(ValueError, match="submodule"):
        wl.parametrize(TinyTransformer(64), base=TinyTransformer(16), depth=2, base_depth=2,
                       residual_branches=["nope"])


def test_bad_depth_args_leave_model_untouched() -> None:
    torch.manual_seed(0)
    m = TinyTransformer(64)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(ValueError, match="submodule"):
        wl.parametrize(m, base=TinyTransformer(16), depth=2, base_depth=1, residual_branches=["nope"])
    with pytest.raises(ValueError, match="base_depth"):
        wl.parametrize(m, base=TinyTransformer(16), depth=1, base_depth=2, residual_branches=["blocks.0.ff"])
    with pytest.raises(TypeError, match="list"):
        wl.parametrize(m, base=TinyTransformer(16), depth=2, base_depth=1, residual_branches="blocks.0.ff")
    assert not wl.parametrization.is_parametrized(m)
    for k, v in m.state_dict().items():
        torch.testing.assert_close(v, before[k])
