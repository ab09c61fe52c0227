"""Coordinate checks (Tensor Programs V, Sec. D.1): muP flat, SP blows up, NTK freezes features."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import widelimit as wl
from _param_models import mlp

WIDTHS = [64, 128, 256, 512, 1024]


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(64, 16, generator=g), torch.randint(0, 4, (64,), generator=g)


@pytest.fixture(scope="module")
def reports(data) -> dict[str, wl.parametrization.CoordCheckReport]:
    # Adam, the same base lr 1e-2 and zero-initialised readout (TP V, D.2) for muP and SP.
    return {s: wl.coord_check(mlp, WIDTHS, data, steps=2, scheme=s, lr=1e-2, optimizer="adam",
                              readout_zero_init=True)
            for s in ("mup", "sp")}


def test_mup_slopes_flat(reports) -> None:
    rep = reports["mup"]
    assert rep.layer_types == {"0": "input", "2": "hidden", "4": "hidden", "6": "output"}
    for step in (1, 2):  # after one and after two steps
        for layer, s in rep.slopes(step=step).items():
            assert abs(s) < 0.1, (step, layer, s)


def test_sp_slopes_blow_up(reports) -> None:
    sl = reports["sp"].slopes(step=2)
    for layer in ("2", "4", "6"):  # hidden and output
        assert sl[layer] > 0.3, (layer, sl)
    assert abs(sl["0"]) < 0.1  # the input layer is fine in SP under Adam


def test_ntk_features_freeze(data) -> None:
    rep = wl.coord_check(mlp, WIDTHS, data, steps=2, scheme="ntk", lr=1.0, optimizer="sgd")
    d = rep.slopes(step=2, kind="delta")
    for layer in ("0", "2", "4"):  # feature (pre-activation) updates vanish like n^-1/2
        assert d[layer] < -0.3, (layer, d)
    assert abs(d["6"]) < 0.2  # while the function itself moves by Theta(1)
    mup = wl.coord_check(mlp, WIDTHS, data, steps=2, scheme="mup", lr=0.1, optimizer="sgd")
    for layer, s in mup.slopes(step=2, kind="delta").items():
        assert abs(s) < 0.1, (layer, s)


def test_report_plot_and_validation(reports, tmp_path: Path) -> None:
    rep = reports["mup"]
    assert rep.steps == 2 and rep.act["2"].shape == (5, 3)
    assert all(math.isnan(v) for v in rep.slopes(step=0, kind="delta").values())
    path = tmp_path / "cc.png"
    rep.plot(str(path))
    assert path.stat().st_size > 1000
    with pytest.raises(ValueError, match="kind"):
        rep.slopes(kind="bogus")
    x, y = torch.randn(64, 16), torch.randint(0, 4, (64,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)
    small = wl.coord_check(mlp, [64, 128], loader, steps=3, scheme="mup", optimizer="sgd", lr=0.1)
    assert small.act["6"].shape == (2, 4) and small.meta["optimizer"] == "sgd"
    with pytest.raises(ValueError, match="increasing"):
        wl.coord_check(mlp, [128, 64], (torch.zeros(2, 16), torch.zeros(2, dtype=torch.long)))


def test_transformer_coord_check() -> None:
    """muP (with 1/d attention) keeps a small transformer's coordinates width
    independent; SP with 1/sqrt(d) attention and the same base lr does not."""
    from _param_models import TinyTransformer

    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, 16, (16, 8), generator=g)
    data = (idx, torch.roll(idx, -1, 1))
    widths = [32, 64, 128, 256]
    mup = wl.coord_check(lambda w: TinyTransformer(w, scheme="mup", base_d_head=16), widths, data,
                         steps=2, scheme="mup", lr=1e-2, readout_zero_init=True)
    assert set(mup.layer_types.values()) == {"input", "hidden", "output", "LayerNorm"}
    for layer, s in mup.slopes(step=2).items():
        assert abs(s) < 0.15, (layer, s)  # 4 narrow widths: a looser band than the MLP's 0.1
    sp = wl.coord_check(lambda w: TinyTransformer(w, scheme="sp"), widths, data,
                        steps=2, scheme="sp", lr=1e-2, readout_zero_init=True)
    sl = sp.slopes(step=2)
    assert sl["head"] > 0.5 and sl["blocks.1.ff.2"] > 0.3, sl
