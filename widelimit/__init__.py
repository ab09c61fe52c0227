"""widelimit: infinite-width neural network kernels for PyTorch.

NNGP and NTK kernels of composable architectures, empirical kernels of any
``torch.nn.Module``, closed-form training dynamics, and parametrizations (muP).
"""
__version__ = "0.1.0"

import os as _os

# SciPy's OpenBLAS (BLAS syrk / trmm, widelimit._tensors and widelimit.predict) keeps its
# worker threads spinning for about 2^28 cycles after each call; on a few cores they then
# compete with torch's threads for the next operations (predictions on 2 cores: 190 ms
# with this, 250-320 ms without).  Let them sleep at once, unless the user chose a value.
# OpenBLAS reads it when SciPy's BLAS is first loaded (not at `import widelimit` itself).
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from widelimit import layers  # noqa: E402
from widelimit.kernels import Kernel  # noqa: E402
from widelimit.empirical import empirical_ntk, empirical_nngp, empirical_kernel_fn, linearize, taylor_expand, NtkImplementation  # noqa: E402
from widelimit.monte_carlo import monte_carlo_kernel_fn  # noqa: E402
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
from widelimit import predict  # noqa: E402
from widelimit import limits  # noqa: E402
from widelimit.hyperparameters import fit_hyperparameters  # noqa: E402
from widelimit import analysis  # noqa: E402

__all__ = [
    "layers", "Kernel", "monte_carlo_kernel_fn",
    "empirical_ntk", "empirical_nngp", "empirical_kernel_fn", "linearize", "taylor_expand",
    "NtkImplementation",
    "parametrize", "param_groups", "coord_check", "get_registry", "abc", "attention_scale", "Readout",
    "optim", "predict", "limits", "NTKRegressor", "NTKClassifier", "fit_hyperparameters",
    "analysis",
]


def __getattr__(name: str):
    # the scikit-learn estimators import scikit-learn and SciPy (~1 s, ~100 MB): on first use
    if name in ("NTKRegressor", "NTKClassifier"):
        from widelimit import estimators
        return getattr(estimators, name)
    raise AttributeError(f"module 'widelimit' has no attribute {name!r}")
