"""Structured derivatives: the NTK of linear, conv and batch-norm layers without Jacobians.

After Novak, Sohl-Dickstein & Schoenholz, "Fast Finite Width Neural Tangent Kernel"
(ICML 2022), section 4. For a layer ``y = W u`` applied at positions ``p`` (one position
for ``nn.Linear`` on (N, D) inputs, the patches of ``unfold(x)`` for a convolution) the
per-example Jacobian of the weight is a sum of outer products,

    dF_a(x_i) / dW = sum_p g_{i,a,p} (x) u_{i,p},     g_{i,a,p} = dF_a(x_i) / dy_{i,p},

so its NTK contribution is

    Theta^W_{ij,ab} = sum_{p,q} <g_{i,a,p}, g_{j,b,q}> <u_{i,p}, u_{j,q}>

(for ``nn.Linear`` on (N, D): cotangent grams times input grams, ``(G1 G2^T) * (X1 X2^T)``).
The cotangents ``g`` of every such layer come from ``O`` batched vjps with respect to
zero "probes" added to the layer outputs; the weight Jacobian is never materialised
unless that is cheaper (large spatial size, few channels: then it is formed from ``g``
and ``u`` with one batched GEMM). Biases contribute ``<sum_p g_{i,a,p}, sum_q g_{j,b,q}>``;
batch norm in eval mode (scale ``gamma``, shift ``beta``) contributes through
``sum_p g * x_hat`` and ``sum_p g``. Every other parameter falls back to per-example
Jacobians (see ``_jacobian``).

Assumes examples are processed independently (true in eval mode for standard layers).
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import vjp

from widelimit.empirical._axes import OutAxes
from widelimit.empirical._jacobian import contract_jacobians, per_example_jacobians
from widelimit.empirical._mlp import mlp_chain, mlp_cotangents
from widelimit.empirical._model import ModelFn

__all__ = ["Structured"]

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass
class _Layer:
    name: str
    module: nn.Module
    kind: str  # "linear" | "conv" | "bn"
    w: str | None
    b: str | None
    calls: int = 0
    y_shape: tuple[int, ...] = ()
    x_shape: tuple[int, ...] = ()
    extra: dict = field(default_factory=dict)

    @property
    def channels(self) -> int:
        return self.y_shape[-1] if self.kind == "linear" else self.y_shape[0]

    @property
    def positions(self) -> int:
        ys = self.y_shape[:-1] if self.kind == "linear" else self.y_shape[1:]
        return math.prod(ys)

    @property
    def fan_in(self) -> int:
        if self.kind == "linear":
            return self.x_shape[-1]
        if self.kind == "conv":
            return self.module.weight[0].numel()
        return 1


def _kind(m: nn.Module) -> str | None:
    t = type(m)
    if t is nn.Linear or getattr(m, "structured_kind", None) == "linear":
        # modules computing ``weight_multiplier * u W^T + bias_multiplier * b`` (e.g.
        # widelimit's own Dense in NTK parametrization) declare structured_kind = "linear"
        return "linear"
    if t in (nn.Conv1d, nn.Conv2d) and m.groups == 1 and m.padding_mode == "zeros":
        return "conv"
    if t in _BN and m.affine and m.track_running_stats and m.running_mean is not None:
        return "bn"
    return None


def _unfold(m: nn.Module, x: Tensor) -> Tensor:
    """Patches of a Conv1d/Conv2d input: (n, C_in*prod(kernel), positions)."""
    one_d = isinstance(m, nn.Conv1d)
    if one_d:
        x = x.unsqueeze(2)
    ks, st, dil = m.kernel_size, m.stride, m.dilation
    pad = m.padding
    if one_d:
        ks, st, dil = (1, ks[0]), (1, st[0]), (1, dil[0])
    if isinstance(pad, str):
        if pad == "valid":
            pad = (0, 0)
        else:  # "same" (stride 1): possibly asymmetric padding
            tot = [d * (k - 1) for d, k in zip(dil, ks)]
            lr = []
            for t in reversed(tot):
                lr += [t // 2, t - t // 2]
            x = F.pad(x, lr)
            pad = (0, 0)
    elif one_d:
        pad = (0, pad[0])
    return F.unfold(x, ks, dilation=dil, padding=pad, stride=st)


class Structured:
    """Structured-derivative NTK for linear / conv / batch-norm layers, Jacobians elsewhere.

    Time ``N·O·[FP]`` for the cotangents plus, per layer, ``N1·N2·O²·(D + C)`` for a dense
    layer (``D`` inputs, ``C`` outputs) instead of ``N1·N2·O²·D·C``; memory ``N·O·C``
    per layer instead of ``N·O·D·C``.
    """

    def __init__(self, mf: ModelFn, axes: OutAxes, x_example: Tensor,
                 max_bytes: int = 2 * 2**30) -> None:
        self.mf, self.axes, self.max_bytes = mf, axes, max_bytes
        self.layers = self._find_layers(x_example)
        done = {p for l in self.layers for p in (l.w, l.b) if p}
        self.others = [n for n in mf.names if n not in done]
        self.replicate_inputs = False   # set when replicating at the first probe fails
        self.chain: Any = None           # the MLP chain (_mlp.py), False if not an MLP

    def _find_layers(self, x: Tensor) -> list[_Layer]:
        model, selected = self.mf.model, set(self.mf.names)
        owners = Counter(id(p) for m in model.modules() for p in m._parameters.values()
                         if p is not None)
        layers = []
        for name, m in model.named_modules():
            kind = _kind(m)
            if kind is None:
                continue
            pre = name + "." if name else ""
            w = pre + "weight" if pre + "weight" in selected and owners[id(m.weight)] == 1 else None
            b = None
            if m.bias is not None and pre + "bias" in selected and owners[id(m.bias)] == 1:
                b = pre + "bias"
            if w or b:
                layers.append(_Layer(name, m, kind, w, b))

        theta = self.mf.theta

        def hook(mod, inp, out, layer):
            layer.calls += 1
            # the module must use exactly the tensors we differentiate (not, e.g., copies
            # swapped in by a nested functional_call, as in a linearised model)
            if (layer.w and mod.weight is not theta[layer.w]) or (
                    layer.b and mod.bias is not theta[layer.b]):
                layer.calls += 1000
            layer.x_shape = tuple(inp[0].shape[1:]) if inp and isinstance(inp[0], Tensor) else ()
            layer.y_shape = tuple(out.shape[1:]) if isinstance(out, Tensor) else ()

        handles = [l.module.register_forward_hook(
            lambda mod, inp, out, l=l: hook(mod, inp, out, l)) for l in layers]
        try:
            with torch.no_grad():
                self.mf(self.mf.theta, x[:1])
        finally:
            for h in handles:
                h.remove()
        ok = []
        for l in layers:
            if l.calls != 1 or not l.y_shape or not l.x_shape:
                continue  # reused or unused module: handled by Jacobians
            ok.append(l)
        return ok

    # ----------------------------------------------------------------- per block
    def _cotangents(self, x: Tensor) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        n, axes, layers = x.shape[0], self.axes, self.layers
        if self.chain is None:
            self.chain = mlp_chain(self.mf.model, layers, self.others, axes.out_shape,
                                   self.mf.kwargs) or False
        if self.chain and x.ndim == 2:
            return mlp_cotangents(self.mf, self.chain, x, axes.out_size)

        def f(pr: dict[str, Tensor], x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
            acts: dict[str, Tensor] = {}

            def hook(mod, inp, out, l):
                u = inp[0]
                if l.kind == "bn":
                    shape = (1, -1) + (1,) * (u.ndim - 2)
                    u = (u - mod.running_mean.view(shape)) / torch.sqrt(
                        mod.running_var.view(shape) + mod.eps)
                acts[l.name] = u
                probe = pr[l.name]
                if out.shape[0] != probe.shape[0]:   # first probed layer: replicate from here on
                    out = out.repeat(probe.shape[0] // out.shape[0], *(1,) * (out.ndim - 1))
                return out + probe

            handles = [l.module.register_forward_hook(
                lambda mod, inp, out, l=l: hook(mod, inp, out, l)) for l in layers]
            try:
                out = self.mf(self.mf.theta, x)
            finally:
                for h in handles:
                    h.remove()
            return out, acts

        # One vjp per output coordinate o, batched by replicating the examples: row (o, i)
        # of the replicated batch gets the one-hot cotangent e_o.  Examples are
        # independent, so this is O backward passes done as one batched pass of plain
        # matrix products (a vmap over the basis turns them into stride-0 bmm calls,
        # measured 30x slower for 2048-wide layers).  The replication happens at the
        # output of the first probed layer, so everything before it (for an MLP the widest
        # layer, 784 x 512) runs once, not O times; a model that mixes that output with an
        # earlier tensor (a skip from the input) cannot, and gets replicated inputs.
        o = axes.out_size
        per_row = n * sum(math.prod(l.y_shape) for l in layers) * x.element_size()
        chunk = max(1, min(o, self.max_bytes // max(1, 4 * per_row)))
        eye = torch.eye(o, dtype=x.dtype, device=x.device).reshape(o, 1, *axes.out_shape)
        parts: list[dict[str, Tensor]] = []
        acts: dict[str, Tensor] = {}
        for start in range(0, o, chunk):
            c = min(chunk, o - start)
            probes = {l.name: torch.zeros((c * n, *l.y_shape), dtype=x.dtype, device=x.device)
                      for l in layers}
            if not self.replicate_inputs:
                try:
                    out, vjp_fn, acts_r = vjp(lambda pr: f(pr, x), probes, has_aux=True)
                    self.replicate_inputs = out.shape[0] != c * n
                except RuntimeError:
                    self.replicate_inputs = True
            if self.replicate_inputs:
                xr = x.repeat(c, *([1] * (x.ndim - 1)))
                _, vjp_fn, acts_r = vjp(lambda pr: f(pr, xr), probes, has_aux=True)
            basis = eye[start:start + c].expand(c, n, *axes.out_shape).reshape(c * n, *axes.out_shape)
            (gc,) = vjp_fn(basis)
            parts.append({k: v.reshape(c, n, *v.shape[1:]) for k, v in gc.items()})
            if not acts:
                acts = {k: v[:n] for k, v in acts_r.items()}
        g = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        return g, acts

    def _materialize(self, l: _Layer, n: int) -> bool:
        """Form the weight Jacobian (True) or keep it factored as (g, u) (False)?"""
        p, c, d = l.positions, l.channels, l.fan_in
        if p == 1:
            return False
        axes = self.axes
        res = math.prod(axes.res_shape)
        mat_flops = 2 * n * axes.out_size * c * p * d + n * n * axes.pairs * c * d
        fac_flops = n * n * (p * p * d + axes.pairs * c * p * p)
        mat_mem = n * axes.out_size * c * d
        fac_mem = n * n * (res + 1) * p * p
        mat = mat_flops <= fac_flops
        budget = self.max_bytes // 8
        if mat and mat_mem > budget and fac_mem < mat_mem:
            mat = False
        elif not mat and fac_mem > budget and mat_mem < fac_mem:
            mat = True
        return mat

    def prepare(self, x: Tensor) -> dict[str, Any]:
        n, axes = x.shape[0], self.axes
        nd, out_shape = len(axes.out_shape), axes.out_shape
        dense: list[Tensor] = []
        factored: list[tuple[Tensor, Tensor]] = []
        if self.layers:
            g, acts = self._cotangents(x)
            for l in self.layers:
                c, p = l.channels, l.positions
                gl, u = g[l.name], acts[l.name]
                if l.kind == "linear":  # y (n, *T, C), u (n, *T, D)
                    G = gl.reshape(-1, n, p, c).transpose(-1, -2)
                    u = u.reshape(n, p, -1).transpose(1, 2)
                else:
                    G = gl.reshape(-1, n, c, p)
                    u = _unfold(l.module, u) if l.kind == "conv" else u.reshape(n, c, p)
                G = G.movedim(0, 1).reshape(n, *out_shape, c, p)
                if l.kind == "bn":
                    if l.w:
                        dense.append((G * u.view(n, *(1,) * nd, c, p)).sum(-1))
                    if l.b:
                        dense.append(G.sum(-1))
                    continue
                wm = getattr(l.module, "weight_multiplier", 1.0)
                bm = getattr(l.module, "bias_multiplier", 1.0)
                if l.w:
                    if "mat" not in l.extra:  # decided once so that all blocks agree
                        l.extra["mat"] = self._materialize(l, n)
                    if l.extra["mat"]:
                        dense.append(torch.einsum("i...cp,idp->i...cd", G * wm, u).reshape(
                            n, *out_shape, -1))
                    elif p == 1 and l.b:
                        # weight and bias share the cotangent gram: <g, g'> (wm^2 <u, u'> + bm^2)
                        factored.append((G, u, wm * wm, bm * bm))
                        continue
                    else:
                        factored.append((G, u, wm * wm, None))
                if l.b:
                    dense.append((G * bm).sum(-1))
        small = [d for d in dense if d.shape[-1] < 4096]
        dense = [d for d in dense if d.shape[-1] >= 4096]
        if small:
            dense.append(torch.cat(small, -1))
        if self.others:
            dense += list(per_example_jacobians(self.mf, x, self.others, nd).values())
        return {"dense": dense, "factored": factored}

    def pair(self, f1: dict[str, Any], f2: dict[str, Any]) -> Tensor:
        axes = self.axes
        sym = f1 is f2
        dense1 = dict(enumerate(f1["dense"]))
        total = contract_jacobians(dense1, dense1 if sym else dict(enumerate(f2["dense"])),
                                   axes) if f1["dense"] else None
        nres = len(axes.res_shape)
        for (g1, u1, w2, b2), (g2, u2, _, _) in zip(f1["factored"], f2["factored"]):
            n1, n2, p = g1.shape[0], g2.shape[0], u1.shape[-1]
            if p == 1:
                ug = u1[..., 0] @ u2[..., 0].T
                ug = (ug * w2 if b2 is None else ug * w2 + b2).view(n1, n2, *(1,) * nres)
                k = axes.contract(g1[..., 0], g2[..., 0], sym)      # a fresh tensor
                if total is None:
                    total = k.mul_(ug)
                else:
                    total.addcmul_(k, ug)                            # one pass, no temporary
                continue
            else:
                ug = torch.einsum("idp,jdq->ijpq", u1, u2) * w2
                s = torch.einsum(f"i{axes.s1}cp,j{axes.s2}cq->ij{axes.res}pq", g1, g2)
                k = (s * ug.view(n1, n2, *(1,) * nres, p, p)).sum((-2, -1))
            total = k if total is None else total + k
        if total is None:
            raise RuntimeError("structured NTK found no parameters")
        return total

    # ----------------------------------------------------------------- estimates
    def flops(self, n1: int, n2: int, fwd: int) -> float:
        """Rough FLOP count of the whole computation (for ``implementation="auto"``)."""
        axes, n = self.axes, max(n1, n2)
        o, pairs = axes.out_size, axes.pairs
        total = 2.0 * (n1 + n2) * o * fwd if self.layers else 0.0
        for l in self.layers:
            c, p, d = l.channels, l.positions, l.fan_in
            if self._materialize(l, n):
                total += 2 * (n1 + n2) * o * c * p * d + 2 * n1 * n2 * pairs * c * d
            else:
                total += 2 * n1 * n2 * (p * p * d + pairs * c * p * p)
            total += 2 * n1 * n2 * pairs * c
        if self.others:
            n_other = sum(self.mf.theta[k].numel() for k in self.others)
            total += 3.0 * (n1 + n2) * o * fwd + 2.0 * n1 * n2 * pairs * n_other
        return total

    def forward_flops(self) -> int:
        """FLOPs of one forward pass on one example spent in the structured layers."""
        return sum(2 * l.channels * l.positions * l.fan_in for l in self.layers)

    def bytes_per_example(self, itemsize: int) -> int:
        o = self.axes.out_size
        per = sum(math.prod(l.y_shape) + math.prod(l.x_shape) for l in self.layers)
        n_other = sum(self.mf.theta[k].numel() for k in self.others)
        return o * (per + n_other) * itemsize
