"""widelimit: infinite-width neural network kernels for PyTorch.

NNGP and NTK kernels of composable architectures, empirical kernels of any
``torch.nn.Module``, closed-form training dynamics, and parametrizations (muP).
"""
__version__ = "0.1.0"

# Importing widelimit changes nothing in the host process; process-wide speed settings
# (glibc malloc, OPENBLAS_THREAD_TIMEOUT) are opt-in: wl.config.tune_runtime() or
# WIDELIMIT_TUNE_RUNTIME=1 (widelimit/config.py, docs/benchmarks.md#runtime-tuning).
from widelimit import config  # noqa: E402
config._from_environment()

from widelimit._validate import NonFiniteWarning  # noqa: E402
from widelimit import layers  # noqa: E402
from widelimit.kernels import Kernel  # noqa: E402
from widelimit.empirical import empirical_ntk, empirical_nngp, empirical_kernel_fn, linearize, taylor_expand, NtkImplementation  # noqa: E402
from widelimit.monte_carlo import monte_carlo_kernel_fn  # noqa: E402
from widelimit.parametrization import (  # noqa: E402
    Readout,
    abc,
    attention_scale,
    coord_check,
    coord_check_depth,
    get_registry,
    param_groups,
    parametrize,
)
from widelimit import optim  # noqa: E402
from widelimit import predict  # noqa: E402
from widelimit import limits  # noqa: E402
from widelimit.hyperparameters import fit_hyperparameters  # noqa: E402
from widelimit import analysis  # noqa: E402
from widelimit.scale.batch import batch  # noqa: E402
from widelimit.scale.memory import KernelMemoryError  # noqa: E402
from widelimit.scale.features import RandomFeatures, random_features  # noqa: E402
from widelimit import solvers  # noqa: E402
from widelimit.scale.store import KernelStore, StoreMismatchError, compute_kernel, open_kernel  # noqa: E402

__all__ = [
    "config", "layers", "Kernel", "monte_carlo_kernel_fn",
    "empirical_ntk", "empirical_nngp", "empirical_kernel_fn", "linearize", "taylor_expand",
    "NtkImplementation",
    "parametrize", "param_groups", "coord_check", "coord_check_depth", "get_registry", "abc", "attention_scale", "Readout",
    "optim", "predict", "limits", "NTKRegressor", "NTKClassifier", "fit_hyperparameters",
    "analysis", "NonFiniteWarning", "batch", "KernelMemoryError", "random_features", "RandomFeatures",
    "solvers", "KernelRidge",
    "compute_kernel", "open_kernel", "KernelStore", "StoreMismatchError",
]


def __getattr__(name: str):
    # the scikit-learn estimators import scikit-learn and SciPy (~1 s, ~100 MB): on first use
    if name in ("NTKRegressor", "NTKClassifier"):
        from widelimit import estimators
        return getattr(estimators, name)
    if name == "KernelRidge":
        from widelimit.solvers.ridge import KernelRidge
        return KernelRidge
    raise AttributeError(f"module 'widelimit' has no attribute {name!r}")
