"""widelimit.predict vs neural-tangents 0.6.5 on the same float64 kernels (1e-6 relative).

Reference values come from benchmarks/peers/make_predict_reference.py (run in the peer
environment); the kernels are NT's, stored in the file, so this checks the predict logic only.
"""
import os
from collections import namedtuple

import numpy as np
import pytest
import torch

import widelimit as wl
from widelimit import predict

REF = np.load(os.path.join(os.path.dirname(__file__), "..", "data", "nt_predict_reference.npz"))
Pair = namedtuple("Pair", "nngp ntk")


def k(name):
    return Pair(REF[f"k_{name}/nngp"], REF[f"k_{name}/ntk"])


def close(got, ref, what):
    got = np.asarray(got)
    assert got.shape == ref.shape, (what, got.shape, ref.shape)
    assert np.isfinite(got).all(), what
    scale = max(np.abs(ref).max(), 1e-300)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6 * scale, err_msg=what)


def lookup_kernel_fn(x1, x2, get):
    """A kernel_fn serving NT's stored kernels, keyed by the inputs."""
    def which(x):
        for name in ("x_train", "x_test"):
            if x.shape == REF[name].shape and np.allclose(np.asarray(x), REF[name]):
                return name
        raise KeyError("unknown inputs")
    key = {("x_train", None): "dd", ("x_test", "x_train"): "td", ("x_test", None): "tt"}[
        (which(x1), None if x2 is None else which(x2))]
    kk = {g: torch.from_numpy(REF[f"k_{key}/{g}"]) for g in ("nngp", "ntk")}
    if isinstance(get, str):
        return kk[get]
    return namedtuple("Kernels", get)(*(kk[g] for g in get))


@pytest.mark.parametrize("tag,reg,absolute", [("rel", 1e-3, False), ("abs", 1e-2, True),
                                              ("noreg", 0.0, False)])
@pytest.mark.parametrize("ttag", ["inf", "t"])
def test_gradient_descent_mse(tag, reg, absolute, ttag):
    fn = predict.gradient_descent_mse(k("dd").ntk, REF["y_train"], learning_rate=0.7, diag_reg=reg,
                                      diag_reg_absolute_scale=absolute)
    t = None if ttag == "inf" else REF["times"]
    tr, te = fn(t, REF["fx_train_0"], REF["fx_test_0"], k("td").ntk)
    assert isinstance(tr, np.ndarray)
    close(tr, REF[f"mse/{tag}/{ttag}/train"], "train")
    close(te, REF[f"mse/{tag}/{ttag}/test"], "test")


@pytest.mark.parametrize("g", ["nngp", "ntk"])
@pytest.mark.parametrize("ttag", ["inf", "t"])
@pytest.mark.parametrize("stag", ["test", "train"])
def test_gradient_descent_mse_ensemble(g, ttag, stag):
    ens = predict.gradient_descent_mse_ensemble(lookup_kernel_fn, REF["x_train"], REF["y_train"],
                                                learning_rate=0.7, diag_reg=1e-4)
    t = None if ttag == "inf" else REF["times"]
    mean, cov = ens(t, REF["x_test"] if stag == "test" else None, g, compute_cov=True)
    close(mean, REF[f"ens/{g}/{ttag}/{stag}/mean"], "mean")
    close(cov, REF[f"ens/{g}/{ttag}/{stag}/cov"], "cov")


def test_gp_inference_kernel_objects():
    gp = predict.gp_inference(k("dd"), REF["y_train"], diag_reg=1e-4)
    res = gp(("nngp", "ntk", "ntkgp"), k("td"), k("tt"))
    for g in ("nngp", "ntk", "ntkgp"):
        close(getattr(res, g).mean, REF[f"gp/{g}/mean"], g)
        close(getattr(res, g).covariance, REF[f"gp/{g}/cov"], g)


def test_gp_inference_widelimit_kernel():
    """A widelimit Kernel dataclass (torch) works as well as a namedtuple; torch in, torch out."""
    kd = {n: torch.from_numpy(REF[f"k_dd/{n}"]) for n in ("nngp", "ntk")}
    kern = wl.Kernel(nngp=kd["nngp"], ntk=kd["ntk"], cov1=torch.diagonal(kd["nngp"]), cov2=None,
                     x1_is_x2=True, is_gaussian=True, shape1=(24, 1), shape2=(24, 1))
    gp = predict.gp_inference(kern, torch.from_numpy(REF["y_train"]), diag_reg=1e-4)
    td = Pair(*(torch.from_numpy(REF[f"k_td/{n}"]) for n in ("nngp", "ntk")))
    mean = gp("ntk", td)
    assert isinstance(mean, torch.Tensor)
    close(mean.numpy(), REF["gp/ntk/mean"], "ntk mean")


@pytest.mark.parametrize("tag,mom", [("gd", None), ("momentum", 0.9)])
def test_gradient_descent_cross_entropy(tag, mom):
    def cross_entropy(fx, y):
        return -(torch.log_softmax(fx, -1) * y).mean()
    fn = predict.gradient_descent(cross_entropy, k("dd").ntk, REF["y_onehot"], learning_rate=2.0,
                                  momentum=mom)
    tr, te = fn(REF["ode/times"], REF["fx_train_0"], REF["fx_test_0"], k("td").ntk)
    close(tr, REF[f"ode/{tag}/train"], "train")
    close(te, REF[f"ode/{tag}/test"], "test")


def test_max_learning_rate():
    n, kk = REF["y_train"].shape
    assert predict.max_learning_rate(k("dd").ntk) == pytest.approx(float(REF["max_lr/plain"]), rel=1e-9)
    got = predict.max_learning_rate(k("dd").ntk, y_train_size=n * kk, momentum=0.5)
    assert got == pytest.approx(float(REF["max_lr/momentum"]), rel=1e-9)
