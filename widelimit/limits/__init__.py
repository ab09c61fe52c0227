"""Infinite-width training limits: the feature-learning (muP) limit next to the lazy
(NTK / NNGP) limits, with finite networks that approach them.

* :class:`MuPLimitLinear1LP`: the exact muP limit of a one-hidden-layer linear network
  trained by SGD (Yang & Hu 2021, "Feature Learning in Infinite-Width Neural Networks").
* :class:`NTKLimit`, :class:`NNGPLimit` (:class:`KernelLimit`): kernel gradient descent
  with the analytic kernels of a ``widelimit.layers`` architecture.
* :func:`mup_linear_1lp`, :func:`train_sgd`, :func:`initial_gram`: the finite muP
  networks (``wl.parametrize(..., scheme="mup")``) trained on the same batches.
* :func:`scaled_resnet`, :func:`residual_block`, :func:`depth_limit_kernel`: residual
  networks with branches scaled by 1/sqrt(depth) and their infinite-depth NNGP / NTK (the
  layer-time ODE, docs/depth.md).
* :class:`PiNet`, :class:`PiLimit`: a deep MLP trained by projected muP SGD with rank-r
  projections and its exact infinite-width pi-limit on r-dimensional representations
  (Yang, Santacroce & Hu 2022; ReLU in closed form, other nonlinearities by quadrature).

See docs/limits.md for the equations.
"""
from widelimit.limits._common import DivergenceError, batch_schedule
from widelimit.limits.finite import initial_gram, mup_linear_1lp, train_sgd
from widelimit.limits.kernel import KernelLimit, NNGPLimit, NTKLimit
from widelimit.limits.depth import depth_limit_kernel, residual_block, scaled_resnet
from widelimit.limits.linear import LinearCoefficients, MuPLimitLinear1LP
from widelimit.limits.pilimit import PiLimit, pi_initial_matrices
from widelimit.limits.pinet import PiNet

__all__ = ["MuPLimitLinear1LP", "LinearCoefficients", "KernelLimit", "NTKLimit", "NNGPLimit",
           "DivergenceError", "batch_schedule", "mup_linear_1lp", "train_sgd", "initial_gram",
           "scaled_resnet", "residual_block", "depth_limit_kernel",
           "PiNet", "PiLimit", "pi_initial_matrices"]
