r"""Function-space gradient descent (and momentum) on any differentiable loss.

In the linearised (infinite-width) regime the outputs obey the ODE

.. math::
    \frac{d f_t(X)}{dt} = -\eta\, \Theta_{XX} \nabla_f \mathcal{L}(f_t(X), Y), \qquad
    \frac{d f_t(x)}{dt} = -\eta\, \Theta_{xX} \nabla_f \mathcal{L}(f_t(X), Y)

(Lee et al., 2019, eq. 8).  Heavy-ball momentum ``m`` is its continuous limit in time
units of :math:`\sqrt\eta`: :math:`\dot f = q`, :math:`\dot q = -\Theta\nabla_f\mathcal{L}
+ \frac{m - 1}{\sqrt\eta} q` (as in ``neural_tangents.predict.gradient_descent``).
The ODE is integrated by ``scipy.integrate.solve_ivp`` (DOP853, ``rtol=atol=1e-10`` by
default); the gradient of ``loss`` comes from ``torch.autograd``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from widelimit._tensors import check_positive, to_output
from widelimit.predict._common import (as_kernel, as_targets, as_times, check_kernel_pair,
                                       check_learning_rate)
from widelimit.predict.mse import _broadcast, check_trace_axes

__all__ = ["ODEState", "gradient_descent", "momentum"]


@dataclass
class ODEState:
    """Outputs ``fx_train``/``fx_test`` and momentum variables ``qx_train``/``qx_test``."""
    fx_train: Any = None
    fx_test: Any = None
    qx_train: Any = None
    qx_test: Any = None


def gradient_descent(loss: Callable[[Tensor, Tensor], Tensor], k_train_train: Any, y_train: Any,
                     learning_rate: float = 1.0, momentum: Optional[float] = None,
                     trace_axes: Sequence[int] = (-1,), *, rtol: float = 1e-10,
                     atol: float = 1e-10, method: str = "DOP853") -> Callable:
    r"""Outputs under gradient flow (or momentum) on ``loss(fx_train, y_train)``.

    Args:
        loss: torch function of ``(fx (N, K), y (N, K))`` returning a scalar, e.g.
            ``lambda f, y: -(torch.log_softmax(f, -1) * y).mean()``.  It should treat
            examples and outputs symmetrically (its Hessian is not assumed).
        k_train_train: (N, N) NTK.  y_train: (N, K) or (N,) targets.
        learning_rate: step size; time ``t`` counts steps (``eta * t``, or
            ``sqrt(eta) * t`` with momentum, is the ODE time).
        momentum: heavy-ball momentum in [0, 1), or None for plain gradient descent.
        rtol, atol, method: passed to ``scipy.integrate.solve_ivp`` (the solution is
            accurate to about ``rtol`` relative).

    Returns:
        ``predict_fn(t, fx_train_or_state_0=0., fx_test_0=None, k_test_train=None)``
        returning ``fx_train_t``, ``fx_test_t``, both, or an :class:`ODEState` when given
        one, with leading axes of ``t``'s shape.  ``t`` must be finite and >= 0.
    """
    check_trace_axes(trace_axes)
    if not callable(loss):
        raise TypeError(f"`loss` must be callable as loss(fx_train, y_train), got {type(loss).__name__}.")
    k_dd, was_numpy = as_kernel(k_train_train, "k_train_train", train=True)
    if k_dd.shape[0] != k_dd.shape[1]:
        raise ValueError(f"`k_train_train` must be square, got shape {tuple(k_dd.shape)}.")
    y, _, was_1d = as_targets(y_train, k_dd.shape[0])
    k64 = k_dd.detach().to(device="cpu", dtype=torch.float64)
    y64 = y.detach().to(device="cpu", dtype=torch.float64)
    lr = check_learning_rate(learning_rate)
    if momentum is not None:
        check_positive(momentum, "momentum", allow_zero=True)
        if float(momentum) >= 1:
            raise ValueError(f"`momentum` must be in [0, 1), got {momentum}.")
        lr = lr ** 0.5
        mom = (float(momentum) - 1.0) / lr
    shape_y = tuple(y.shape)

    def grad_loss(f: Tensor) -> Tensor:
        f = f.detach().requires_grad_(True)
        value = loss(f if not was_1d else f.squeeze(-1), y64 if not was_1d else y64.squeeze(-1))
        if not isinstance(value, Tensor) or value.numel() != 1:
            raise ValueError("`loss` must return a scalar tensor.")
        (g,) = torch.autograd.grad(value.reshape(()), f)
        return g

    def predict_fn(t: Any = None, fx_train_or_state_0: Any = 0.0, fx_test_0: Any = None,
                   k_test_train: Any = None):
        is_state = isinstance(fx_train_or_state_0, ODEState)
        if is_state:
            if fx_test_0 is not None:
                raise ValueError("`fx_test_0` is part of the ODEState; pass it there and leave "
                                 "`fx_test_0=None`.")
            st = fx_train_or_state_0
            f0, fx_test_0, q0, qt0 = st.fx_train, st.fx_test, st.qx_train, st.qx_test
        else:
            f0, q0, qt0 = fx_train_or_state_0, None, None
        if fx_test_0 is not None and k_test_train is None:
            raise ValueError("`k_test_train` is required to predict on the test set.")
        if f0 is None and fx_test_0 is None:
            raise ValueError("Both `fx_train_0` and `fx_test_0` are None: nothing to predict.")
        if momentum is None and (q0 is not None or qt0 is not None):
            raise ValueError("The ODEState has momentum variables but `momentum` is None.")
        times = as_times(t if t is not None else float("inf"), torch.float64)
        tt, t_shape = times
        if bool(torch.isinf(tt).any()):
            raise ValueError("`t` must be finite for the ODE solver (t=None / inf may not converge); "
                             "pass a large finite time instead.")
        tt = tt * lr
        want_train = f0 is not None
        f0t = torch.zeros(shape_y, dtype=torch.float64) if f0 is None else \
            _broadcast(f0, shape_y, k64, "fx_train_0", was_1d)
        parts = [f0t]
        k_td = None
        if fx_test_0 is not None:
            k_td, _ = as_kernel(k_test_train, "k_test_train")
            check_kernel_pair(k_td, k64.shape[0])
            k_td = k_td.detach().to(device="cpu", dtype=torch.float64)
            parts.append(_broadcast(fx_test_0, (k_td.shape[0], shape_y[1]), k64, "fx_test_0", was_1d))
        if momentum is not None:
            parts.append(torch.zeros(shape_y, dtype=torch.float64) if q0 is None else
                         _broadcast(q0, shape_y, k64, "qx_train", was_1d))
            if k_td is not None:
                parts.append(torch.zeros_like(parts[1]) if qt0 is None else
                             _broadcast(qt0, tuple(parts[1].shape), k64, "qx_test", was_1d))
        sizes = [p.numel() for p in parts]
        shapes = [tuple(p.shape) for p in parts]
        n_f = 2 if k_td is not None else 1

        def split(z: np.ndarray) -> list[Tensor]:
            out, i = [], 0
            for s, sh in zip(sizes, shapes):
                out.append(torch.from_numpy(z[i:i + s]).reshape(sh))
                i += s
            return out

        def rhs(_: float, z: np.ndarray) -> np.ndarray:
            xs = split(z)
            g = grad_loss(xs[0])
            df = [-(k64 @ g)] + ([-(k_td @ g)] if k_td is not None else [])
            if momentum is None:
                return torch.cat([d.reshape(-1) for d in df]).numpy()
            qs = xs[n_f:]
            dq = [d + mom * q for d, q in zip(df, qs)]
            return torch.cat([q.reshape(-1) for q in qs] + [d.reshape(-1) for d in dq]).numpy()

        z0 = torch.cat([p.reshape(-1) for p in parts]).numpy()
        uniq, inverse = np.unique(tt.numpy(), return_inverse=True)
        t_end = float(uniq[-1])
        if t_end > 0:
            from scipy.integrate import solve_ivp   # SciPy on first use (import cost)
            sol = solve_ivp(rhs, (0.0, t_end), z0, method=method, t_eval=uniq, rtol=rtol, atol=atol)
            if not sol.success:
                raise RuntimeError(f"The ODE solver failed: {sol.message}")
            zs = sol.y.T
        else:
            zs = np.repeat(z0[None], len(uniq), axis=0)
        zs = zs[inverse.reshape(-1)]
        cols = [torch.from_numpy(np.ascontiguousarray(zs[:, sum(sizes[:i]):sum(sizes[:i + 1])]))
                .reshape((-1,) + shapes[i]).to(device=k_dd.device, dtype=k_dd.dtype)
                .reshape(t_shape + shapes[i])
                for i in range(len(parts))]
        if was_1d:
            cols = [c.squeeze(-1) for c in cols]
        fx_train_t = cols[0]
        fx_test_t = cols[1] if k_td is not None else None
        if is_state:
            q = cols[n_f:] + [None, None]
            vals = (fx_train_t if want_train else None, fx_test_t, q[0],
                    q[1] if k_td is not None else None)
            return ODEState(*(to_output(v, was_numpy) for v in vals))
        if want_train and k_td is not None:
            return to_output((fx_train_t, fx_test_t), was_numpy)
        if k_td is not None:
            return to_output(fx_test_t, was_numpy)
        return to_output(fx_train_t, was_numpy)

    return predict_fn


def momentum(loss: Callable[[Tensor, Tensor], Tensor], k_train_train: Any, y_train: Any,
             learning_rate: float = 1.0, momentum: float = 0.9,
             **kwargs: Any) -> Callable:  # noqa: F811 - the argument shadows the function name
    """:func:`gradient_descent` with heavy-ball ``momentum`` (default 0.9)."""
    return gradient_descent(loss, k_train_train, y_train, learning_rate, momentum=momentum, **kwargs)

