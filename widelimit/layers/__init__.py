"""Layers with an infinite-width kernel rule and a finite torch module (``stax`` style)."""
from widelimit.layers.base import Layer
from widelimit.layers.combinators import (FanInConcat, FanInProd, FanInSum, FanOut, Identity,
                                          parallel, repeat, serial)
from widelimit.layers.attention import GlobalSelfAttention
from widelimit.layers.conv import Conv, ConvLocal, ConvTranspose
from widelimit.layers.dense import Dense
from widelimit.layers.graph import Aggregate
from widelimit.layers.nonlinear import (ABRelu, Abs, Cos, Elementwise, Erf, Exp, ExpNormalized,
                                        Gabor, Gaussian, Gelu, Hermite, LeakyRelu, Monomial,
                                        Nonlinearity, Polynomial, Rbf, RectifiedMonomial, Relu, Sigmoid_like,
                                        Sign, Silu, Sin, Softplus, Tanh)
from widelimit.layers.normalization import Dropout, LayerNorm
from widelimit.layers.pool import AvgPool, GlobalAvgPool, GlobalSumPool, SumPool
from widelimit.layers.reshape import Flatten, Index, Slice
from widelimit.layers.resize import ImageResize
from widelimit.layers.spec import SpecError, from_dict, from_json, register_function

__all__ = [
    "Layer", "serial", "parallel", "repeat", "FanOut", "FanInSum", "FanInProd", "FanInConcat",
    "Identity", "Dense", "Nonlinearity", "ABRelu", "Abs", "Cos", "Elementwise", "Erf", "Exp",
    "ExpNormalized", "Gabor", "Gaussian", "Gelu", "Hermite", "LeakyRelu", "Monomial", "Polynomial",
    "Rbf", "RectifiedMonomial", "Relu", "Sigmoid_like", "Sign", "Silu", "Sin", "Softplus", "Tanh",
    "Dropout", "LayerNorm",
    "Conv", "ConvLocal", "ConvTranspose", "AvgPool", "SumPool", "GlobalAvgPool", "GlobalSumPool", "Flatten",
    "GlobalSelfAttention", "Aggregate", "Index", "Slice",
    "ImageResize",
    "from_json", "from_dict", "register_function", "SpecError",
]
