"""Smoke test of examples/feature_learning_limit.py (small widths, few steps)."""
import importlib.util
import os

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
