"""Architectures written once against a ``stax``-like namespace.

The same function builds a neural-tangents network (``build(neural_tangents.stax)``)
and a widelimit one (``build(widelimit.layers)``), so the reference values and the
tests cannot drift apart.  Only names common to both libraries are used.
"""
import numpy as np


def inputs(n1=6, n2=4, d=7, seed=0):
    rng = np.random.default_rng(seed)
    x1 = rng.standard_normal((n1, d))
    x2 = rng.standard_normal((n2, d))
    x2[0] = x1[0]                     # an identical pair
    x2[1] = x1[1] * 1.0000001         # a nearly collinear pair
    return x1, x2


def _unwrap(layer):
    return layer


def _mlp(S, act, depth=2, param="ntk", W=1.5, b=0.05, width=512):
    layers = []
    for _ in range(depth):
        layers += [S.Dense(width, W_std=W, b_std=b, parameterization=param), act]
    layers += [S.Dense(1, W_std=W, b_std=b, parameterization=param)]
    return S.serial(*layers)


def _resnet(S):
    block = S.serial(S.FanOut(2), S.parallel(S.serial(S.Relu(), S.Dense(256, W_std=1.3, b_std=0.1)),
                                             S.Identity()), S.FanInSum())
    return S.serial(S.Dense(256, W_std=1.4, b_std=0.1), block, block, S.Relu(),
                    S.Dense(1, W_std=1.2, b_std=0.2))


ARCHITECTURES = {
    "relu": lambda S: _mlp(S, S.Relu()),
    "relu_standard": lambda S: _mlp(S, S.Relu(), param="standard"),
    "relu_nobias": lambda S: _mlp(S, S.Relu(), b=None),
    "leaky": lambda S: _mlp(S, S.LeakyRelu(0.2)),
    "abrelu": lambda S: _mlp(S, S.ABRelu(-0.3, 1.2)),
    "abs": lambda S: _mlp(S, S.Abs()),
    "erf": lambda S: _mlp(S, S.Erf(a=1.2, b=0.7, c=0.1)),
    "sigmoid_like": lambda S: _mlp(S, S.Sigmoid_like()),
    "gelu": lambda S: _mlp(S, S.Gelu()),
    "sign": lambda S: _mlp(S, S.Sign(), depth=1),
    "sin": lambda S: _mlp(S, S.Sin(a=1.1, b=0.9, c=0.3)),
    "cos": lambda S: _mlp(S, S.Cos(a=1.0, b=0.8, c=0.0)),
    "rbf": lambda S: _mlp(S, S.Rbf(gamma=0.4), depth=1),
    "gabor": lambda S: _mlp(S, S.Gabor()),
    "exp": lambda S: _mlp(S, S.Exp(a=0.7, b=0.4), W=1.0),
    "expnormalized": lambda S: _mlp(S, S.ExpNormalized(gamma=0.8, shift=-1.0)),
    "gaussian": lambda S: _mlp(S, S.Gaussian(a=1.0, b=-0.6)),
    "hermite3": lambda S: S.serial(S.Dense(512, W_std=1.0, b_std=None), S.LayerNorm(),
                                   S.Hermite(3), S.Dense(1, W_std=1.0, b_std=None)),
    "monomial3": lambda S: _mlp(S, S.Monomial(3), depth=1, W=0.8),
    "rectified_monomial2": lambda S: _mlp(S, S.RectifiedMonomial(2), depth=1, W=0.9),
    "polynomial": lambda S: _mlp(S, S.Polynomial([0.1, -0.5, 0.3, 0.2]), depth=1, W=0.8),
    "layernorm": lambda S: S.serial(S.Dense(512, W_std=1.5, b_std=0.3), S.LayerNorm(), S.Relu(),
                                    S.Dense(512, W_std=1.2, b_std=0.1), S.LayerNorm(), S.Erf(),
                                    S.Dense(1, W_std=1.0, b_std=0.1)),
    "resnet": _resnet,
    "prod_concat": lambda S: S.serial(
        S.Dense(128, W_std=1.2, b_std=0.1), S.FanOut(3),
        S.parallel(S.Relu(), S.Erf(), S.serial(S.Gelu(), S.Dense(64, W_std=1.0, b_std=0.2))),
        S.FanInConcat(), S.Dense(32, W_std=1.1, b_std=0.1), S.FanOut(2),
        S.parallel(S.Identity(), S.Dense(32, W_std=0.9, b_std=0.0)), S.FanInProd(),
        S.Dense(1, W_std=1.0, b_std=0.1)),
    "deep20": lambda S: _mlp(S, S.Relu(), depth=20),
}
