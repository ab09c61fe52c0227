"""Architecture specs: any layer as a JSON document, and back.

Every :class:`~widelimit.layers.Layer` records the arguments it was constructed with
(``Layer.__init_subclass__`` wraps each subclass's ``__init__``), so an architecture is
serialised as the tree of its constructor calls::

    {"format": "widelimit-architecture", "version": 1,
     "architecture": {"layer": "Serial", "args": [
         {"layer": "Dense", "args": [512], "kwargs": {"W_std": 1.5, "b_std": 0.05}},
         {"layer": "Relu"}, ...]}}

and rebuilt by calling the same constructors again, so the rebuilt layer validates its
arguments as usual and computes the same kernels to the last bit.  Values are JSON
scalars and lists, plus ``{"tuple": [...]}``, ``{"slice": [start, stop, step]}``,
``{"float": "nan" | "inf" | "-inf"}``, ``{"tensor": [...], "dtype": "float64"}`` (also
for NumPy arrays, ``"ndarray"``) and ``{"function": NAME}`` for callables such as
``Elementwise``'s ``fn``, looked up in the function registry
(:func:`register_function`; common torch functions are registered).  Anything else,
an unknown layer or function name, a missing or misspelt field, or another format
version raises :class:`SpecError` naming the field.
"""
from __future__ import annotations

import json
import math
from typing import Any, Callable

import numpy as np
import torch

FORMAT = "widelimit-architecture"
VERSION = 1

_FUNCTIONS: dict[str, Callable] = {}
_LAYERS: dict[str, type] = {}


class SpecError(ValueError, TypeError):
    """An architecture that cannot be serialised, or a spec that cannot be read; the
    message names the field (e.g. ``architecture.args[1].kwargs.fn``).  A ValueError
    (bad spec) and a TypeError (unserialisable value) at once."""


