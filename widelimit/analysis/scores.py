"""Training-free architecture scores from a model's empirical NTK on one batch.

* condition number ``lambda_max / lambda_min`` of the NTK ``Theta(x, x)`` (outputs traced);
  large values mean slow directions for gradient descent (Chen, Gong & Wang, "Neural
  Architecture Search on ImageNet in Four GPU Hours", ICLR 2021, TE-NAS);
* trace ``tr Theta`` (the mean over outputs of ``sum_i ||d f_o(x_i) / d theta||^2``), exact
  or by Hutch++ (Meyer, Musco, Musco & Woodruff, "Hutch++: Optimal Stochastic Trace
  Estimation", SOSA 2021) from NTK-vector products ``J (J^T u)`` (one ``vjp`` and one
  ``jvp`` each; the NTK is never formed);
* label-gradient alignment (Mok, Na, Kim, Han & Yoon, "Demystifying the Neural Tangent
  Kernel from a Practical Perspective: Can it be trusted for Neural Architecture Search
  without training?", CVPR 2022):
  ``LGA = <Theta - mu(Theta), Y Y^T - mu(Y Y^T)>_F / (||Theta - mu(Theta)||_F ||Y Y^T - mu(Y Y^T)||_F)``,
  ``mu`` the mean of all entries, ``Y`` one-hot labels (``Y Y^T`` = same-class indicator)
  or real targets. Invariant to the order of the batch, like the condition number.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import jvp, vjp, vmap

from widelimit.analysis._checks import as_count

__all__ = ["NTKScores", "ntk_scores", "ntk_condition_number", "ntk_trace", "label_gradient_alignment",
           "hutchpp"]


@dataclass(frozen=True)
class NTKScores:
    """Scores of one model on one batch (Python floats).

    ``condition_number`` is ``inf`` when the NTK is singular to working precision
    (``lambda_min <= 0``); ``lga`` is ``None`` without labels.
    """
    condition_number: float
    trace: float
    lga: Optional[float]
    lambda_max: float
    lambda_min: float


def _batch(model: nn.Module, x: Any) -> Tensor:
    from widelimit.empirical._model import as_tensor
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}.")
    return as_tensor(x, "x", model)[0]


def _ntk(model: nn.Module, x: Tensor, **ntk_kwargs: Any) -> Tensor:
    from widelimit.empirical import empirical_ntk
    k = empirical_ntk(model, x, **ntk_kwargs)
    if k.ndim != 2:
        raise ValueError(f"the NTK has shape {tuple(k.shape)}: the scores need the outputs traced "
                         f"(trace_axes covering every output axis).")
    return k.double()


def _label_gram(y: Any, n: int) -> Tensor:
    if isinstance(y, np.ndarray):
        y = torch.from_numpy(y)
    if not isinstance(y, Tensor):
        raise TypeError(f"`y` must be a tensor or array of labels, got {type(y).__name__}.")
    if y.shape[0] != n:
        raise ValueError(f"`y` has {y.shape[0]} rows for a batch of {n}.")
    if y.ndim == 1 and not y.is_floating_point():
        return (y[:, None] == y[None, :]).double()          # one-hot Y: Y Y^T = same class
    y = y.double().reshape(n, -1)
    if not torch.isfinite(y).all():
        raise ValueError("`y` contains NaN or inf values.")
    return y @ y.T


def _alignment(k: Tensor, yy: Tensor) -> float:
    kc, yc = k - k.mean(), yy - yy.mean()
    den = float(kc.norm() * yc.norm())
    if den == 0:
        raise ValueError("LGA is undefined: the NTK or the label Gram matrix is constant "
                         "(e.g. a single class in the batch).")
    return float((kc * yc).sum()) / den


def label_gradient_alignment(model: nn.Module, x: Any, y: Any, **ntk_kwargs: Any) -> float:
    """LGA (Mok et al., CVPR 2022): centred alignment of the NTK with the label Gram matrix.

    ``y``: ``(N,)`` integer class labels or ``(N,)`` / ``(N, K)`` float targets.
    """
    xt = _batch(model, x)
    return _alignment(_ntk(model, xt, **ntk_kwargs), _label_gram(y, xt.shape[0]))


def ntk_condition_number(model: nn.Module, x: Any, **ntk_kwargs: Any) -> float:
    """``lambda_max / lambda_min`` of the empirical NTK on ``x`` (``inf`` if singular)."""
    return ntk_scores(model, x, **ntk_kwargs).condition_number


def ntk_scores(model: nn.Module, x: Any, y: Any = None, **ntk_kwargs: Any) -> NTKScores:
    """Condition number, trace and (with labels ``y``) LGA from one empirical NTK."""
    xt = _batch(model, x)
    k = _ntk(model, xt, **ntk_kwargs)
    e = torch.linalg.eigvalsh((k + k.T) / 2)
    lmin, lmax = float(e[0]), float(e[-1])
    tol = lmax * k.shape[0] * torch.finfo(k.dtype).eps
    cond = lmax / lmin if lmin > tol else float("inf")
    lga = None if y is None else _alignment(k, _label_gram(y, xt.shape[0]))
    return NTKScores(condition_number=cond, trace=float(torch.trace(k)), lga=lga,
                     lambda_max=lmax, lambda_min=lmin)


def hutchpp(matvec: Callable[[Tensor], Tensor], dim: int, n_matvecs: int, *,
            generator: Optional[torch.Generator] = None, dtype: torch.dtype = torch.float64,
            device: Any = None) -> float:
    """Hutch++ estimate of ``tr A`` for a symmetric PSD ``A`` given only ``matvec(V) = A V``.

    ``V`` is ``(dim, b)``. With ``m = n_matvecs // 3`` (at least 1): ``Q = orth(A S)`` for a
    Rademacher ``S`` (dim, m); ``tr A ~ tr(Q^T A Q) + tr(G^T P A P G) / m`` with ``P = I - Q Q^T``
    and a fresh Rademacher ``G``. Exact when ``rank A <= m``; the error decays like
    ``1 / n_matvecs`` (Hutchinson's: ``1 / sqrt(n_matvecs)``).
    """
    dim = as_count(dim, "dim")
    n_matvecs = as_count(n_matvecs, "n_matvecs", minimum=3)
    m = n_matvecs // 3

    def rademacher(c: int) -> Tensor:
        r = torch.randint(0, 2, (dim, c), generator=generator, dtype=torch.int64)
        return (2 * r - 1).to(dtype=dtype, device=device)

    if m >= dim:  # as many probes as dimensions: the trace from the identity's columns
        return float(torch.trace(matvec(torch.eye(dim, dtype=dtype, device=device))))
    q, _ = torch.linalg.qr(matvec(rademacher(m)))
    t_low = float(torch.trace(q.T @ matvec(q)))
    g = rademacher(m)
    g = g - q @ (q.T @ g)
    return t_low + float(torch.trace(g.T @ matvec(g))) / m


def ntk_trace(model: nn.Module, x: Any, *, method: str = "exact", n_matvecs: int = 30,
              seed: int = 0, **ntk_kwargs: Any) -> float:
    """Trace of the empirical NTK on ``x`` (outputs traced, i.e. averaged over outputs).

    ``method="exact"`` forms the NTK (:func:`widelimit.empirical_ntk`, ``ntk_kwargs`` go
    there); ``"hutchpp"`` uses :func:`hutchpp` on the ``(N O) x (N O)`` NTK through
    ``n_matvecs`` NTK-vector products ``J (J^T u)`` (``torch.func.vjp`` then ``jvp``),
    memory of a few forward passes, never the NTK or a Jacobian; ``seed`` seeds its own
    ``torch.Generator`` (the global RNG is untouched).
    """
    if method not in ("exact", "hutchpp"):
        raise ValueError(f"`method` must be 'exact' or 'hutchpp', got {method!r}.")
    xt = _batch(model, x)
    if method == "exact":
        return float(torch.trace(_ntk(model, xt, **ntk_kwargs)))
    if ntk_kwargs:
        raise TypeError(f"method='hutchpp' takes no empirical_ntk options, got {sorted(ntk_kwargs)}.")
    from widelimit.empirical._model import ModelFn, eval_mode
    mf = ModelFn(model)
    with eval_mode(model), torch.no_grad():
        out_shape = mf.check(xt, "x")
        f = lambda th: mf(th, xt)  # noqa: E731
        _, pullback = vjp(f, mf.theta)
        n_out = xt.shape[0] * int(np.prod(out_shape))

        push = lambda t: jvp(f, (mf.theta,), (t,))[1]  # noqa: E731

        def matvec(v: Tensor) -> Tensor:  # (N O, b) -> (N O, b), b products at once (vmap)
            u = v.T.to(xt.dtype).reshape(v.shape[1], xt.shape[0], *out_shape)
            (tangents,) = vmap(pullback)(u)
            return vmap(push)(tangents).reshape(v.shape[1], -1).T.double()

        gen = torch.Generator().manual_seed(int(seed))
        t = hutchpp(matvec, n_out, n_matvecs, generator=gen, device=None)
    return t / int(np.prod(out_shape))
