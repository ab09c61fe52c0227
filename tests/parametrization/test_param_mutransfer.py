"""muTransfer (Tensor Programs V, Fig. 1): on a digits MLP the best Adam learning
rate (log2 grid) transfers from width 64 to 2048 under muP but shifts under SP.

Kept under a minute on 2 CPU cores: one hidden layer (no width x width matrix),
60 Adam steps on minibatches of 32, loss on 512 held-in samples.  The full
sweep (2 hidden layers, widths 64..2048, plus a transformer) lives in
examples/mutransfer.py.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import widelimit as wl

sklearn_datasets = pytest.importorskip("sklearn.datasets")

GRID = [2.0 ** k for k in range(-12, 0)]
STEPS, BATCH = 60, 32


def _mlp(width: int) -> nn.Module:
    return nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10))


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x, y = sklearn_datasets.load_digits(return_X_y=True)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    g = torch.Generator().manual_seed(0)
    order = torch.randint(0, len(x), (STEPS, BATCH), generator=g)
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y), order


def _final_loss(scheme: str, width: int, lr: float, digits) -> float:
    x, y, order = digits
    torch.manual_seed(1)
    base = _mlp(64)
    torch.manual_seed(0)
    model = wl.parametrize(_mlp(width), base=base, scheme=scheme)
    opt = wl.optim.Adam(model.parameters(), lr=lr)
    for idx in order:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    with torch.no_grad():
        loss = nn.functional.cross_entropy(model(x[:512]), y[:512]).item()
    return loss if np.isfinite(loss) else float("inf")


def _best_log2_lr(scheme: str, width: int, digits) -> int:
    losses = [_final_loss(scheme, width, lr, digits) for lr in GRID]
    return int(np.log2(GRID[int(np.argmin(losses))]))


def test_mutransfer_digits(digits) -> None:
    base_best = _best_log2_lr("mup", 64, digits)  # at the base width muP == SP
    mup_best = _best_log2_lr("mup", 2048, digits)
    sp_best = _best_log2_lr("sp", 2048, digits)
    assert abs(mup_best - base_best) <= 1, (base_best, mup_best)
    assert abs(sp_best - base_best) >= 2, (base_best, sp_best)
    assert sp_best < base_best  # SP needs a smaller learning rate when wider
