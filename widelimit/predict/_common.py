"""Shared machinery of ``widelimit.predict``: validation, named results, cached factorisations.

Conventions (those of ``neural_tangents.predict``):

* kernels are (N1, N2) matrices; targets ``y_train`` are (N, K) (a 1-D (N,) target is
  accepted and treated as K = 1, outputs then drop the K axis again);
* the K output channels share the kernel (``trace_axes=(-1,)``);
* ``diag_reg`` is multiplied by the mean of the kernel's diagonal unless
  ``diag_reg_absolute_scale=True``;
* training time is measured in steps: the dynamics run for ``learning_rate * t`` and the
  MSE loss is ``||f - y||^2 / (2 N K)``.
"""
from __future__ import annotations

import math
import warnings
from collections import namedtuple
from typing import Any, NamedTuple, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from widelimit._tensors import all_finite, check_positive, scipy_blas
from widelimit._validate import check_get, check_kernel_matrix

__all__ = ["Gaussian", "StudentT", "SingularKernelWarning", "Factor", "as_kernel", "as_targets",
           "as_times", "check_kernel_pair", "check_diag_reg", "check_learning_rate", "get_attr",
           "canonical_get", "make_result"]

GP_GETS = ("nngp", "ntk", "ntkgp")


class Gaussian(NamedTuple):
    """``(mean, covariance)`` of a Gaussian over the outputs (covariance shared by outputs)."""
    mean: Any
    covariance: Any


class StudentT(NamedTuple):
    """Multivariate Student-t: ``location``, ``scale`` matrix and degrees of freedom ``df``.

    The covariance is ``scale * df / (df - 2)`` for ``df > 2``.
    """
    location: Any
    scale: Any
    df: float


class SingularKernelWarning(UserWarning):
    """The regularised train-train kernel is singular to working precision."""


def _to_tensor(x: Any, name: str) -> tuple[Tensor, bool]:
    was_numpy = isinstance(x, np.ndarray)
    if was_numpy:
        if not np.issubdtype(x.dtype, np.floating):
            raise TypeError(f"`{name}` must be a floating-point array, got dtype {x.dtype}.")
        x = torch.from_numpy(np.ascontiguousarray(x))
    elif not isinstance(x, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}.")
    if not x.is_floating_point():
        raise TypeError(f"`{name}` must be a floating-point tensor, got dtype {x.dtype}.")
    if not all_finite(x):
        raise ValueError(f"`{name}` contains NaN or inf values.")
    return x, was_numpy


def as_kernel(k: Any, name: str, *, train: bool = False) -> tuple[Tensor, bool]:
    """Validate one kernel matrix: a finite float (N1, N2) tensor or ndarray; with ``train``
    a square, symmetric, (cheaply checked) positive semi-definite train-train kernel
    (:func:`widelimit._validate.check_kernel_matrix`)."""
    t, was_numpy = _to_tensor(k, name)
    if t.ndim != 2:
        raise ValueError(f"`{name}` must be a 2-D (N1, N2) kernel matrix, got shape {tuple(t.shape)}.")
    if train:
        check_kernel_matrix(t, name)
    return t, was_numpy


def as_targets(y: Any, n: int, name: str = "y_train") -> tuple[Tensor, bool, bool]:
    """Return ``(y as (N, K), was_numpy, was_1d)``; checks the batch size against ``n``."""
    t, was_numpy = _to_tensor(y, name)
    if t.ndim not in (1, 2):
        raise ValueError(f"`{name}` must have shape (N,) or (N, K), got {tuple(t.shape)}.")
    was_1d = t.ndim == 1
    t = t.reshape(-1, 1) if was_1d else t
    if t.shape[0] != n:
        raise ValueError(f"`{name}` has {t.shape[0]} rows but the train-train kernel is {n}x{n}; "
                         f"they must describe the same training points.")
    return t, was_numpy, was_1d


def check_kernel_pair(k_td: Tensor, n: int, name: str = "k_test_train") -> None:
    if k_td.shape[1] != n:
        raise ValueError(f"`{name}` must have shape (N_test, {n}) to match the {n} training points, "
                         f"got {tuple(k_td.shape)}.")


def check_diag_reg(diag_reg: Any) -> float:
    check_positive(diag_reg, "diag_reg", allow_zero=True)
    return float(diag_reg)


def check_learning_rate(learning_rate: Any) -> float:
    check_positive(learning_rate, "learning_rate")
    return float(learning_rate)


