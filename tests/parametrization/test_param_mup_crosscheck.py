"""Cross-check against Microsoft's ``mup`` package (Yang et al. 2022): same
initialisation and per-parameter learning rates for an MLP and a transformer."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import widelimit as wl
from _param_models import TinyTransformer, mlp

mup_shape = pytest.importorskip("mup.shape")
mup_optim = pytest.importorskip("mup.optim")
mup_layer = pytest.importorskip("mup.layer")


def _mlp(width: int, readout: type) -> nn.Module:
    m = mlp(width)
    m[6] = readout(width, 4)
    return m


def _tf(width: int, readout: type) -> nn.Module:
    return TinyTransformer(width, scheme="mup", base_d_head=8, readout=readout)


def _build(make, width: int, base_width: int) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    ours = make(width, nn.Linear)
    torch.manual_seed(0)
    theirs = make(width, mup_layer.MuReadout)
    wl.parametrize(ours, base=make(base_width, nn.Linear), scheme="mup")
    mup_shape.set_base_shapes(theirs, make(base_width, mup_layer.MuReadout))
    return ours, theirs


def _lrs(model: nn.Module, opt: torch.optim.Optimizer) -> dict[str, tuple[float, float]]:
    ids = {id(p): n for n, p in model.named_parameters()}
    return {ids[id(p)]: (g["lr"], g["weight_decay"]) for g in opt.param_groups for p in g["params"]}


@pytest.mark.parametrize("make,width,base_width", [(_mlp, 512, 64), (_tf, 64, 16)])
def test_same_init_and_forward(make, width: int, base_width: int) -> None:
    ours, theirs = _build(make, width, base_width)
    p_theirs = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p, p_theirs[name], rtol=1e-6, atol=0, msg=name)
    x = torch.randn(3, 16) if make is _mlp else torch.randint(0, 16, (3, 8))
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make,width,base_width", [(_mlp, 512, 64), (_tf, 64, 16)])
@pytest.mark.parametrize("which", ["sgd", "adam", "adamw"])
def test_same_per_parameter_lr_and_wd(make, width: int, base_width: int, which: str) -> None:
    ours, theirs = _build(make, width, base_width)
    ctor = {"sgd": (wl.optim.SGD, mup_optim.MuSGD), "adam": (wl.optim.Adam, mup_optim.MuAdam),
            "adamw": (wl.optim.AdamW, mup_optim.MuAdamW)}[which]
    a = _lrs(ours, ctor[0](ours.parameters(), lr=0.01, weight_decay=0.1))
    b = _lrs(theirs, ctor[1](theirs.parameters(), lr=0.01, weight_decay=0.1))
    assert a.keys() == b.keys()
    for name in a:
        assert a[name] == pytest.approx(b[name], rel=1e-12), name
    assert len({v[0] for v in a.values()}) > 1  # the check is not vacuous
