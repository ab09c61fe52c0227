"""Shared settings for the parametrization tests."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The test models are tiny: one thread avoids oversubscription on a busy
    2-core machine (and makes timings predictable)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
