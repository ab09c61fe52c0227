r"""Solvers for kernel systems beyond memory: blocked operators, CG, Nystrom, Falkon, Cholesky.

* :class:`KernelOperator` -- ``K + diag_reg I`` (or ``K(x, centers)``) as blocked products,
  recomputed by the kernel function or read from a stored kernel; never the whole N x N.
* :func:`conjugate_gradient` -- preconditioned CG with iteration count and residual history
  (:class:`SolveResult`).
* :class:`NystromPreconditioner` -- Woodbury inverse of the Nystrom approximation + ridge.
* :class:`Falkon` -- Nystrom KRR with Falkon's preconditioner (Rudi et al. 2017; Meanti et
  al. 2020).
* :func:`blocked_cholesky_solve` -- exact solve by in-place blocked Cholesky where N x N fits.
* :class:`KernelRidge` -- a scikit-learn estimator choosing among them.
"""
from widelimit.solvers.cg import SolveResult, conjugate_gradient
from widelimit.solvers.cholesky import SolverMemoryError, blocked_cholesky_solve
from widelimit.solvers.falkon import Falkon, FalkonPreconditioner
from widelimit.solvers.nystrom import NystromPreconditioner
from widelimit.solvers.operator import KernelOperator
from widelimit.solvers.dispatch import matrix_solver

__all__ = ["KernelOperator", "conjugate_gradient", "SolveResult", "NystromPreconditioner",
           "Falkon", "FalkonPreconditioner", "blocked_cholesky_solve", "SolverMemoryError",
           "matrix_solver", "KernelRidge"]


def __getattr__(name: str):
    # KernelRidge is a scikit-learn estimator: scikit-learn is imported on first use only
    if name == "KernelRidge":
        from widelimit.solvers.ridge import KernelRidge
        return KernelRidge
    raise AttributeError(f"module 'widelimit.solvers' has no attribute {name!r}")