def as_times(t: Any, dtype: torch.dtype) -> Optional[tuple[Tensor, tuple]]:
    """``None`` for t=None, else ``(flat times, shape of t)``; times must be >= 0 (inf allowed)."""
    if t is None:
        return None
    if isinstance(t, Tensor):
        ok = not (t.is_complex() or t.dtype == torch.bool)
        tt = t.detach().to(dtype=dtype, device="cpu") if ok else None
    else:
        try:
            arr = np.asarray(t)
        except (TypeError, ValueError):
            arr = np.asarray(None)
        ok = arr.dtype.kind in "iuf"            # not bool, complex, str or object
        tt = torch.as_tensor(arr.astype(np.float64), dtype=dtype) if ok else None
    if tt is None:
        raise TypeError(f"`t` must be None, a real number, or a list/array/tensor of real numbers, "
                        f"got {type(t).__name__} {t!r}.")
    if bool(torch.isnan(tt).any()) or bool((tt < 0).any()):
        raise ValueError(f"`t` must be non-negative (inf or None for infinite time), got {t!r}.")
    return tt.reshape(-1), tuple(tt.shape)


def get_attr(k: Any, g: str, name: str) -> Any:
    """A kernel tensor out of a tensor/ndarray, a widelimit ``Kernel`` or a namedtuple."""
    if isinstance(k, (Tensor, np.ndarray)):
        return k
    v = getattr(k, g, None)
    if v is None:
        raise ValueError(f"`{name}` must contain the '{g}' kernel (pass a Kernel / namedtuple "
                         f"with a '{g}' field, or the matrix itself).")
    return v


def canonical_get(get: Union[None, str, Sequence[str]], allowed: Sequence[str],
                  default: tuple[str, ...] = ("nngp", "ntk")) -> tuple[tuple[str, ...], bool]:
    """``(names, is_single)`` for ``get``; ValueError / TypeError naming ``get`` otherwise."""
    names = check_get(get, allowed)
    if names is None:
        return default, False
    return names, isinstance(get, str)


def make_result(out: dict, names: tuple[str, ...], single: bool):
    if single:
        return out[names[0]]
    return namedtuple("Gaussians", names)(*(out[g] for g in names))


