"""Per-parameter learning rates and weight decay (widelimit.optim / param_groups)."""
from __future__ import annotations

import pytest
import torch

import widelimit as wl
from _param_models import mlp


def _model(width: int = 256, scheme: str = "mup") -> torch.nn.Module:
    torch.manual_seed(0)
    return wl.parametrize(mlp(width), base=mlp(64), scheme=scheme)


def _lr_by_name(model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict[str, float]:
    ids = {id(p): n for n, p in model.named_parameters()}
    return {ids[id(p)]: g["lr"] for g in opt.param_groups for p in g["params"]}


def test_mup_adam_and_sgd_lrs() -> None:
    m = _model()
    lrs = _lr_by_name(m, wl.optim.Adam(m.parameters(), lr=1e-2))
    assert lrs["2.weight"] == pytest.approx(1e-2 / 4) and lrs["4.weight"] == pytest.approx(1e-2 / 4)
    for n in ("0.weight", "0.bias", "2.bias", "6.weight", "6.bias"):
        assert lrs[n] == pytest.approx(1e-2)
    lrs = _lr_by_name(m, wl.optim.SGD(m.parameters(), lr=0.1, momentum=0.9))
    assert lrs["2.weight"] == pytest.approx(0.1)
    for n in ("0.weight", "0.bias", "6.weight"):
        assert lrs[n] == pytest.approx(0.4)
    assert lrs["6.bias"] == pytest.approx(0.1)


def test_ntk_and_sp_lrs() -> None:
    m = _model(scheme="ntk")
    lrs = _lr_by_name(m, wl.optim.Adam(m.parameters(), lr=1.0))
    assert lrs["0.weight"] == pytest.approx(0.5) and lrs["2.weight"] == pytest.approx(0.25)
    assert lrs["6.weight"] == pytest.approx(0.5)
    assert set(_lr_by_name(m, wl.optim.SGD(m.parameters(), lr=1.0)).values()) == {1.0}
    s = _model(scheme="sp")
    assert set(_lr_by_name(s, wl.optim.Adam(s.parameters(), lr=3e-3)).values()) == {3e-3}


def test_adamw_weight_decay_scaling() -> None:
    m = _model()
    opt = wl.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.1)
    for g in opt.param_groups:  # decoupled decay lr * wd is width independent
        assert g["lr"] * g["weight_decay"] == pytest.approx(1e-3)
    assert isinstance(opt, torch.optim.AdamW)


def test_param_groups_any_optimizer_and_user_groups() -> None:
    m = _model()
    opt = torch.optim.RMSprop(wl.param_groups(m, lr=1e-3, optimizer=torch.optim.RMSprop), lr=1e-3)
    assert sorted({g["lr"] for g in opt.param_groups}) == pytest.approx([2.5e-4, 1e-3])
    groups = wl.param_groups(
        [{"params": [m[2].weight], "lr": 1.0}, {"params": [m[6].weight]}], lr=1e-2, optimizer="adam")
    assert [g["lr"] for g in groups] == pytest.approx([0.25, 1e-2])
    opt = wl.optim.Adam(m, lr=1e-2)  # the model itself is accepted
    assert sum(len(g["params"]) for g in opt.param_groups) == 8
    with pytest.raises(ValueError, match="SGD-like or Adam-like"):
        wl.param_groups(m, lr=1e-3, optimizer="lion")
    with pytest.raises(ValueError, match="empty"):
        wl.param_groups([], lr=1e-3)
    with pytest.raises(TypeError, match="iterable"):
        wl.param_groups(m[2].weight, lr=1e-3)


def test_training_step_runs_all_schemes() -> None:
    x, y = torch.randn(16, 16), torch.randint(0, 4, (16,))
    for scheme in ("sp", "ntk", "mup", "mf"):
        m = _model(128, scheme)
        opt = wl.optim.Adam(m.parameters(), lr=1e-3)
        loss0 = torch.nn.functional.cross_entropy(m(x), y)
        for _ in range(5):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(m(x), y).backward()
            opt.step()
        assert torch.nn.functional.cross_entropy(m(x), y) < loss0, scheme
