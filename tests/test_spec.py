"""Architecture specs (widelimit.layers.spec): every layer of ``widelimit.layers.__all__``
survives to_json -> from_json with the same kernels to the last bit; bad specs raise
SpecError naming the field."""
import json

import numpy as np
import pytest
import torch

from widelimit import layers as L
from widelimit.layers.base import Layer


def _decay(d):
    return 1 / (1 + d)


L.register_function("tests.spec.decay", _decay, overwrite=True)
L.register_function("tests.spec.cubic", lambda x: x ** 3 - x, overwrite=True)
CUBIC = L.spec._FUNCTIONS["tests.spec.cubic"]

g = torch.Generator().manual_seed(0)
VEC = torch.randn(5, 4, dtype=torch.float64, generator=g)
VEC2 = torch.randn(3, 4, dtype=torch.float64, generator=g)
IMG = torch.randn(3, 2, 6, 6, dtype=torch.float64, generator=g)
SEQ = torch.randn(3, 2, 5, dtype=torch.float64, generator=g)        # (N, C, L)
TOKENS = torch.randn(3, 5, 4, dtype=torch.float64, generator=g)     # (N, L, d) channels last
GRAPH = torch.randn(3, 2, 4, dtype=torch.float64, generator=g)      # (N, C, n_nodes)
PATTERN = torch.tensor([[1., 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1], [1, 0, 0, 1]], dtype=torch.float64)


def fc(*mid):
    return L.serial(L.Dense(16, W_std=1.3, b_std=0.1), *mid, L.Dense(1, W_std=1.1))


def conv(*mid):
    return L.serial(L.Conv(8, (3, 3), padding="SAME", W_std=1.4, b_std=0.2), *mid,
                    L.Conv(8, (2, 2), strides=(2, 1)), L.Relu(), L.GlobalAvgPool(), L.Dense(1))


def residual():
    block = L.serial(L.Dense(16, W_std=1.2, b_std=0.1), L.Relu(), L.Dense(16))
    return L.serial(L.Dense(16), L.FanOut(2), L.parallel(block, L.Identity()), L.FanInSum(),
                    L.Relu(), L.Dense(1))


