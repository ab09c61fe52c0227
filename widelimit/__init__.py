"""widelimit: infinite-width neural network kernels for PyTorch.

NNGP and NTK kernels of composable architectures, empirical kernels of any
``torch.nn.Module``, closed-form training dynamics, and parametrizations (muP).
"""
__version__ = "0.1.0"

from widelimit.parametrization import (  # noqa: E402
    Readout,
    abc,
    attention_scale,
    coord_check,
    get_registry,
    param_groups,
    parametrize,
)
from widelimit import optim  # noqa: E402
