"""Closed-form training dynamics and inference for infinitely wide networks.

Same names and semantics as ``neural_tangents.predict``:

* :func:`gradient_descent_mse` -- a given network's outputs under gradient flow on MSE;
* :func:`gradient_descent_mse_ensemble` -- mean/covariance of the infinite ensemble;
* :func:`gp_inference` -- NNGP / NTK / NTK-GP posteriors;
* :func:`gradient_descent`, :func:`momentum` -- any differentiable loss, by an ODE solver;
* :func:`max_learning_rate` -- the largest stable full-batch step on MSE;
* :func:`student_t_inference` -- scale mixtures of NNGPs (Student-t process).
"""
from widelimit.predict._common import Gaussian, SingularKernelWarning, StudentT
from widelimit.predict.gp import gp_inference, student_t_inference
from widelimit.predict.mse import gradient_descent_mse, gradient_descent_mse_ensemble, max_learning_rate
from widelimit.predict.ode import ODEState, gradient_descent, momentum

__all__ = ["gradient_descent_mse", "gradient_descent_mse_ensemble", "gp_inference",
           "gradient_descent", "momentum", "max_learning_rate", "student_t_inference",
           "Gaussian", "StudentT", "ODEState", "SingularKernelWarning"]