# name in widelimit.layers.__all__ -> [(architecture, inputs (x1, x2 or None), kernel_fn kwargs)]
EXAMPLES = {
    "serial": [(fc(L.Relu()), (VEC, VEC2), {})],
    "parallel": [(residual(), (VEC, None), {})],
    "repeat": [(L.serial(L.Dense(8), L.repeat(L.serial(L.Relu(), L.Dense(8, b_std=0.3)), 3)), (VEC, VEC2), {})],
    "FanOut": [(residual(), (VEC, VEC2), {})],
    "FanInSum": [(residual(), (VEC, None), {})],
    "FanInProd": [(L.serial(L.Dense(8), L.FanOut(2), L.parallel(L.Dense(4), L.Dense(4, b_std=0.2)), L.FanInProd(),
                            L.Dense(1)), (VEC, VEC2), {})],
    "FanInConcat": [(L.serial(L.Dense(8), L.FanOut(2), L.parallel(L.Relu(), L.Dense(3)),
                              L.FanInConcat(axis=-1), L.Dense(1)), (VEC, VEC2), {})],
    "Identity": [(fc(L.Identity(), L.Relu()), (VEC, None), {})],
    "Dense": [(L.serial(L.Dense(16, W_std=torch.tensor(1.7, dtype=torch.float64), b_std=0.0,
                                parameterization="standard", s=(2, 3)), L.Relu(), L.Dense(1)),
               (VEC, VEC2), {}),
              (L.serial(L.Dense(8, channel_axis=-1), L.Relu(), L.GlobalAvgPool(), L.Dense(1)),
               (TOKENS, None), {})],
    "ABRelu": [(fc(L.ABRelu(-0.3, 1.2)), (VEC, VEC2), {})],
    "Abs": [(fc(L.Abs()), (VEC, None), {})],
    "Cos": [(fc(L.Cos(a=1.1, b=0.7, c=0.2)), (VEC, VEC2), {})],
    "Elementwise": [(fc(L.Elementwise(CUBIC, n_radial=32, n_angular=12)), (VEC, VEC2), {})],
    "Erf": [(fc(L.Erf(a=2.0, b=0.5, c=0.1)), (VEC, VEC2), {})],
    "Exp": [(fc(L.Exp(a=0.5, b=0.3)), (VEC, VEC2), {})],
    "ExpNormalized": [(fc(L.ExpNormalized(gamma=0.8, shift=-0.5, do_clip=True)), (VEC, VEC2), {})],
    "Gabor": [(fc(L.Gabor()), (VEC, VEC2), {})],
    "Gaussian": [(fc(L.Gaussian(a=1.5, b=-0.5)), (VEC, VEC2), {})],
    "Gelu": [(fc(L.Gelu(approximate=True)), (VEC, VEC2), {})],
    "Hermite": [(fc(L.LayerNorm(axis=-1), L.Hermite(3)), (VEC, VEC2), {})],
    "LeakyRelu": [(fc(L.LeakyRelu(0.1)), (VEC, VEC2), {})],
    "Monomial": [(fc(L.Monomial(2)), (VEC, VEC2), {})],
    "Polynomial": [(fc(L.Polynomial([0.1, -0.5, 0.25])), (VEC, VEC2), {})],
    "Rbf": [(fc(L.Rbf(gamma=0.4)), (VEC, VEC2), {})],
    "RectifiedMonomial": [(fc(L.RectifiedMonomial(2)), (VEC, VEC2), {})],
    "Relu": [(fc(L.Relu(do_stabilize=True)), (VEC, VEC2), {})],
    "Sigmoid_like": [(fc(L.Sigmoid_like()), (VEC, VEC2), {})],
    "Sign": [(fc(L.Sign()), (VEC, VEC2), {})],
    "Silu": [(fc(L.Silu()), (VEC, VEC2), {})],
    "Sin": [(fc(L.Sin(a=0.9, b=1.3, c=-0.4)), (VEC, VEC2), {})],
    "Softplus": [(fc(L.Softplus(n_radial=40)), (VEC, VEC2), {})],
    "Tanh": [(fc(L.Tanh()), (VEC, VEC2), {})],
    "Dropout": [(fc(L.Relu(), L.Dense(8), L.Dropout(0.8)), (VEC, None), {}),
                (fc(L.Dropout(0.5, mode="test")), (VEC, VEC2), {})],
    "LayerNorm": [(conv(L.LayerNorm(axis=1, eps=1e-6), L.Relu()), (IMG, None), {})],
    "Conv": [(conv(L.Relu()), (IMG, IMG[:2]), {}),
             (L.serial(L.Conv(4, (3,), padding="CIRCULAR", parameterization="standard"), L.Relu(),
                       L.Flatten(), L.Dense(1)), (SEQ, None), {})],
    "ConvLocal": [(L.serial(L.ConvLocal(4, (3, 3), b_std=0.1), L.Relu(), L.Flatten(), L.Dense(1)),
                   (IMG, None), {})],
    "ConvTranspose": [(L.serial(L.ConvTranspose(4, (2, 2), strides=(2, 2)), L.Relu(),
                                L.GlobalSumPool(), L.Dense(1)), (IMG, None), {})],
    "AvgPool": [(L.serial(L.Conv(4, (3, 3)), L.Relu(), L.AvgPool((2, 2), padding="SAME",
                                                                  normalize_edges=True),
                          L.Flatten(), L.Dense(1)), (IMG, None), {})],
    "SumPool": [(L.serial(L.Conv(4, (3, 3)), L.Relu(), L.SumPool((2, 2), strides=(1, 2)),
                          L.Flatten(), L.Dense(1)), (IMG, None), {})],
    "GlobalAvgPool": [(conv(L.Erf()), (IMG, None), {})],
    "GlobalSumPool": [(L.serial(L.Conv(4, (3,)), L.Relu(), L.GlobalSumPool(), L.Dense(1)),
                       (SEQ, None), {})],
    "Flatten": [(L.serial(L.Conv(4, (3, 3)), L.Relu(), L.Flatten(), L.Dense(1)), (IMG, IMG[:1]), {})],
    "GlobalSelfAttention": [
        (L.serial(L.Conv(8, (1,)), L.GlobalSelfAttention(8, 4, 4, 2, W_key_std=1.2, b_std=0.1,
                                                         attention_mechanism="RELU"),
                  L.Relu(), L.GlobalAvgPool(), L.Dense(1)), (SEQ, None), {}),
        (L.serial(L.Conv(8, (1,)), L.GlobalSelfAttention(8, 4, 4, 1, pos_emb_type="CONCAT",
                                                         pos_emb_decay_fn=_decay, n_chan_pos_emb=4),
                  L.Relu(), L.GlobalAvgPool(), L.Dense(1)), (SEQ, None), {}),
        # masks: variable-length sequences padded with NaN
        (L.serial(L.Conv(8, (1,)), L.GlobalSelfAttention(8, 4, 4, 1), L.Relu(), L.GlobalAvgPool(),
                  L.Dense(1)), (torch.cat([SEQ[:, :, :3], torch.full((3, 2, 2), float("nan"),
                                                                     dtype=torch.float64)], 2), None),
         {"mask_constant": float("nan")}),
    ],
    "Aggregate": [(L.serial(L.Conv(4, (1,)), L.Relu(), L.Aggregate(PATTERN), L.Conv(4, (1,)), L.Erf(),
                            L.Aggregate(edges=np.array([[0, 1], [1, 2], [2, 3]]), n_nodes=4),
                            L.GlobalAvgPool(), L.Dense(1)), (GRAPH, GRAPH[:2]), {})],
    "Index": [(L.serial(L.Conv(4, (3, 3), padding="SAME"), L.Relu(),
                        L.Index((slice(None), slice(None), slice(1, -1), 2)), L.Flatten(), L.Dense(1)),
               (IMG, None), {})],
    "Slice": [(L.serial(L.Conv(4, (3,)), L.Relu(), L.Slice[:, 1:3, ::2], L.Flatten(), L.Dense(1)),
               (SEQ, None), {})],
    "ImageResize": [(L.serial(L.Conv(4, (3, 3)), L.Relu(), L.ImageResize((-1, -1, 5, 3), "linear",
                                                                         antialias=False),
                              L.GlobalAvgPool(), L.Dense(1)), (IMG, None), {})],
}
# public names that are not layers (or are abstract bases)
NOT_LAYERS = {"Layer", "Nonlinearity", "from_json", "from_dict", "register_function", "SpecError"}

