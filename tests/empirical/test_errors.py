"""Bad input gives a ValueError/TypeError that names the argument."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import widelimit as wl
from tests.empirical.helpers import make_model


def _mlp():
    model, shape = make_model("mlp")
    return model, torch.randn(3, *shape, dtype=torch.float64)


def test_no_trainable_parameters():
    model = nn.Sequential(nn.Linear(3, 2), nn.Tanh()).double()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.randn(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="no trainable parameters"):
        wl.empirical_ntk(model, x)
    with pytest.raises(ValueError, match="no trainable parameters"):
        wl.linearize(model)
    with pytest.raises(ValueError, match="no trainable parameters"):
        wl.empirical_ntk(nn.ReLU(), x)
    # the NNGP needs no parameters
    assert wl.empirical_nngp(nn.Tanh(), x).shape == (2, 2)


def test_unknown_parameter_name_lists_valid_ones():
    model, x = _mlp()
    with pytest.raises(ValueError, match=r"'fc\.weight'.*0\.weight"):
        wl.empirical_ntk(model, x, params=["fc.weight"])
    with pytest.raises(ValueError, match="empty"):
        wl.empirical_ntk(model, x, params=[])


def test_model_rejects_input_shape_with_context():
    model, x = _mlp()
    bad = torch.randn(3, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"rejected `x1` of shape \(3, 4\)") as info:
        wl.empirical_ntk(model, bad)
    assert isinstance(info.value.__cause__, RuntimeError)  # the model's own error is chained
    with pytest.raises(ValueError, match="rejected `x2`"):
        wl.empirical_ntk(model, x, bad)
    with pytest.raises(ValueError, match="rejected `x2`"):
        wl.empirical_nngp(model, x, bad)


@pytest.mark.parametrize("bs", [0, -2])
def test_block_size_below_one(bs):
    model, x = _mlp()
    with pytest.raises(ValueError, match="`block_size` must be >= 1"):
        wl.empirical_ntk(model, x, block_size=bs)
    with pytest.raises(TypeError, match="block_size"):
        wl.empirical_ntk(model, x, block_size=2.5)


def test_other_bad_arguments():
    model, x = _mlp()
    with pytest.raises(ValueError, match="`implementation` must be one of"):
        wl.empirical_ntk(model, x, implementation="fast")
    with pytest.raises(ValueError, match="`trace_axes` entry 1 is out of range"):
        wl.empirical_ntk(model, x, trace_axes=(1,))
    with pytest.raises(ValueError, match="both `trace_axes` and `diagonal_axes`"):
        wl.empirical_ntk(model, x, trace_axes=(-1,), diagonal_axes=(0,))
    with pytest.raises(ValueError, match="max_memory"):
        wl.empirical_ntk(model, x, max_memory="lots")
    with pytest.raises(TypeError, match="`x1` must be a torch.Tensor or numpy.ndarray"):
        wl.empirical_ntk(model, [[1.0] * 5])
    with pytest.raises(TypeError, match="`model` must be a torch.nn.Module"):
        wl.empirical_ntk(lambda t: t, x)
    with pytest.raises(TypeError, match="floating-point"):
        wl.empirical_ntk(model, np.ones((2, 5), dtype=np.int64))
    with pytest.raises(ValueError, match="`layer` must name a submodule"):
        wl.empirical_nngp(model, x, layer="nope")
    with pytest.raises(ValueError, match="`get` must be"):
        wl.empirical_kernel_fn(model)(x, get="cov")
    with pytest.raises(ValueError, match="`degree` must be an int >= 0"):
        wl.taylor_expand(model, -1)


def test_model_returning_non_tensor():
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(x), x

    with pytest.raises(TypeError, match="single tensor"):
        wl.empirical_ntk(Pair().double(), torch.randn(2, 3, dtype=torch.float64))
