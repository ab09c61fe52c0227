"""Elementwise nonlinearities: closed-form duals, and any torch function by quadrature.

Each layer pairs a dual (``widelimit.kernels.rules``) with the torch function the
finite network applies.  Names and arguments follow ``neural_tangents.stax``.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor, nn

from widelimit.kernels.rules import erf as erf_rules
from widelimit.kernels.rules import exp as exp_rules
from widelimit.kernels.rules import polynomial as poly_rules
from widelimit.kernels.rules import relu as relu_rules
from widelimit.kernels.rules import trig as trig_rules
from widelimit.kernels.rules.elementwise import elementwise_rule
from widelimit.kernels.rules.quadrature import DEFAULT_ANGULAR, DEFAULT_RADIAL, quadrature_dual
from widelimit.kernels.state import Kernel
from widelimit._validate import Int, Real, check_real
from widelimit.layers.base import Layer

_REAL = Real()
_DEGREE = Int(min=0)


class ElementwiseModule(nn.Module):
    """Finite-width counterpart: applies ``fn`` elementwise."""

    mask_pointwise = True

    def __init__(self, fn: Callable[[Tensor], Tensor], name: str):
        super().__init__()
        self.fn, self.name = fn, name

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.name


class Nonlinearity(Layer):
    """Base of elementwise layers: subclasses give ``dual()`` and ``fn(x)``."""

    def dual(self) -> Callable:  # pragma: no cover - abstract
        raise NotImplementedError

    def has_native_rule(self) -> bool:
        return getattr(self.dual(), "native", None) is not None

    def fn(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def apply_kernel(self, k: Kernel) -> Kernel:
        return elementwise_rule(k, self.dual(), type(self).__name__)

    def build(self) -> nn.Module:
        return ElementwiseModule(self.fn, repr(self))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class ABRelu(Nonlinearity):
    """``a min(x, 0) + b max(x, 0)``."""

    hyperparameters = {"a": _REAL, "b": _REAL}

    def __init__(self, a: float, b: float, do_stabilize: bool = False):
        self.a, self.b, self.do_stabilize = a, b, do_stabilize

    def dual(self):
        return relu_rules.abrelu_dual(self.a, self.b)

    def fn(self, x):
        return self.a * torch.clamp(x, max=0) + self.b * torch.clamp(x, min=0)


class Relu(ABRelu):
    """``max(x, 0)``, ``neural_tangents.stax.Relu``.

    Kernel: the arc-cosine kernel of degree 1 (Cho & Saul 2009): for pre-activations with
    variances v1, v2 and angle theta, ``nngp' = sqrt(v1 v2) (sin theta + (pi - theta) cos theta)
    / (2 pi)``; the derivative kernel ``(pi - theta) / (2 pi)`` multiplies the NTK.
    """

    def __init__(self, do_stabilize: bool = False):
        super().__init__(0.0, 1.0, do_stabilize)

    def fn(self, x):
        return torch.relu(x)


class LeakyRelu(ABRelu):
    """``alpha min(x, 0) + max(x, 0)`` (:class:`ABRelu` with ``a = alpha, b = 1``),
    ``neural_tangents.stax.LeakyRelu``."""

    def __init__(self, alpha: float, do_stabilize: bool = False):
        super().__init__(check_real("alpha", alpha, owner="LeakyRelu"), 1.0, do_stabilize)


class Abs(ABRelu):
    """``|x|`` (:class:`ABRelu` with ``a = -1, b = 1``), ``neural_tangents.stax.Abs``."""

    def __init__(self, do_stabilize: bool = False):
        super().__init__(-1.0, 1.0, do_stabilize)

    def fn(self, x):
        return torch.abs(x)


class Sign(Nonlinearity):
    """``sign(x)``, ``neural_tangents.stax.Sign``.

    Kernel: ``E[sign(u) sign(v)] = 1 - 2 theta / pi`` (theta the angle between the
    pre-activations); its derivative is a delta and adds nothing to the NTK (as in
    neural-tangents).  For identical inputs theta is exactly 0 here (the diagonal is 1),
    where neural-tangents' arccos of a rounded correlation leaves noise
    (docs/neural-tangents.md).
    """

    def dual(self):
        return relu_rules.sign_dual

    def fn(self, x):
        return torch.sign(x)


class RectifiedMonomial(Nonlinearity):
    """``1{x >= 0} x^degree``."""

    hyperparameters = {"degree": _DEGREE}

    def __init__(self, degree: int):
        self.degree = degree

    def dual(self):
        return relu_rules.rectified_monomial_dual(self.degree)

    def fn(self, x):
        return (x >= 0).to(x.dtype) * x ** self.degree


class Erf(Nonlinearity):
    """``a erf(b x) + c``."""

    hyperparameters = {"a": _REAL, "b": _REAL, "c": _REAL}

    def __init__(self, a: float = 1.0, b: float = 1.0, c: float = 0.0):
        self.a, self.b, self.c = a, b, c

    def dual(self):
        return erf_rules.erf_dual(self.a, self.b, self.c)

    def fn(self, x):
        return self.a * torch.erf(self.b * x) + self.c


def Sigmoid_like() -> Erf:  # noqa: N802 - neural-tangents name
    """``0.5 erf(x / 2.4020563531719796) + 0.5``: the erf closest to the logistic sigmoid."""
    return Erf(a=0.5, b=1 / 2.4020563531719796, c=0.5)


class Gelu(Nonlinearity):
    """``x Phi(x)``; ``approximate`` only changes the finite network (tanh form)."""

    def __init__(self, approximate: bool = False):
        self.approximate = approximate

    def dual(self):
        return erf_rules.gelu_dual

    def fn(self, x):
        return nn.functional.gelu(x, approximate="tanh" if self.approximate else "none")


class Sin(Nonlinearity):
    """``a sin(b x + c)``."""

    hyperparameters = {"a": _REAL, "b": _REAL, "c": _REAL}

    def __init__(self, a: float = 1.0, b: float = 1.0, c: float = 0.0):
        self.a, self.b, self.c = a, b, c

    def dual(self):
        return trig_rules.sin_dual(self.a, self.b, self.c)

    def fn(self, x):
        return self.a * torch.sin(self.b * x + self.c)


def Cos(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> Sin:  # noqa: N802
    """``a cos(b x + c) = a sin(b x + c + pi/2)``."""
    return Sin(a, b, c + math.pi / 2)


class Rbf(Nonlinearity):
    """``sqrt(2) sin(sqrt(2 gamma) x + pi/4)``: its dual is the RBF kernel."""

    hyperparameters = {"gamma": Real(min=0.0, open_min=True)}

    def __init__(self, gamma: float = 1.0):
        self.gamma = gamma

    def dual(self):
        return trig_rules.rbf_dual(self.gamma)

    def fn(self, x):
        return math.sqrt(2) * torch.sin(math.sqrt(2 * self.gamma) * x + math.pi / 4)


class Gabor(Nonlinearity):
    """``exp(-x^2) sin(x)``."""

    def dual(self):
        return trig_rules.gabor_dual

    def fn(self, x):
        return torch.exp(-x * x) * torch.sin(x)


class Exp(Nonlinearity):
    """``a exp(b x)``."""

    hyperparameters = {"a": _REAL, "b": _REAL}

    def __init__(self, a: float = 1.0, b: float = 1.0):
        self.a, self.b = a, b

    def dual(self):
        return exp_rules.exp_dual(self.a, self.b)

    def fn(self, x):
        return self.a * torch.exp(self.b * x)


class Gaussian(Nonlinearity):
    """``a exp(b x^2)``."""

    hyperparameters = {"a": _REAL, "b": _REAL}

    def __init__(self, a: float = 1.0, b: float = -1.0):
        self.a, self.b = a, b

    def dual(self):
        return exp_rules.gaussian_dual(self.a, self.b)

    def fn(self, x):
        return self.a * torch.exp(self.b * x * x)


class ExpNormalized(Nonlinearity):
    """The normalised Gaussian kernel map of Shankar et al. (2020); kernel only."""

    hyperparameters = {"gamma": Real(min=0.0, open_min=True), "shift": _REAL}

    def __init__(self, gamma: float = 1.0, shift: float = -1.0, do_clip: bool = False):
        self.gamma, self.shift, self.do_clip = gamma, shift, do_clip

    def dual(self):
        return exp_rules.exp_normalized_dual(self.gamma, self.shift, self.do_clip)

    def build(self) -> nn.Module:
        raise NotImplementedError("ExpNormalized is a kernel map with no finite-width network.")


def _check_coef(name: str, coef: Sequence[float], owner: Optional[str] = None) -> tuple[float, ...]:
    if isinstance(coef, (str, bytes)) or not hasattr(coef, "__len__"):
        raise TypeError(f"{owner}: `{name}` must be a sequence of real numbers, got {coef!r}.")
    out = tuple(check_real(f"{name}[{i}]", c, owner=owner) for i, c in enumerate(coef))
    if not out:
        raise ValueError(f"{owner}: `{name}` must contain at least one coefficient.")
    return out


class Polynomial(Nonlinearity):
    """``coef[0] + coef[1] x + ... + coef[n] x^n``."""

    hyperparameters = {"coef": _check_coef}

    def __init__(self, coef: Sequence[float]):
        self.coef = coef

    def dual(self):
        return poly_rules.polynomial_dual(self.coef)

    def fn(self, x):
        out = torch.zeros_like(x)
        for c in reversed(self.coef):
            out = out * x + c
        return out


class Monomial(Polynomial):
    """``x^degree``."""

    hyperparameters = {"coef": _check_coef, "degree": _DEGREE}

    def __init__(self, degree: int):
        self.degree = degree
        super().__init__([0.0] * self.degree + [1.0])


class Hermite(Nonlinearity):
    """Normalised probabilists' Hermite polynomial He_n / sqrt(n!).

    As in neural-tangents, the kernel assumes unit-variance inputs (e.g. after LayerNorm).
    """

    hyperparameters = {"degree": _DEGREE}

    def __init__(self, degree: int):
        self.degree = degree

    def dual(self):
        return poly_rules.hermite_dual(self.degree)

    def fn(self, x):
        h_prev, h = torch.ones_like(x), x
        if self.degree == 0:
            return h_prev
        for n in range(1, self.degree):
            h_prev, h = h, x * h - n * h_prev
        return h / math.sqrt(math.factorial(self.degree))


def check_elementwise(fn: Callable[[Tensor], Tensor], name: str) -> None:
    """Probe ``fn`` on a few points of [-3, 3]: it must map a tensor to a tensor of the same
    shape (elementwise) with finite values."""
    probe = torch.linspace(-3.0, 3.0, 7, dtype=torch.float64)
    try:
        out = fn(probe)
    except Exception as e:  # noqa: BLE001 - the user's function: report what it raised
        raise TypeError(f"Elementwise: `{name}` must be an elementwise torch function; on a float64 "
                        f"tensor of shape (7,) it raised {type(e).__name__}: {e}") from e
    if not isinstance(out, Tensor) or out.shape != probe.shape:
        got = f"shape {tuple(out.shape)}" if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"Elementwise: `{name}` must be elementwise (a tensor of its input's shape "
                         f"out); on a tensor of shape (7,) it returned {got}.")
    if not bool(torch.isfinite(out).all()):
        raise ValueError(f"Elementwise: `{name}` returned NaN or inf on [-3, 3] "
                         f"({out.tolist()}); the kernel needs a function finite on the real line.")


class Elementwise(Nonlinearity):
    """Any elementwise torch function; its dual by polar Gauss-Legendre quadrature.

    Args:
        fn: elementwise torch function, e.g. ``torch.tanh``.
        deriv: its derivative; default from autograd.
        n_radial, n_angular: quadrature points (radial; per angular piece).
    """

    hyperparameters = {"n_radial": Int(min=1), "n_angular": Int(min=1)}

    def __init__(self, fn: Callable[[Tensor], Tensor], deriv: Optional[Callable] = None,
                 n_radial: int = DEFAULT_RADIAL, n_angular: int = DEFAULT_ANGULAR, name: str = ""):
        if not callable(fn):
            raise TypeError(f"`fn` must be callable, got {type(fn).__name__}.")
        if deriv is not None and not callable(deriv):
            raise TypeError(f"`deriv` must be callable or None, got {type(deriv).__name__}.")
        check_elementwise(fn, "fn")
        self._fn, self._deriv = fn, deriv
        self.n_radial, self.n_angular = n_radial, n_angular
        self.name = name or getattr(fn, "__name__", "fn")

    def dual(self):
        return quadrature_dual(self._fn, self._deriv, self.n_radial, self.n_angular)

    def fn(self, x):
        return self._fn(x)


def Tanh(**kw) -> Elementwise:  # noqa: N802
    """``tanh(x)`` as :class:`Elementwise` (kernel by quadrature, NTK from autograd); not in
    neural-tangents' stax (there: ``stax.Elementwise(jnp.tanh)``)."""
    return Elementwise(torch.tanh, name="tanh", **kw)


def Softplus(**kw) -> Elementwise:  # noqa: N802
    """``log(1 + e^x)`` as :class:`Elementwise` (kernel by quadrature, NTK from autograd)."""
    return Elementwise(nn.functional.softplus, name="softplus", **kw)


def Silu(**kw) -> Elementwise:  # noqa: N802
    """``x sigmoid(x)`` as :class:`Elementwise` (kernel by quadrature, NTK from autograd)."""
    return Elementwise(nn.functional.silu, name="silu", **kw)