def register_function(name: str, fn: Callable, *, overwrite: bool = False) -> None:
    """Make ``fn`` serialisable as ``{"function": name}`` (``Elementwise(fn)``, attention's
    ``pos_emb_decay_fn``).  Register it in every process that reads the spec too.

    Args:
        name: a non-empty string, unique in the registry.
        fn: the callable.
        overwrite: replace a different function already registered under ``name``.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"`name` must be a non-empty string, got {name!r}.")
    if not callable(fn):
        raise TypeError(f"`fn` must be callable, got {type(fn).__name__}.")
    old = _FUNCTIONS.get(name)
    if old is not None and old is not fn and not overwrite:
        raise ValueError(f"A different function is already registered as {name!r}; pass "
                         f"overwrite=True to replace it.")
    _FUNCTIONS[name] = fn


def _register_builtins() -> None:
    F = torch.nn.functional
    for fn in (torch.tanh, torch.sigmoid, torch.sin, torch.cos, torch.erf, torch.exp, torch.relu,
               torch.abs, torch.sign, torch.square, torch.atan, torch.sinh, torch.cosh):
        register_function(f"torch.{fn.__name__}", fn)
    for fn in (F.softplus, F.silu, F.gelu, F.elu, F.selu, F.mish, F.softsign, F.logsigmoid,
               F.hardtanh, F.leaky_relu):
        register_function(f"torch.nn.functional.{fn.__name__}", fn)


_register_builtins()


def register_layer(cls: type) -> None:
    """Called by ``Layer.__init_subclass__``: widelimit's layers by their class name, other
    subclasses by ``module.qualname`` (their module must be imported before reading)."""
    name = cls.__name__ if cls.__module__.startswith("widelimit.layers") else \
        f"{cls.__module__}.{cls.__qualname__}"
    _LAYERS[name] = cls
    setattr(cls, "_spec_name", name)


# -- encoding -------------------------------------------------------------------------
def _function_name(fn: Callable, field: str) -> str:
    for name, registered in _FUNCTIONS.items():
        if registered is fn:
            return name
    label = getattr(fn, "__qualname__", type(fn).__name__)
    raise SpecError(f"{field}: the function {label} is not registered; call "
                    f"widelimit.layers.register_function('some.name', fn) first (and in the "
                    f"process that reads the spec).")


def encode_value(v: Any, field: str) -> Any:
    from widelimit.layers.base import Layer
    if v is None or isinstance(v, (bool, str, int)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else {"float": repr(v)}
    if isinstance(v, Layer):
        return layer_to_node(v, field)
    if isinstance(v, tuple):
        return {"tuple": [encode_value(x, f"{field}[{i}]") for i, x in enumerate(v)]}
    if isinstance(v, list):
        return [encode_value(x, f"{field}[{i}]") for i, x in enumerate(v)]
    if isinstance(v, slice):
        return {"slice": [encode_value(x, f"{field}.{a}")
                          for a, x in zip(("start", "stop", "step"), (v.start, v.stop, v.step))]}
    if isinstance(v, torch.Tensor):
        if v.is_complex():
            raise SpecError(f"{field}: complex tensors are not supported.")
        data = v.detach().cpu()
        return {"tensor": data.tolist(), "dtype": str(data.dtype).removeprefix("torch.")}
    if isinstance(v, np.ndarray) and v.dtype.kind in "biuf":
        return {"ndarray": v.tolist(), "dtype": str(v.dtype)}
    if isinstance(v, (np.integer, np.floating, np.bool_)):
        return encode_value(v.item(), field)
    if callable(v):
        return {"function": _function_name(v, field)}
    raise SpecError(f"{field}: cannot serialise a value of type {type(v).__name__} ({v!r:.60}).")


def layer_to_node(layer, field: str = "architecture") -> dict:
    args, kwargs = layer.spec_arguments(field)
    node: dict[str, Any] = {"layer": type(layer)._spec_name}
    if args:
        node["args"] = [encode_value(a, f"{field}.args[{i}]") for i, a in enumerate(args)]
    if kwargs:
        node["kwargs"] = {k: encode_value(v, f"{field}.kwargs.{k}") for k, v in kwargs.items()}
    return node


def to_dict(layer) -> dict:
    """The spec of ``layer`` as a JSON-ready dict (``Layer.to_dict``)."""
    return {"format": FORMAT, "version": VERSION, "architecture": layer_to_node(layer)}


def to_json(layer, **json_kw) -> str:
    """The spec of ``layer`` as a JSON string; ``json_kw`` go to :func:`json.dumps`."""
    json_kw.setdefault("allow_nan", False)
    return json.dumps(to_dict(layer), **json_kw)


# -- decoding -------------------------------------------------------------------------
_SPECIAL = ("tuple", "slice", "float", "tensor", "ndarray", "function", "layer")


def decode_value(v: Any, field: str) -> Any:
    if v is None or isinstance(v, (bool, str, int, float)):
        return v
    if isinstance(v, list):
        return [decode_value(x, f"{field}[{i}]") for i, x in enumerate(v)]
    if not isinstance(v, dict):
        raise SpecError(f"{field}: unexpected JSON value of type {type(v).__name__}.")
    tags = [k for k in _SPECIAL if k in v]
    if len(tags) != 1:
        raise SpecError(f"{field}: an object must have exactly one of the keys {_SPECIAL}, got "
                        f"keys {sorted(v)}.")
    tag = tags[0]
    if tag == "layer":
        return node_to_layer(v, field)
    allowed = {tag, "dtype"} if tag in ("tensor", "ndarray") else {tag}
    _no_extra(v, allowed, field)
    body = v[tag]
    if tag == "tuple":
        if not isinstance(body, list):
            raise SpecError(f"{field}.tuple: expected a list, got {type(body).__name__}.")
        return tuple(decode_value(x, f"{field}.tuple[{i}]") for i, x in enumerate(body))
    if tag == "slice":
        if not isinstance(body, list) or len(body) != 3 or any(
                x is not None and not isinstance(x, int) for x in body):
            raise SpecError(f"{field}.slice: expected [start, stop, step] of integers or null, "
                            f"got {body!r}.")
        return slice(*body)
    if tag == "float":
        if body not in ("nan", "inf", "-inf"):
            raise SpecError(f"{field}.float: expected 'nan', 'inf' or '-inf', got {body!r}.")
        return float(body)
    if tag == "function":
        if body not in _FUNCTIONS:
            raise SpecError(f"{field}.function: no function registered as {body!r}; call "
                            f"widelimit.layers.register_function({body!r}, fn) before reading.")
        return _FUNCTIONS[body]
    return _decode_array(tag, body, v.get("dtype"), field)


def _decode_array(tag: str, body: Any, dtype: Any, field: str) -> Any:
    try:
        if tag == "tensor":
            tdtype = getattr(torch, str(dtype), None)
            if not isinstance(tdtype, torch.dtype):
                raise SpecError(f"{field}.dtype: not a torch dtype: {dtype!r}.")
            return torch.tensor(body, dtype=tdtype)
        return np.asarray(body, dtype=np.dtype(dtype))
    except SpecError:
        raise
    except (TypeError, ValueError) as e:
        raise SpecError(f"{field}.{tag}: not an array of dtype {dtype!r} ({e}).") from None


def _no_extra(d: dict, allowed: set, field: str) -> None:
    extra = sorted(set(d) - allowed)
    if extra:
        raise SpecError(f"{field}: unknown field(s) {extra}; expected only {sorted(allowed)}.")


def node_to_layer(node: Any, field: str = "architecture"):
    if not isinstance(node, dict) or "layer" not in node:
        raise SpecError(f"{field}: expected a layer object {{\"layer\": NAME, \"args\": [...], "
                        f"\"kwargs\": {{...}}}}, got {type(node).__name__}.")
    _no_extra(node, {"layer", "args", "kwargs"}, field)
    name = node["layer"]
    cls = _LAYERS.get(name) if isinstance(name, str) else None
    if cls is None:
        known = ", ".join(sorted(n for n in _LAYERS if not n.startswith("_") and "." not in n))
        raise SpecError(f"{field}.layer: unknown layer {name!r}; known: {known} (or a registered "
                        f"module.Class of an imported module).")
    args, kwargs = node.get("args", []), node.get("kwargs", {})
    if not isinstance(args, list):
        raise SpecError(f"{field}.args: expected a list, got {type(args).__name__}.")
    if not isinstance(kwargs, dict):
        raise SpecError(f"{field}.kwargs: expected an object, got {type(kwargs).__name__}.")
    args = [decode_value(a, f"{field}.args[{i}]") for i, a in enumerate(args)]
    kwargs = {k: decode_value(v, f"{field}.kwargs.{k}") for k, v in kwargs.items()}
    try:
        return cls(*args, **kwargs)
    except SpecError:
        raise
    except (TypeError, ValueError) as e:
        raise SpecError(f"{field}: {name}(...) rejected its arguments: {e}") from None


def from_dict(d: Any):
    """Rebuild a layer from :meth:`Layer.to_dict`'s dict; :class:`SpecError` on a bad spec."""
    if not isinstance(d, dict):
        raise SpecError(f"spec: expected a JSON object, got {type(d).__name__}.")
    if d.get("format") != FORMAT:
        raise SpecError(f"spec.format: expected {FORMAT!r}, got {d.get('format')!r}.")
    if d.get("version") != VERSION:
        raise SpecError(f"spec.version: this widelimit reads version {VERSION}, got "
                        f"{d.get('version')!r}.")
    _no_extra(d, {"format", "version", "architecture"}, "spec")
    if "architecture" not in d:
        raise SpecError("spec.architecture: missing.")
    return node_to_layer(d["architecture"])


def from_json(s: str | bytes):
    """Rebuild a layer from :meth:`Layer.to_json`'s string; :class:`SpecError` on a bad spec."""
    if not isinstance(s, (str, bytes, bytearray)):
        raise SpecError(f"spec: expected a JSON string, got {type(s).__name__}.")
    try:
        d = json.loads(s)
    except json.JSONDecodeError as e:
        raise SpecError(f"spec: not valid JSON ({e}).") from None
    return from_dict(d)
