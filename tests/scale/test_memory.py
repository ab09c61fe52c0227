"""malloc tuning and the block planner's remembered probes."""
import torch

import widelimit.layers as L
from widelimit.scale import blocking, memory


def test_tune_malloc_applies_once_and_respects_opt_out(monkeypatch):
    from widelimit import config
    monkeypatch.setitem(config._state, "tuning", config.RuntimeTuning(malloc=True))   # opted in
    monkeypatch.setitem(memory._tuned, "done", False)
    monkeypatch.setenv("WIDELIMIT_TUNE_MALLOC", "0")
    assert memory.tune_malloc() is False            # opted out
    assert memory.tune_malloc() is False            # and only ever tried once
    monkeypatch.setitem(memory._tuned, "done", False)
    monkeypatch.delenv("WIDELIMIT_TUNE_MALLOC")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=1000000")
    assert memory.tune_malloc() is False            # the user tunes malloc: leave it alone


def test_block_probe_is_remembered_per_architecture_and_signature(monkeypatch):
    calls = []
    real = blocking.MaxNumel

    class Counting(real):
        def __enter__(self):
            calls.append(1)
            return super().__enter__()

    monkeypatch.setattr(blocking, "MaxNumel", Counting)
    net = L.serial(L.Conv(8, (3, 3), padding="SAME"), L.Relu(), L.GlobalAvgPool(), L.Dense(1))
    x = torch.randn(40, 3, 16, 16)
    first = net.kernel_fn(x, get="nngp")
    second = net.kernel_fn(x, get="nngp")
    assert len(calls) == 1 and torch.equal(first, second)
    net.kernel_fn(torch.randn(40, 3, 12, 12), get="nngp")     # another input shape: probed
    assert len(calls) == 2
    other = L.serial(L.Conv(8, (3, 3), padding="SAME"), L.Relu(), L.GlobalAvgPool(), L.Dense(1))
    other.kernel_fn(x, get="nngp")                                # another architecture object
    assert len(calls) == 3
