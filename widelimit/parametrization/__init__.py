"""Parametrizations of torch models: SP, NTK, muP, mean-field and custom abc.

References: Yang & Hu 2021, "Feature Learning in Infinite-Width Neural
Networks" (abc-parametrizations, muP); Yang et al. 2022, "Tensor Programs V:
Tuning Large Neural Networks via Zero-Shot Hyperparameter Transfer"
(muTransfer, coordinate checks); Bordelon et al. 2023 / Yang et al. 2023
(depth scaling ``1/sqrt(L)``).
"""
from widelimit.parametrization.abc import ABC, MF, MUP, NTK, SCHEMES, SP, Row, abc, get_scheme
from widelimit.parametrization.coord_check import CoordCheckReport, coord_check
from widelimit.parametrization.coord_check_depth import DepthCoordCheckReport, coord_check_depth
from widelimit.parametrization.optim import SGD, Adam, AdamW, optimizer_kind, param_groups
from widelimit.parametrization.parametrize import get_registry, index, is_parametrized, parametrize
from widelimit.parametrization.readout import Readout, attention, attention_scale, depth_multiplier
from widelimit.parametrization.registry import ParamInfo, Registry, infer_dims

__all__ = [
    "ABC", "Row", "abc", "get_scheme", "SCHEMES", "SP", "NTK", "MUP", "MF",
    "parametrize", "get_registry", "is_parametrized", "index", "Registry", "ParamInfo", "infer_dims",
    "param_groups", "optimizer_kind", "SGD", "Adam", "AdamW",
    "Readout", "attention", "attention_scale", "depth_multiplier",
    "coord_check", "CoordCheckReport", "coord_check_depth", "DepthCoordCheckReport",
]
