"""Smoke test of examples/feature_learning_limit.py (small widths, few steps)."""
import importlib.util
import os

import torch

PATH = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "feature_learning_limit.py")


def test_feature_learning_example_runs(tmp_path):
    spec = importlib.util.spec_from_file_location("feature_learning_limit", PATH)
    ex = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ex)
    res = ex.main(["--widths", "64", "1024", "--seeds", "1", "--steps", "15", "--out", str(tmp_path)])
    assert res["dist"][1024] < 0.6 * res["dist"][64]        # wider is closer to the limit
    assert res["dist"][1024] < 0.03
    assert res["lim_loss"] < 0.95 * res["ntk_loss"]          # feature learning trains faster
    assert abs(res["loss"][1024] - res["lim_loss"]) < 0.02 * res["lim_loss"]
    assert os.path.getsize(res["plot"]) > 10_000


PI_PATH = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "pi_limit_digits.py")


def test_pi_limit_example_runs(tmp_path):
    """examples/pi_limit_digits.py at widths 64 / 2048, 30 steps (~5 s): the wider pi-net
    is closer to the pi-limit (measured 0.43 -> 0.074, slope -0.51), its loss matches the
    limit's, the limit trains and the plot is written."""
    spec = importlib.util.spec_from_file_location("pi_limit_digits", PI_PATH)
    ex = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ex)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)       # small matmuls: 2 threads on 2 shared cores are ~5x slower
    try:
        res = ex.main(["--widths", "64", "2048", "--seeds", "1", "--steps", "30", "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    assert res["dist"][2048] < 0.4 * res["dist"][64]           # wider is closer to the limit
    assert res["dist"][2048] < 0.1
    assert -0.8 < res["slope"] < -0.3
    assert abs(res["loss"][2048] - res["lim_loss"]) < 0.05 * res["lim_loss"]
    assert res["lim_loss"] < 0.5 * 0.405 and res["lim_acc"] > 0.85   # initial loss 0.405 (f_0 = 0)
    assert res["moved"] > 0.5                                  # the readout kernel moved: features learned
    assert os.path.getsize(res["plot"]) > 10_000
