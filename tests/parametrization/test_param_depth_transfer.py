"""Smoke test of examples/depth_transfer.py (tiny settings) and the example's
model under depth-muP: the forward pass at initialisation is depth independent."""
import importlib.util
import os

import numpy as np
import pytest

pytest.importorskip("sklearn.datasets")
pytest.importorskip("matplotlib")
PATH = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "depth_transfer.py")


def _example():
    spec = importlib.util.spec_from_file_location("depth_transfer", PATH)
    ex = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ex)
    return ex


def test_depth_transfer_example_runs(tmp_path):
    out = str(tmp_path / "dt.png")
    res = _example().main(["--depths", "2,8", "--steps", "10", "--seeds", "1", "--width", "32",
                           "--grid=-10,-6", "--out", out])
    assert set(res["losses"]) == {"depth-mup", "sp"}
    for losses in res["losses"].values():
        assert losses.shape == (2, 5) and np.all(np.isfinite(losses))
        assert np.all(losses < np.log(10) + 1.0)          # no divergence at these learning rates
    # at the base depth both schemes are the same network and optimiser
    np.testing.assert_allclose(res["losses"]["depth-mup"][0], res["losses"]["sp"][0], rtol=1e-6)
    assert all(b in res["grid"] for b in res["best"]["sp"])
    assert os.path.getsize(out) > 5_000
