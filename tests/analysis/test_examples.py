"""Smoke tests of the analysis examples (tiny settings)."""
import importlib.util
import os

import numpy as np
import pytest

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "examples")


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(EXAMPLES, f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_nas_scores(tmp_path):
    mod = _load("nas_scores")
    names = ["mlp-1x8-relu", "mlp-1x128-relu", "mlp-3x8-tanh", "cnn-1x4"]
    res = mod.run(str(tmp_path), steps=10, n_batch=16, names=names)
    assert set(res["architectures"]) == set(names)
    taus = res["kendall_tau"]
    assert all(-1 <= t <= 1 for t in taus.values())
    for r in res["architectures"].values():
        assert 0 <= r["accuracy"] <= 1 and np.isfinite(r["log10_trace"]) and -1 <= r["lga"] <= 1
    assert os.path.getsize(res["plot"]) > 5_000


def test_kip_digits(tmp_path):
    mod = _load("kip_digits")
    res = mod.run(str(tmp_path), per_class=2, steps=5, batch_size=100, n_random=2)
    assert res["loss_last"] < res["loss_first"]
    assert 0.3 < res["kip_accuracy"] <= 1 and len(res["random_accuracy"]) == 2
    assert os.path.getsize(res["plot"]) > 2_000


def test_ntk_spectrum(tmp_path):
    mod = _load("ntk_spectrum")
    res = mod.run(str(tmp_path), n=120, width=64, steps=30)
    s = res["spectra"]
    assert set(s) == {"analytic NTK", "empirical NTK, init", "empirical NTK, trained"}
    assert all(0.3 < v["alpha"] < 3 and 0 < v["top10_label_energy"] <= 1 for v in s.values())
    # training aligns the tangent kernel's top eigenvectors with the labels
    assert s["empirical NTK, trained"]["top10_label_energy"] > s["empirical NTK, init"]["top10_label_energy"]
    assert os.path.getsize(res["plot"]) > 5_000


def test_learning_curve(tmp_path):
    mod = _load("learning_curve")
    res = mod.run(str(tmp_path), ns=(10, 40), seeds=range(2), n_test=100, n_pool=400)
    for g in ("ntk", "nngp"):
        assert max(res[g]["relative_error"]) < 0.3
        assert res[g]["measured"][1] < res[g]["measured"][0]
    assert os.path.getsize(res["plot"]) > 5_000


def test_score_estimation(tmp_path):
    mod = _load("score_estimation")
    res = mod.run(str(tmp_path), n_train=1500, n_test=500, n_samples=400, steps=20, seed=0)
    # the NTK score beats the best single-Gaussian score (seeds 0-2 gave 0.22-0.25 vs 0.34-0.40)
    assert res["score_rel_mse"] < 0.8 * res["gaussian_rel_mse"]
    # the ODE with the learned score moves the prior most of the way to the mixture, and the
    # true-score ODE is close to the statistical floor (seeds 0-2: 0.026-0.050 vs 2.2-2.4)
    assert res["energy_ntk"] < 0.05 * res["energy_prior"]
    assert res["energy_true_score"] < 0.02
    assert os.path.getsize(res["plot"]) > 5_000


def test_score_estimation_true_score_is_the_gradient():
    import torch
    mod = _load("score_estimation")
    x = torch.randn(7, 2, dtype=torch.float64, requires_grad=True)
    s = torch.full((7,), 0.4, dtype=torch.float64)
    v = mod.MODE_STD ** 2 + 0.16
    logp = torch.logsumexp(-((mod.means()[None] - x[:, None]) ** 2).sum(-1) / (2 * v), 1).sum()
    (grad,) = torch.autograd.grad(logp, x)
    torch.testing.assert_close(mod.true_score(x.detach(), s), grad, rtol=1e-12, atol=1e-12)


def test_task_arithmetic(tmp_path):
    mod = _load("task_arithmetic")
    res = mod.run(str(tmp_path), seeds=(0,), width=32, n_pretrain=100, pretrain_steps=60, steps=60)
    for m in ("non-linear", "linearised"):
        r = res[m]
        assert all(0.85 < a <= 1 for a in r["single_task"].values())       # fine-tuning works
        assert 0.5 < r["merged_mean"] <= 1 and 0 <= r["alpha"] <= 2
        assert min(r["single_task"].values()) > min(res["pretrained"].values())
    assert os.path.getsize(res["plot"]) > 5_000


def test_task_vectors_add_exactly_in_the_tangent_space():
    """The linearised model is affine in theta: f(theta0 + tau_A + tau_B) = f_A + f_B - f_0."""
    import torch
    import widelimit as wl
    mod = _load("task_arithmetic")
    torch.manual_seed(0)
    lin = wl.linearize(torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.Tanh(), torch.nn.Linear(16, 10)))
    x = torch.randn(20, 64)
    theta0 = mod.vector(lin)
    tau_a, tau_b = 0.1 * torch.randn_like(theta0), 0.1 * torch.randn_like(theta0)
    with torch.no_grad():
        f = {k: mod.with_vector(lin, theta0 + v)(x) for k, v in
             {"0": 0 * theta0, "a": tau_a, "b": tau_b, "ab": tau_a + tau_b}.items()}
    torch.testing.assert_close(f["ab"], f["a"] + f["b"] - f["0"], rtol=1e-5, atol=1e-5)
    assert (f["ab"] - f["0"]).abs().max() > 1e-2          # the task vectors do move the outputs


def test_rf_risk(tmp_path):
    mod = _load("rf_risk")
    res = mod.run(str(tmp_path), ks=(32, 512), n=100, seeds=range(3), n_pool=400)
    # the RF eigenframework predicts measured arc-cosine RF regression (the full example:
    # within 1-10 % for k = 16..4096 at n = 200), and more features help at this ridge
    assert max(res["relative_error"]) < 0.2, res
    assert res["measured"][1] < res["measured"][0]
    assert res["infinite_features"] <= min(res["predicted"]) * 1.001
    assert os.path.getsize(res["plot"]) > 5_000
