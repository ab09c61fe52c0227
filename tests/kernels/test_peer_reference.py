"""widelimit vs neural-tangents 0.6.5 on the same architectures (float64, 1e-6 relative).

Reference values come from benchmarks/peers/make_reference.py (run in the peer
environment); the architectures are defined once in benchmarks/peers/architectures.py.
"""
import os

import numpy as np
import pytest
import torch
from architectures import (ARCHITECTURES, IMAGE_ARCHITECTURES, MASKED_ARCHITECTURES,
                           TOKEN_ARCHITECTURES)

from widelimit import layers as L

REF = np.load(os.path.join(os.path.dirname(__file__), "..", "data", "nt_reference.npz"))

# neural-tangents' RectifiedMonomial divides by sin(theta): NaN for identical inputs and
# wrong for nearly collinear ones (x2[0] == x1[0], x2[1] ~ x1[1] by construction). Those
# entries are checked against quadrature instead (test_rectified_monomial_collinear_pairs).
PEER_UNSTABLE = {"rectified_monomial2"}


def _mask(name, pair, shape):
    ok = np.ones(shape, bool)
    if name in PEER_UNSTABLE:
        if pair == "12":
            ok[0, 0] = ok[1, 1] = False
        else:
            np.fill_diagonal(ok, False)
    return ok


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
@pytest.mark.parametrize("pair", ["12", "11"])
def test_matches_neural_tangents(name, pair):
    net = ARCHITECTURES[name](L)
    x1, x2 = REF["x1"], REF["x2"]
    out = net.kernel_fn(x1, x2 if pair == "12" else None, get=("nngp", "ntk"))
    for kind in ("nngp", "ntk"):
        ref = REF[f"{name}/{pair}/{kind}"]
        got = getattr(out, kind)
        assert isinstance(got, np.ndarray) and got.dtype == np.float64
        assert np.isfinite(got).all()
        ok = _mask(name, pair, ref.shape)
        scale = np.abs(ref[ok]).max()
        np.testing.assert_allclose(got[ok], ref[ok], rtol=1e-6, atol=1e-6 * scale,
                                   err_msg=f"{name} {kind}")


def test_rectified_monomial_collinear_pairs():
    x1, x2 = REF["x1"], REF["x2"]
    exact = ARCHITECTURES["rectified_monomial2"](L).kernel_fn(x1, x2, get=("nngp", "ntk"))
    quad = L.serial(L.Dense(512, W_std=0.9, b_std=0.05),
                    L.Elementwise(lambda x: torch.relu(x) ** 2),
                    L.Dense(1, W_std=0.9, b_std=0.05)).kernel_fn(x1, x2, get=("nngp", "ntk"))
    for kind in ("nngp", "ntk"):
        np.testing.assert_allclose(getattr(exact, kind), getattr(quad, kind), rtol=1e-9)


def _image_cases():
    cases = {name: (build, None) for name, (_, build) in IMAGE_ARCHITECTURES.items()}
    cases.update({name: (build, constant) for name, (_, build, constant, _, _)
                  in MASKED_ARCHITECTURES.items()})
    # (N, L, d) tokens, channels last for both libraries (the first Dense has channel_axis=-1)
    cases.update({name: (build, constant) for name, (_, build, constant, _, _)
                  in TOKEN_ARCHITECTURES.items()})
    return cases


IMAGE_CASES = _image_cases()


@pytest.mark.parametrize("name", sorted(IMAGE_CASES))
@pytest.mark.parametrize("pair", ["12", "11"])
def test_images_match_neural_tangents(name, pair, diagonal_spatial=None):
    """Image inputs in PyTorch layout (N, C, *S); the reference ran on channels-last.
    Masked cases: padded inputs, both libraries given the same ``mask_constant``.
    Token cases: (N, L, d) inputs as they are."""
    build, constant = IMAGE_CASES[name]
    net = build(L, 1)
    x1, x2 = REF[f"{name}/x1"], REF[f"{name}/x2"]
    out = net.kernel_fn(x1, x2 if pair == "12" else None, get=("nngp", "ntk"),
                        mask_constant=constant, diagonal_spatial=diagonal_spatial)
    for kind in ("nngp", "ntk"):
        ref = REF[f"{name}/{pair}/{kind}"]
        got = getattr(out, kind)
        assert got.dtype == np.float64 and got.shape == ref.shape
        scale = np.abs(ref).max()
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6 * scale, err_msg=f"{name} {kind}")


@pytest.mark.parametrize("name", ["dense_images_flatten_standard", "dense_seq_flatten_nobias",
                                  "tokens_transformer_mlp_pe"])
def test_dense_per_position_both_spatial_layouts(name):
    """Dense on images / sequences in the layout not chosen automatically: these nets end in
    Flatten, so they run in the diagonal layout by default and here in the full one too
    (except the attention one, which needs the full layout and is checked in it above)."""
    if name.startswith("tokens"):
        with pytest.raises(ValueError, match="diagonal_spatial=True is impossible"):
            test_images_match_neural_tangents(name, "12", diagonal_spatial=True)
        return
    for pair in ("12", "11"):
        test_images_match_neural_tangents(name, pair, diagonal_spatial=False)
        test_images_match_neural_tangents(name, pair, diagonal_spatial=True)
