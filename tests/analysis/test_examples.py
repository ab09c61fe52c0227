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
