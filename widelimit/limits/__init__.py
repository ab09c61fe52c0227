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
* :func:`finite_width_nngp`, :func:`sample_output_gram`: the leading 1/width correction of
  a deep MLP's NNGP and its four-point function, and Monte Carlo over real finite MLPs
  (docs/finite_width.md); :func:`gaussian_expectation`, :func:`gaussian_pair_moments`,
  :func:`pair_jacobian_hessian`: the Gaussian quadratures behind it.
* :class:`PiLimit`, :class:`PiNet`: the pi-limit of deep MLPs trained by projected muP SGD
  (Yang, Santacroce & Hu, ICLR 2022) and the finite pi-nets that approach it like
  width^{-1/2} (tests: ReLU and tanh, depth <= 3, rank <= 8, 10 steps; on digits: ReLU,
  depth 2, rank 32, 100 minibatch steps, widths 64..8192, examples/pi_limit_digits.py).
  Experimental in one respect: the initialisation of the hidden layers and the missing
  biases / layer multipliers / weight decay differ from the paper (docs/limits.md), so its
  numbers are not the paper's.

See docs/limits.md for the equations.
"""
from widelimit.limits._common import DivergenceError, batch_schedule
from widelimit.limits.finite import initial_gram, mup_linear_1lp, train_sgd
from widelimit.limits.kernel import KernelLimit, NNGPLimit, NTKLimit
from widelimit.limits.depth import depth_limit_kernel, residual_block, scaled_resnet
from widelimit.limits.finite_width import finite_width_nngp, pair_jacobian_hessian
from widelimit.limits.finite_width_mc import sample_output_gram
from widelimit.limits.gaussian_quadrature import gaussian_expectation, gaussian_pair_moments
from widelimit.limits.linear import LinearCoefficients, MuPLimitLinear1LP
from widelimit.limits.pilimit import PiLimit
from widelimit.limits.pinet import PiNet

__all__ = ["MuPLimitLinear1LP", "LinearCoefficients", "KernelLimit", "NTKLimit", "NNGPLimit",
           "DivergenceError", "batch_schedule", "mup_linear_1lp", "train_sgd", "initial_gram",
           "scaled_resnet", "residual_block", "depth_limit_kernel",
           "finite_width_nngp", "sample_output_gram", "pair_jacobian_hessian",
           "gaussian_expectation", "gaussian_pair_moments", "PiLimit", "PiNet"]
