"""LayerNorm and Dropout layers."""
from __future__ import annotations

from torch import Tensor, nn

from widelimit._validate import Choice, Real
from widelimit.kernels.rules.normalization import dropout_rule, layer_norm_rule
from widelimit.kernels.state import Kernel
from widelimit.layers.base import Layer


class LayerNormModule(nn.Module):
    mask_pointwise = True        # normalises over the channels of each position
    def __init__(self, axis: int, eps: float):
        super().__init__()
        self.axis, self.eps = axis, eps

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(self.axis, keepdim=True)
        var = x.var(self.axis, keepdim=True, unbiased=False)
        return (x - mean) / (var + self.eps).sqrt()


class LayerNorm(Layer):
    """Normalise over the channel axis (axis 1 in PyTorch layout; -1 for vectors).

    Infinite width: each covariance is divided by sqrt((eps + v1)(eps + v2)).
    """

    hyperparameters = {"eps": Real(min=0.0)}

    def __init__(self, axis: int = 1, eps: float = 1e-12):
        if axis not in (1, -1):
            raise ValueError(f"LayerNorm supports normalisation over the channel axis (axis=1, or -1 "
                             f"for vectors), got axis={axis}.")
        self.axis, self.eps = axis, eps

    def apply_kernel(self, k: Kernel) -> Kernel:
        if self.axis == -1 and k.n_spatial:
            raise ValueError("LayerNorm(axis=-1) on images normalises a spatial axis; use axis=1.")
        return layer_norm_rule(k, self.eps)

    def build(self) -> nn.Module:
        return LayerNormModule(1 if self.axis == -1 else self.axis, self.eps)


class Dropout(Layer):
    """Dropout with keep probability ``rate`` (neural-tangents' convention; the finite
    module is ``torch.nn.Dropout(p=1 - rate)``). ``mode="test"`` is the identity."""

    hyperparameters = {"rate": Real(min=0.0, open_min=True, max=1.0),
                       "mode": Choice("train", "test")}

    def __init__(self, rate: float, mode: str = "train"):
        self.rate, self.mode = rate, mode

    def apply_kernel(self, k: Kernel) -> Kernel:
        return k if self.mode == "test" else dropout_rule(k, self.rate)

    def build(self) -> nn.Module:
        if self.mode == "test":
            return nn.Identity()
        return nn.Dropout(p=1 - self.rate)