class Factor:
    """Cached factorisations of ``A + reg * I`` for a symmetric PSD train-train kernel ``A``.

    ``reg = diag_reg * mean(diag(A))`` unless ``absolute``.  The eigendecomposition and the
    Cholesky factor are computed at most once each, on first use.  Eigenvalues at or below
    ``n * eps * max(|eigenvalue|)`` count as an exact null space: gradient flow does not
    move the outputs along it, so it is projected out (pseudo-inverse), with a
    :class:`SingularKernelWarning`; the same happens when Cholesky fails or a pivot is
    that small.  Results are then finite and equal the minimum-norm solution.
    """

    def __init__(self, a: Tensor, diag_reg: float, absolute: bool, name: str):
        self.n, self.name = a.shape[0], name
        if a.shape[0] != a.shape[1]:
            raise ValueError(f"`{name}` must be square (N, N), got shape {tuple(a.shape)}.")
        reg = diag_reg if absolute else diag_reg * float(torch.diagonal(a).mean())
        big = torch.finfo(a.dtype).max / 4
        if not math.isfinite(reg) or abs(reg) + float(torch.diagonal(a).abs().max()) > big:
            raise ValueError(f"`diag_reg`={diag_reg:g} is too large: the ridge "
                             f"{'diag_reg' if absolute else 'diag_reg x mean(diag(K))'} = {reg:.3g} "
                             f"overflows {a.dtype} (largest {torch.finfo(a.dtype).max:.3g}); "
                             f"the predictions would be NaN.")
        self.reg = reg
        if reg:      # A + reg I: one copy, the diagonal updated in place (no (N, N) identity)
            self.a = a.clone()
            self.a.diagonal().add_(reg)
        else:
            self.a = a
        self._eig: Optional[tuple[Tensor, Tensor, Tensor]] = None
        self._chol: Optional[Tensor] = None
        self._use_eig_solve = False
        self._warned = False
        self.nngp_in_eigenbasis: Optional[Tensor] = None   # set by the NTK ensemble covariance

    @property
    def eps(self) -> float:
        return self.n * torch.finfo(self.a.dtype).eps

    def _warn(self, k: int) -> None:
        if not self._warned:
            self._warned = True
            warnings.warn(
                f"`{self.name}` (+ diag_reg) is singular to working precision ({k} eigenvalue(s) "
                f"<= {self.eps:.1e} x the largest; duplicated training points?). Its null space "
                f"is projected out (pseudo-inverse, the limit of gradient flow). Pass diag_reg > 0 "
                f"to regularise instead.", SingularKernelWarning, stacklevel=4)

    def eigh(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(evals, evecs, is_null)``."""
        if self._eig is None:
            evals, evecs = torch.linalg.eigh(self.a)
            tol = self.eps * float(evals.abs().max()) if self.n else 0.0
            if self.n and float(evals[0]) < -math.sqrt(torch.finfo(evals.dtype).eps) * float(evals.abs().max()):
                raise ValueError(f"`{self.name}` (+ diag_reg) is not positive semi-definite: its "
                                 f"smallest eigenvalue is {float(evals[0]):.3g} (largest "
                                 f"{float(evals[-1]):.3g}); a kernel matrix has none below 0.")
            self._eig = (evals, evecs, evals <= tol)
        return self._eig

    def null_count(self) -> int:
        return int(self.eigh()[2].sum())

    def whiten_rows(self, b: Tensor) -> Optional[Tensor]:
        """``b L^{-T} = (L^{-1} b^T)^T`` for rows ``b`` (M, N) and the Cholesky factor
        ``A + reg I = L L^T`` (so that ``b (A + reg I)^{-1} b^T`` is the Gram matrix of the
        result: one triangular solve instead of two; from the right, so that ``b`` is
        not transposed into a copy), or None when ``A`` is treated as singular."""
        self._factorize()
        if self._chol is None:
            return None
        return torch.linalg.solve_triangular(self._chol.T, b, upper=True, left=False)

    def chol_t_times(self, b: Tensor) -> Tensor:
        """``L^T b`` (N, M) for the Cholesky factor (which must exist): BLAS ``trmm`` on
        CPU, half the work of a GEMM."""
        lt, tr = self._chol.T, scipy_blas(b, "trmm")
        if tr is None:
            return lt @ b
        # C-ordered L is Fortran L^T (upper) and C-ordered b Fortran b^T: b^T L = (L^T b)^T
        out = tr(1.0, self._chol.detach().numpy().T, b.detach().contiguous().numpy().T,
                 side=1, lower=0, trans_a=1)
        return torch.from_numpy(out).T

    def factorize(self) -> None:
        """Cholesky now (else on first use); a singular kernel switches to the eigenbasis."""
        self._factorize()

    def _factorize(self) -> None:
        if self._chol is None and not self._use_eig_solve:
            chol, info = torch.linalg.cholesky_ex(self.a)
            piv = torch.diagonal(chol) ** 2
            scale = float(torch.diagonal(self.a).abs().max()) if self.n else 0.0
            if int(info) != 0 or bool((piv <= self.eps * scale).any()):
                self._use_eig_solve = True
            else:
                self._chol = chol

    def solve(self, b: Tensor) -> Tensor:
        """``(A + reg I)^{-1} b`` by Cholesky, or the pseudo-inverse when singular."""
        self._factorize()
        if self._use_eig_solve:
            evals, evecs, null = self.eigh()
            if bool(null.any()):
                self._warn(int(null.sum()))
            inv = torch.where(null, torch.zeros_like(evals), 1.0 / torch.where(null, 1.0, evals))
            return evecs @ (inv.unsqueeze(-1) * (evecs.T @ b))
        # two triangular solves: torch.cholesky_solve copies the (N, N) factor on every call
        y = torch.linalg.solve_triangular(self._chol, b, upper=False)
        return torch.linalg.solve_triangular(self._chol.T, y, upper=True)

    def phi(self, t: Tensor, normalization: int, *, kind: str) -> Tensor:
        """(T, N) functions of the eigenvalues at times ``t`` (already times learning rate).

        ``kind="expm1"``: ``expm1(-lam t / n)``; ``kind="inv_expm1"``: ``expm1(-lam t / n) / lam``
        (``-1 / lam`` at t = inf); null-space eigenvalues give 0 (those directions stay put).
        """
        evals, _, null = self.eigh()
        lam = torch.where(null, torch.zeros_like(evals), evals).unsqueeze(0)
        tt = t.to(device=evals.device, dtype=evals.dtype).reshape(-1, 1)
        x = -lam * torch.where(torch.isinf(tt), torch.ones_like(tt), tt) / normalization
        e = torch.where(torch.isinf(tt) & (lam > 0), torch.full_like(x, -1.0), torch.expm1(x))
        e = torch.where(null.unsqueeze(0), torch.zeros_like(e), e)
        if kind == "expm1":
            return e
        if bool(null.any()):
            self._warn(int(null.sum()))
        return e / torch.where(null, torch.ones_like(evals), evals).unsqueeze(0)