CASES = [(name, i) for name, cases in EXAMPLES.items() for i in range(len(cases))]


def test_every_public_layer_has_a_round_trip_case():
    missing = [n for n in L.__all__ if n not in EXAMPLES and n not in NOT_LAYERS]
    assert not missing, f"add round-trip cases to tests/test_spec.py for {missing}"
    assert not set(EXAMPLES) - set(L.__all__)


def _concrete_subclasses(cls):
    for sub in cls.__subclasses__():
        if sub.__module__.startswith("widelimit.layers") and not sub.__name__.startswith("_"):
            yield sub
        yield from _concrete_subclasses(sub)


def test_every_layer_class_is_covered():
    used = {type(layer) for cases in EXAMPLES.values() for net, _, _ in cases for layer in net.walk()}
    missing = {c.__name__ for c in _concrete_subclasses(Layer)} - {c.__name__ for c in used} - NOT_LAYERS
    assert not missing, f"no round-trip case builds {sorted(missing)}"


@pytest.mark.parametrize("name,i", CASES)
def test_round_trip_same_kernels(name, i):
    net, (x1, x2), kw = EXAMPLES[name][i]
    text = net.to_json()
    back = L.from_json(text)
    assert type(back) is type(net)
    assert [type(a) for a in back.walk()] == [type(a) for a in net.walk()]
    assert back.to_json() == text                        # a fixed point
    assert L.from_dict(json.loads(text)).to_dict() == net.to_dict()
    want = net.kernel_fn(x1, x2, get=("nngp", "ntk"), **kw)
    got = back.kernel_fn(x1, x2, get=("nngp", "ntk"), **kw)
    for a, b in zip(want, got):
        assert a.shape == (x1.shape[0], (x1 if x2 is None else x2).shape[0])
        assert torch.isfinite(a).all() or kw
        assert torch.equal(a, b) or (kw and torch.allclose(a, b, equal_nan=True, rtol=0, atol=0))


