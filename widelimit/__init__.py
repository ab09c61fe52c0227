"""widelimit: infinite-width neural network kernels for PyTorch.

NNGP and NTK kernels of composable architectures, empirical kernels of any
``torch.nn.Module``, closed-form training dynamics, and parametrizations (muP).
"""
__version__ = "0.1.0"

from widelimit import layers  # noqa: E402
from widelimit.kernels import Kernel  # noqa: E402
from widelimit import predict  # noqa: E402
from widelimit.estimators import NTKRegressor, NTKClassifier  # noqa: E402
from widelimit.hyperparameters import fit_hyperparameters  # noqa: E402
