"""Small float64 models and an independent reference NTK for the empirical-kernel tests."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

IMPLS = ["jacobian_contraction", "ntk_vector_products", "structured", "auto"]


def reference_full_ntk(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor,
                       params: list[str] | None = None, **kw) -> np.ndarray:
    """(N1, N2, *out, *out) from per-example Jacobians by plain autograd (no torch.func)."""
    names = params or [n for n, p in model.named_parameters() if p.requires_grad]
    named = dict(model.named_parameters())

    def jac(x: torch.Tensor) -> np.ndarray:
        rows = []
        for i in range(x.shape[0]):
            out = model(x[i:i + 1], **kw)[0]
            flat = out.reshape(-1)
            rows_i = []
            for a in range(flat.numel()):
                g = torch.autograd.grad(flat[a], [named[n] for n in names], allow_unused=True,
                                        retain_graph=True)
                rows_i.append(torch.cat([(gi if gi is not None else torch.zeros_like(named[n]))
                                         .reshape(-1) for gi, n in zip(g, names)]))
            rows.append(torch.stack(rows_i).reshape(*out.shape, -1))
        return torch.stack(rows).detach().numpy()

    was = model.training
    model.eval()
    try:
        j1, j2 = jac(x1), jac(x2)
    finally:
        model.train(was)
    nd = j1.ndim - 2
    k = np.tensordot(j1, j2, axes=([-1], [-1]))  # (N1, *out, N2, *out)
    return np.moveaxis(k, 1 + nd, 1)  # (N1, N2, *out, *out)


def reduce_reference(full: np.ndarray, trace: tuple[int, ...], diag: tuple[int, ...]) -> np.ndarray:
    """Apply neural-tangents' trace/diagonal semantics to (N1, N2, *out, *out) by loops."""
    nd = (full.ndim - 2) // 2
    out_shape = full.shape[2:2 + nd]
    trace = tuple(a % nd for a in trace)
    diag = tuple(a % nd for a in diag)
    size = int(np.prod([out_shape[a] for a in trace])) if trace else 1
    keep = [a for a in range(nd) if a not in trace]
    res_shape: list[int] = []
    for a in keep:
        res_shape += [out_shape[a]] if a in diag else [out_shape[a]] * 2
    n1, n2 = full.shape[:2]
    res = np.zeros((n1, n2, *res_shape))
    for idx1 in np.ndindex(*out_shape):
        for idx2 in np.ndindex(*out_shape):
            if any(idx1[a] != idx2[a] for a in trace + diag):
                continue
            r: list[int] = []
            for a in keep:
                r += [idx1[a]] if a in diag else [idx1[a], idx2[a]]
            res[(slice(None), slice(None), *r)] += full[(slice(None), slice(None), *idx1, *idx2)]
    return res / size


class MultiOut(nn.Module):
    """(N, 6) -> (N, 3, 4) with a LayerNorm (a parameter the structured path cannot factor)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 10)
        self.norm = nn.LayerNorm(10)
        self.head = nn.Linear(10, 12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.norm(self.fc(x)))).reshape(-1, 3, 4)


class Scale(nn.Module):
    """Multiply by a constant (e.g. an NTK-parametrization multiplier)."""

    def __init__(self, c: float) -> None:
        super().__init__()
        self.c = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.c


class Scaled(nn.Module):
    """A model whose forward takes extra keyword inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x: torch.Tensor, *, scale: float = 1.0, shift: torch.Tensor | None = None):
        h = torch.tanh(self.fc1(x) * scale)
        if shift is not None:
            h = h + shift
        return self.fc2(h)


class Shared(nn.Module):
    """The same Linear applied twice, plus a sequence model (Linear on (N, T, D))."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(5, 5)
        self.seq = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.sin(self.fc(torch.sin(self.fc(x))))  # (N, T, 5)
        return self.seq(h).mean(1)  # (N, 3)


class InputSkip(nn.Module):
    """A skip connection from the input past the first Linear (the structured path cannot
    replicate the batch at the first layer's output here and must replicate the inputs)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 6)
        self.fc2 = nn.Linear(6, 4)
        self.out = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.fc2(torch.relu(self.fc1(x))) + x))


def make_model(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    """A seeded float64 model and its per-example input shape."""
    m, shape = _make(name)
    return m.double(), shape


def _make(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    torch.manual_seed(0)
    if name == "mlp":
        m = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 7), nn.ReLU(), nn.Linear(7, 3))
        return m, (5,)
    if name == "conv_bn":
        m = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Conv2d(4, 3, 3, stride=2, padding="valid"), nn.Tanh(),
                          nn.Conv2d(3, 3, 2, padding="same", bias=False), nn.Flatten(),
                          nn.Linear(27, 3))
        bn = m[1]
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        with torch.no_grad():
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_()
        return m, (2, 8, 8)
    if name == "conv1d":
        m = nn.Sequential(nn.Conv1d(3, 4, 3, dilation=2, padding=2), nn.ReLU(),
                          nn.Conv1d(4, 2, 2, stride=2), nn.Flatten(), nn.Linear(10, 2))
        return m, (3, 10)
    if name == "multi_out":
        return MultiOut(), (6,)
    if name == "shared":
        return Shared(), (4, 5)
    if name == "skip":
        return InputSkip(), (4,)
    raise KeyError(name)


MODELS = ["mlp", "conv_bn", "conv1d", "multi_out", "shared", "skip"]


@pytest.fixture
def rng() -> torch.Generator:
    return torch.Generator().manual_seed(1)