def test_json_is_strict_and_readable():
    net = L.serial(L.Dense(512, W_std=1.5, b_std=0.05), L.Relu(), L.Dense(1))
    d = json.loads(net.to_json(indent=2))
    assert d == {"format": "widelimit-architecture", "version": 1, "architecture": {
        "layer": "Serial", "args": [
            {"layer": "Dense", "args": [512], "kwargs": {"W_std": 1.5, "b_std": 0.05}},
            {"layer": "Relu"}, {"layer": "Dense", "args": [1]}]}}
    # non-finite floats stay strict JSON
    enc = L.spec.encode_value(float("inf"), "x")
    assert enc == {"float": "inf"} and L.spec.decode_value(enc, "x") == float("inf")


def test_tensor_and_array_values_keep_dtype_and_values():
    w = torch.tensor(1.2345678901234567, dtype=torch.float64)
    back = L.from_json(L.Dense(3, W_std=w).to_json())
    assert back.W_std.dtype == torch.float64 and back.W_std.item() == w.item()
    a = L.from_json(L.Aggregate(PATTERN.numpy().astype(np.float32)).to_json())
    assert a.pattern.dtype == torch.float32 and torch.equal(a.pattern, PATTERN.float())


def test_copy_of_constructor_arguments_stays_serialisable():
    net = fc(L.Relu()).with_width(37)
    back = L.from_json(net.to_json())
    assert [d.out_dim for d in back.walk() if isinstance(d, L.Dense)] == [37, 1]
    from widelimit.hyperparameters import _with_values
    changed = _with_values(fc(L.Relu()), {"W_std": 2.5})
    assert all(d.W_std == 2.5 for d in L.from_json(changed.to_json()).walk() if isinstance(d, L.Dense))
    with pytest.raises(L.SpecError, match="copy"):
        L.Relu().copy(a=0.5).to_json()


def test_unregistered_function_names_the_field():
    net = L.serial(L.Dense(4), L.Elementwise(lambda x: x * 2))
    with pytest.raises(L.SpecError, match=r"architecture\.args\[1\]\.args\[0\].*register_function"):
        net.to_json()
    with pytest.raises(ValueError, match="already registered"):
        L.register_function("torch.tanh", torch.sin)
    with pytest.raises(TypeError):
        L.register_function("x", 3)


def _spec(arch):
    return json.dumps({"format": "widelimit-architecture", "version": 1, "architecture": arch})


@pytest.mark.parametrize("text,match", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    (json.dumps({"format": "other", "version": 1, "architecture": {}}), r"spec\.format"),
    (json.dumps({"format": "widelimit-architecture", "version": 99, "architecture": {}}), r"spec\.version"),
    (json.dumps({"format": "widelimit-architecture", "version": 1}), r"spec\.architecture"),
    (json.dumps({"format": "widelimit-architecture", "version": 1, "architecture": {"layer": "Relu"},
                 "extra": 1}), r"unknown field.*extra"),
    (_spec({"layer": "Dense2", "args": [3]}), r"architecture\.layer: unknown layer 'Dense2'"),
    (_spec({"layer": "Dense", "args": [3], "kwarg": {}}), r"architecture: unknown field.*kwarg"),
    (_spec({"layer": "Dense", "args": 3}), r"architecture\.args: expected a list"),
    (_spec({"layer": "Dense", "args": [-3]}), r"architecture: Dense.*out_dim"),
    (_spec({"layer": "Dense", "args": [3], "kwargs": {"W_sdt": 1.0}}), r"architecture: Dense.*W_sdt"),
    (_spec({"layer": "Serial", "args": [{"layer": "Relu"}, {"layer": "Elementwise", "args": [
        {"function": "nope"}]}]}), r"architecture\.args\[1\]\.args\[0\]\.function.*'nope'"),
    (_spec({"layer": "Index", "args": [{"slice": [0, "a", None]}]}), r"architecture\.args\[0\]\.slice"),
    (_spec({"layer": "Dense", "args": [3], "kwargs": {"W_std": {"tensor": [1.0], "dtype": "floaty"}}}),
     r"kwargs\.W_std\.dtype"),
    (_spec({"layer": "Dense", "args": [{"tuple": [1], "slice": [1, 2, 3]}]}), r"args\[0\]: an object must"),
])
def test_bad_specs_name_the_field(text, match):
    with pytest.raises(L.SpecError, match=match):
        L.from_json(text)


def test_spec_error_is_value_and_type_error():
    assert issubclass(L.SpecError, ValueError) and issubclass(L.SpecError, TypeError)
