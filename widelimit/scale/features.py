"""Random features of the NNGP and NTK of deep fully connected ReLU-family networks.

``phi = wl.random_features(net, n_features)`` is a feature map ``phi(x) -> (N, F)`` with
``phi(x1) @ phi(x2).T ~ net.kernel_fn(x1, x2, get=get)``, built layer by layer from the
kernel rules (:mod:`widelimit.kernels.rules.affine`, :mod:`widelimit.kernels.rules.relu`):

* input: ``phi_0 = x / sqrt(d)`` (``phi_0 phi_0^T = x x^T / d``, the input kernel); no NTK features.
* ``Dense(W_std, b_std)``: ``phi' = [W_std phi, b_std]`` (``nngp' = W_std^2 nngp + b_std^2``, exact);
  NTK parametrization ``T' = [phi', W_std T]`` (``ntk' = nngp' + W_std^2 ntk``), standard
  parametrization ``T' = [sqrt(n / s0) phi, 1, W_std T]``.
* nonlinearity ``f`` (arc-cosine random features, Cho & Saul 2009): ``u = phi G`` with
  ``G ~ N(0, 1)^(D, M)``, so the columns of ``u`` are Gaussian with covariance ``nngp``;
  ``phi' = f(u) / sqrt(M)`` (``E[phi' phi'^T] = E f(u) f(u') = nngp'``, the dual); the NTK
  ``ntk' = E[f'(u) f'(u')] * ntk`` is a product kernel, sketched without the tensor product
  (as in the random features of Han et al. 2022, "Fast neural kernel embeddings for general
  activations" / "Random features for the neural tangent kernel"):
  ``T'_m = f'(u_m) (T q_m) / sqrt(M)`` with ``q_m ~ N(0, I)`` independent of ``u`` --
  ``E[T' T'^T] = E[f'(u) f'(u')] T T^T``.  For ReLU ``f'`` is the step function.
* the output is brought to exactly ``F`` columns: extra columns are added, with random signs,
  onto random columns (a count sketch: unbiased), missing ones are zero.

Every step is unbiased given the previous features; a nonlinearity after a random estimate
is biased by ``O(1/F)`` (the dual is non-linear), below the ``O(1/sqrt(F))`` fluctuation, so
the error falls like ``1 / sqrt(F)`` (tests/scale/test_features.py).  The sampled matrices are
drawn once, from ``seed``, on the first call (they depend on the input dimension).

``method="snnk"`` (Scalable Neural Network Kernels, Sehanobish, Choromanski et al., ICLR 2024;
:mod:`widelimit.scale.snnk`): the ReLU-SNNK feature map ``phi(x) = f(G^T x) / sqrt(M)``, whose
kernel ``E_g f(g^T x) f(g^T w)`` is the NNGP map above, with orthogonal random features: ``G``
in Haar-orthonormal blocks of ``min(D, 1024)`` columns with chi(D) lengths, so each column is
still ``N(0, I)`` (every step stays unbiased) at a lower variance (the NTK's ``q`` stay i.i.d.).
The same layers, composition and output conventions as ``"arccos"``.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from widelimit.layers.base import Layer

__all__ = ["RandomFeatures", "random_features"]

_GETS = ("nngp", "ntk")
_METHODS = ("arccos", "snnk")


def _flatten(net: "Layer") -> list:
    """The serial stack of supported layers, or a ValueError naming the first other layer."""
    from widelimit.layers.combinators import Identity, Serial
    from widelimit.layers.dense import Dense
    from widelimit.layers.nonlinear import ABRelu, Sign
    if isinstance(net, Serial):
        return [leaf for layer in net.layers for leaf in _flatten(layer)]
    if isinstance(net, Identity):
        return []
    if isinstance(net, (Dense, ABRelu, Sign)):
        if isinstance(net, Dense) and (isinstance(net.W_std, Tensor) or isinstance(net.b_std, Tensor)):
            raise TypeError(f"random_features: {net!r} has tensor W_std/b_std; pass floats.")
        return [net]
    raise ValueError(
        f"random_features supports serial stacks of Dense, Relu, LeakyRelu, ABRelu, Abs, Sign and "
        f"Identity layers (fully connected, on vectors); {type(net).__name__} is not supported "
        f"({net!r}). Use net.kernel_fn (or wl.batch) for this architecture.")


class RandomFeatures:
    """A random feature map ``phi(x) -> (N, n_features)`` of a network's NNGP or NTK.

    Made by :func:`random_features` (module docstring for the construction).  Calling it on
    (N, d) inputs (tensor or ndarray) returns features of the same kind; rows are processed in
    blocks of ``block_size`` rows (bounded memory for any N); ``out=`` (an (N, F) array, e.g.
    a ``numpy.memmap``) receives the result block by block instead of a new array.
    """

    def __init__(self, layers: list, n_features: int, get: str, seed: int,
                 dtype: Optional[torch.dtype], device: Any, block_size: Optional[int], method: str = "arccos"):
        self.layers, self.n_features, self.get, self.seed = layers, n_features, get, seed
        self.method = method
        self.dtype, self.device, self.block_size = dtype, device, block_size
        self.input_dim: Optional[int] = None
        self._params: list = []

    def _sample(self, d: int) -> None:
        """Draw every random matrix, in a fixed order, from ``seed`` (float64, on the CPU)."""
        from widelimit.layers.dense import Dense
        gen = torch.Generator().manual_seed(self.seed)
        ntk, m = self.get == "ntk", self.n_features
        dim, tdim, width, params = d, 0, d, []
        for layer in self.layers:
            if isinstance(layer, Dense):
                bias = layer.b_std is not None
                if ntk:  # [phi', W_std T] or [sqrt(n / s0) phi, 1, W_std T]: the same width
                    tdim = dim + (1 if bias else 0) + tdim
                dim += 1 if bias else 0
                params.append((layer, width))
                width = layer.out_dim * (layer.s[1] if layer.parameterization == "standard" else 1)
            else:
                g = self._gaussian(dim, m, gen)
                q = self._gaussian(tdim, m, gen, orthogonal=False) if ntk and tdim else None
                params.append((layer, g, q))
                has_deriv = getattr(layer, "a", 0.0) != 0.0 or getattr(layer, "b", 0.0) != 0.0
                dim, tdim = m, (m if q is not None and has_deriv else 0)
        out = tdim if ntk else dim
        extra = max(out - m, 0)
        fold = (torch.randint(0, m, (extra,), generator=gen),
                torch.randint(0, 2, (extra,), generator=gen, dtype=torch.float64) * 2 - 1)
        self._params, self._fold, self.input_dim = params, fold, d

    def _gaussian(self, dim: int, m: int, gen: torch.Generator, orthogonal: bool = True) -> Tensor:
        """(dim, m) projections with N(0, I) columns: i.i.d. (arccos) or in orthogonal blocks (snnk)."""
        if self.method == "snnk" and orthogonal:
            from widelimit.scale.snnk import orthogonal_gaussian
            return orthogonal_gaussian(dim, m, gen)
        return torch.randn(dim, m, generator=gen, dtype=torch.float64)

    def _block(self, x: Tensor) -> Tensor:
        from widelimit.layers.dense import Dense
        cast = lambda t: None if t is None else t.to(dtype=x.dtype, device=x.device)  # noqa: E731
        phi = x / math.sqrt(x.shape[1])
        t = x.new_zeros(x.shape[0], 0) if self.get == "ntk" else None
        ones = x.new_ones(x.shape[0], 1)
        for p in self._params:
            layer = p[0]
            if isinstance(layer, Dense):
                w, b = float(layer.W_std), layer.b_std
                new = [w * phi] + ([float(b) * ones] if b is not None else [])
                if t is not None:
                    if layer.parameterization == "ntk":
                        t = torch.cat(new + [w * t], dim=1)
                    else:
                        scale = math.sqrt(p[1] / layer.s[0])
                        t = torch.cat([scale * phi] + ([ones] if b is not None else []) + [w * t], dim=1)
                phi = torch.cat(new, dim=1) if len(new) > 1 else new[0]
            else:
                g, q = cast(p[1]), cast(p[2])
                u = phi @ g
                root = math.sqrt(g.shape[1])
                if t is not None:
                    t = self._derivative(layer, u, t, q, root)
                phi = layer.fn(u) / root
        return self._fit(t if self.get == "ntk" else phi)

    @staticmethod
    def _derivative(layer, u: Tensor, t: Tensor, q: Optional[Tensor], root: float) -> Tensor:
        """``T'_m = f'(u_m) (T q_m) / sqrt(M)``; f' of ABRelu(a, b) is b on u > 0, a on u < 0."""
        a, b = getattr(layer, "a", 0.0), getattr(layer, "b", 0.0)
        if q is None or (a == 0.0 and b == 0.0):  # Sign (derivative 0 as in neural-tangents) or no NTK yet
            return u.new_zeros(u.shape[0], 0)
        deriv = torch.where(u > 0, b / root, a / root)
        return deriv.mul_(t @ q)

    def _fit(self, f: Tensor) -> Tensor:
        m = self.n_features
        if f.shape[1] < m:
            return torch.cat([f, f.new_zeros(f.shape[0], m - f.shape[1])], dim=1)
        if f.shape[1] == m:
            return f
        idx, sign = self._fold
        out = f[:, :m].clone()
        out.index_add_(1, idx.to(f.device), f[:, m:] * sign.to(dtype=f.dtype, device=f.device))
        return out

    def __call__(self, x: Any, *, out: Any = None, block_size: Optional[int] = None) -> Any:
        """Features of ``x`` (N, d): an (N, n_features) tensor, or ndarray for ndarray inputs."""
        is_np = isinstance(x, np.ndarray)
        if not isinstance(x, (Tensor, np.ndarray)):
            raise TypeError(f"`x` must be a torch.Tensor or numpy.ndarray of shape (N, d), got {type(x).__name__}.")
        if x.ndim != 2 or x.shape[1] == 0:
            raise ValueError(f"`x` must have shape (N, d) with d >= 1 (vectors), got shape {tuple(x.shape)}.")
        n, d = x.shape
        if self.input_dim is None:
            self._sample(d)
        elif d != self.input_dim:
            raise ValueError(f"`x` has {d} columns; these features were drawn for inputs of dimension {self.input_dim}.")
        if out is not None and (tuple(out.shape) != (n, self.n_features)):
            raise ValueError(f"`out` must have shape {(n, self.n_features)}, got {tuple(out.shape)}.")
        bs = block_size if block_size is not None else (self.block_size or self._default_block(d))
        if not (isinstance(bs, int) and bs >= 1):
            raise ValueError(f"`block_size` must be a positive integer, got {bs!r}.")
        tdt = self.dtype or _torch_dtype(x)
        device = self.device or (x.device if isinstance(x, Tensor) else None)
        result = out
        if result is None:
            result = torch.empty(n, self.n_features, dtype=tdt, device=device)
        for start in range(0, n, bs):
            xb = x[start:start + bs]
            xb = torch.from_numpy(np.ascontiguousarray(xb)) if is_np else xb
            xb = xb.to(dtype=tdt, device=device)
            if not bool(torch.isfinite(xb).all()):  # checked per block: bounded memory for any N
                raise ValueError(f"`x` has non-finite entries (NaN or inf) in rows {start}..{start + len(xb) - 1}.")
            with torch.no_grad():
                fb = self._block(xb)
            if isinstance(result, Tensor):
                result[start:start + bs] = fb.to(result.device)
            else:
                result[start:start + bs] = fb.cpu().numpy()
        if out is not None:
            return out
        return result.cpu().numpy() if is_np else result

    def _default_block(self, d: int) -> int:
        """Rows per block: about 256 MB of float64 intermediate features."""
        width = d + (4 if self.get == "ntk" else 2) * self.n_features + 2
        return max(1, min(65536, (256 << 20) // (8 * width)))

    def __repr__(self) -> str:
        return (f"RandomFeatures(n_features={self.n_features}, get={self.get!r}, method={self.method!r}, seed={self.seed}, "
                f"layers={self.layers!r})")


def _torch_dtype(x: Any) -> torch.dtype:
    """The inputs' floating dtype as a torch dtype (float64 for integer inputs)."""
    dt = x.dtype if isinstance(x, Tensor) else torch.from_numpy(np.empty(0, dtype=x.dtype)).dtype
    return dt if dt.is_floating_point else torch.float64


def random_features(net: "Layer", n_features: int, *, get: str = "nngp", method: str = "arccos", seed: int = 0,
                    dtype: Optional[torch.dtype] = None, device: Union[None, str, torch.device] = None,
                    block_size: Optional[int] = None) -> RandomFeatures:
    """Random features of ``net``'s NNGP or NTK: ``phi(x1) @ phi(x2).T ~ net.kernel_fn(x1, x2, get=get)``.

    Arc-cosine random features (Cho & Saul 2009) composed layer by layer, with a sketched
    product for the NTK's derivative kernels (module docstring; error ~ ``1 / sqrt(n_features)``);
    ``method="snnk"`` draws the projections as orthogonal random features (ReLU-SNNK).

    Args:
        net: a serial stack of Dense, Relu, LeakyRelu, ABRelu, Abs, Sign and Identity layers
            (any depth, with or without biases, NTK or standard parametrization); other layers
            raise a ValueError naming them.
        n_features: the number of features ``F`` (positive int).
        get: ``"nngp"`` or ``"ntk"``.
        method: ``"arccos"`` (i.i.d. Gaussian projections) or ``"snnk"`` (Scalable Neural Network
            Kernels, Sehanobish et al. 2024: ReLU-SNNK features with orthogonal random features;
            same layers and conventions, lower error at equal ``n_features``).
        seed: the random matrices are drawn from it (same seed, same features).
        dtype: the features' dtype (default: the inputs' floating dtype, else float64).
        device: where the features are computed (default: the inputs' device).
        block_size: rows per block (default: about 256 MB of intermediates).
    """
    if not (isinstance(n_features, (int, np.integer)) and not isinstance(n_features, bool) and n_features >= 1):
        raise ValueError(f"`n_features` must be a positive integer, got {n_features!r}.")
    if get not in _GETS:
        raise ValueError(f"`get` must be one of {_GETS}, got {get!r}.")
    if method not in _METHODS:
        raise ValueError(f"`method` must be one of {_METHODS}, got {method!r}.")
    if not (isinstance(seed, (int, np.integer)) and not isinstance(seed, bool)):
        raise TypeError(f"`seed` must be an integer, got {seed!r}.")
    if block_size is not None and not (isinstance(block_size, int) and block_size >= 1):
        raise ValueError(f"`block_size` must be a positive integer, got {block_size!r}.")
    layers = _flatten(net)
    from widelimit.layers.dense import Dense
    if layers and not isinstance(layers[0], Dense):
        raise ValueError(f"random_features: {type(layers[0]).__name__} needs Gaussian pre-activations: "
                         "put a Dense layer before it (its input here is the raw network input).")
    return RandomFeatures(layers, int(n_features), get, int(seed), dtype, device, block_size, method)
