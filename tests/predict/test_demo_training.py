"""Smoke test of examples/demo_training.py (small widths, few steps)."""
import importlib.util
import os

import numpy as np

PATH = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "demo_training.py")


def test_demo_training_runs(tmp_path):
    spec = importlib.util.spec_from_file_location("demo_training", PATH)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    res = demo.run(str(tmp_path), widths=(16, 256), n_finite_train=64, steps=30)
    acc = res["infinite_width_accuracy"]
    assert acc["ntk"]["inf"] > 0.95 and acc["nngp"]["inf"] > 0.95
    d = res["finite"]["relative_distance"]
    assert np.isfinite(list(d.values())).all()
    assert os.path.getsize(res["plot"]) > 10_000
