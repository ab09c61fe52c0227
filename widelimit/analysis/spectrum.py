"""Eigen-decomposition of kernel matrices and their spectral decay.

A kernel matrix ``K`` (N, N), symmetric positive semi-definite, has ``K = U diag(e) U^T``.
Divided by ``N`` its eigenvalues estimate those of the kernel's integral operator on the
data distribution (``(1/N) K u = e/N u``; Koltchinskii & Gine 2000), the quantity that
eigenlearning (:mod:`widelimit.analysis.eigenlearning`) and random-feature theory need.
A power-law decay ``e_i ~ i^(-alpha)`` is a straight line on log-log axes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from widelimit.analysis._checks import as_count, as_eigenvalues, as_square_kernel

__all__ = ["Spectrum", "spectrum", "ntk_spectrum", "decay_exponent", "plot_spectrum"]

_METHODS = ("auto", "dense", "lanczos")


@dataclass(frozen=True)
class Spectrum:
    """Eigenvalues (descending) and, if asked for, eigenvectors of an (N, N) kernel matrix.

    Attributes:
        eigenvalues: ``(k,)`` in descending order (all N of them for a dense solve).
        eigenvectors: ``(N, k)`` orthonormal columns, column ``i`` for ``eigenvalues[i]``;
            ``None`` when ``eigenvectors=False``.
        n: the matrix size N (divide the eigenvalues by it for the operator's spectrum).
        method: ``"dense"`` or ``"lanczos"``, the solver that ran.
    """
    eigenvalues: Any
    eigenvectors: Any
    n: int
    method: str

    def normalized(self) -> Any:
        """The eigenvalues divided by N: estimates of the kernel operator's eigenvalues."""
        return self.eigenvalues / self.n


def _lanczos(k: Tensor, n_top: int, vectors: bool) -> tuple[Tensor, Optional[Tensor]]:
    from scipy.sparse.linalg import eigsh
    a = k.detach().cpu().double().numpy()
    if vectors:
        e, u = eigsh(a, k=n_top, which="LA")
    else:
        e, u = eigsh(a, k=n_top, which="LA", return_eigenvectors=False), None
    order = np.argsort(e)[::-1]
    e_t = torch.from_numpy(np.ascontiguousarray(e[order])).to(k.dtype)
    u_t = None if u is None else torch.from_numpy(np.ascontiguousarray(u[:, order])).to(k.dtype)
    return e_t, u_t


def spectrum(kernel: Any, k: Optional[int] = None, *, eigenvectors: bool = True,
             method: str = "auto", symmetry_rtol: float = 1e-6) -> Spectrum:
    """Eigenvalues (descending) and eigenvectors of a symmetric kernel matrix.

    Args:
        kernel: ``(N, N)`` symmetric, finite kernel matrix (tensor or NumPy array; NumPy in
            gives NumPy out). A ``wl.Kernel`` is not accepted: pass ``kernel.ntk`` or
            ``kernel.nngp``.
        k: number of top eigenpairs; ``None`` for all N.
        eigenvectors: also return the eigenvectors.
        method: ``"dense"`` (``torch.linalg.eigh``, all pairs, ``O(N^3)``), ``"lanczos"``
            (implicitly restarted Lanczos, ``scipy.sparse.linalg.eigsh``: top ``k`` only,
            about ``O(N^2 k)`` per restart; needs ``k < N``) or ``"auto"`` (Lanczos when
            ``k`` is given, ``k < N / 10`` and ``N > 1000``, dense otherwise).
        symmetry_rtol: tolerated asymmetry, relative to ``max |K|``.

    Returns:
        :class:`Spectrum`.

    Raises:
        ValueError: a non-square, non-symmetric, empty or non-finite kernel; ``k`` out of
            ``[1, N]`` (``[1, N - 1]`` for Lanczos); an unknown method.
    """
    if method not in _METHODS:
        raise ValueError(f"`method` must be one of {_METHODS}, got {method!r}.")
    if hasattr(kernel, "ntk") and hasattr(kernel, "nngp") and not isinstance(kernel, (Tensor, np.ndarray)):
        raise TypeError("`kernel` must be an (N, N) matrix, got a wl.Kernel; pass `kernel.ntk` "
                        "or `kernel.nngp`.")
    t, was_numpy = as_square_kernel(kernel, "kernel", symmetry_rtol=symmetry_rtol)
    n = t.shape[0]
    if k is not None:
        k = as_count(k, "k")
        if k > n:
            raise ValueError(f"`k` must be at most the matrix size N = {n}, got {k}.")
    if method == "auto":
        method = "lanczos" if (k is not None and k < n / 10 and n > 1000) else "dense"
    if method == "lanczos":
        if k is None or k >= n:
            raise ValueError(f"method='lanczos' needs a number of eigenpairs `k` < N = {n}, got {k}.")
        e, u = _lanczos(t, k, eigenvectors)
    else:
        td = t.detach()
        sym = (td + td.T) / 2
        if eigenvectors:
            e, u = torch.linalg.eigh(sym)
            e, u = e.flip(0), u.flip(1)
        else:
            e, u = torch.linalg.eigvalsh(sym).flip(0), None
        if k is not None:
            e, u = e[:k], (None if u is None else u[:, :k])
    if was_numpy:
        e = e.cpu().numpy()
        u = None if u is None else u.cpu().numpy()
    return Spectrum(eigenvalues=e, eigenvectors=u, n=n, method=method)


def ntk_spectrum(model: torch.nn.Module, x: Any, k: Optional[int] = None, *,
                 eigenvectors: bool = False, **ntk_kwargs: Any) -> Spectrum:
    """Spectrum of the empirical NTK ``Theta(x, x)`` of a torch model (outputs traced).

    ``ntk_kwargs`` go to :func:`widelimit.empirical_ntk` (e.g. ``implementation=``). Call it
    before and after training to see how the tangent kernel moved (e.g. its top eigenvalues
    grow and align with the labels during feature learning).
    """
    from widelimit.empirical import empirical_ntk
    theta = empirical_ntk(model, x, **ntk_kwargs)
    if theta.ndim != 2:
        raise ValueError(f"the empirical NTK has shape {tuple(theta.shape)}; trace the output axes "
                         f"(the default trace_axes=(-1,)) so that it is an (N, N) matrix.")
    return spectrum(theta, k, eigenvectors=eigenvectors)


def decay_exponent(eigenvalues: Any, start: int = 1, stop: Optional[int] = None) -> float:
    """Least-squares slope ``alpha`` of ``log e_i = c - alpha log i`` over ranks ``start..stop``.

    Ranks are 1-based and inclusive; zero eigenvalues in the range are refused.
    """
    e = as_eigenvalues(eigenvalues)
    e = np.sort(e)[::-1]
    stop = e.size if stop is None else stop
    if not (1 <= start < stop <= e.size):
        raise ValueError(f"need 1 <= start < stop <= {e.size} (the number of eigenvalues), "
                         f"got start={start}, stop={stop}.")
    seg = e[start - 1:stop]
    if (seg <= 0).any():
        raise ValueError("the eigenvalues in the fitted range must be positive; lower `stop`.")
    ranks = np.arange(start, stop + 1, dtype=np.float64)
    slope = np.polyfit(np.log(ranks), np.log(seg), 1)[0]
    return float(-slope)


def plot_spectrum(spectra: Any, labels: Optional[Sequence[str]] = None, *, normalize: bool = True,
                  ax: Any = None, title: Optional[str] = None) -> Any:
    """Eigenvalue against rank on log-log axes (one line per spectrum); returns the Axes.

    Args:
        spectra: a :class:`Spectrum`, an array of eigenvalues, or a list of either.
        labels: one legend label per spectrum.
        normalize: divide each spectrum by its largest eigenvalue (compares decay shapes).
        ax: a matplotlib Axes to draw on (a new figure if ``None``).
    Needs matplotlib (``pip install widelimit[plot]``).
    """
    try:
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("plot_spectrum needs matplotlib: `pip install widelimit[plot]`.") from None
    items = list(spectra) if isinstance(spectra, (list, tuple)) else [spectra]
    if labels is not None and len(labels) != len(items):
        raise ValueError(f"`labels` has {len(labels)} entries for {len(items)} spectra.")
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 3.5))
    for i, s in enumerate(items):
        e = as_eigenvalues(s.eigenvalues if isinstance(s, Spectrum) else s, "spectra")
        e = np.sort(e)[::-1]
        e = e[e > e[0] * 1e-14] if e[0] > 0 else e[:0]
        if normalize and e.size:
            e = e / e[0]
        ax.loglog(np.arange(1, e.size + 1), e, label=None if labels is None else labels[i])
    ax.set_xlabel("rank i")
    ax.set_ylabel("eigenvalue / largest" if normalize else "eigenvalue")
    if title:
        ax.set_title(title)
    if labels is not None:
        ax.legend()
    return ax
