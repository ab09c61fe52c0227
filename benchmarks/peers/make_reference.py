"""Write neural-tangents 0.6.5 reference kernels to tests/data/nt_reference.npz.

Run inside the peer environment (benchmarks/peers/setup creates .venv-peers):
    .venv-peers/bin/python benchmarks/peers/make_reference.py
The tests compare widelimit against these numbers (float64, 1e-6 relative);
neural-tangents itself is not needed to run the tests.  Image inputs are stored in
PyTorch layout (N, C, *S) and moved to channels-last for neural-tangents.
"""
import os
import sys

import numpy as np

os.environ.setdefault("JAX_ENABLE_X64", "1")
import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
from neural_tangents import stax  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from architectures import (ARCHITECTURES, GRAPH_PATTERN, IMAGE_ARCHITECTURES,  # noqa: E402
                           MASKED_ARCHITECTURES, inputs, inputs_images, inputs_padded,
                           to_channels_last)

out = {}
x1, x2 = inputs()
out["x1"], out["x2"] = x1, x2
for name, build in ARCHITECTURES.items():
    _, _, kernel_fn = build(stax)
    for tag, b in (("12", x2), ("11", None)):
        k = kernel_fn(x1, b, ("nngp", "ntk"))
        out[f"{name}/{tag}/nngp"] = np.asarray(k.nngp)
        out[f"{name}/{tag}/ntk"] = np.asarray(k.ntk)
    print(f"{name}: ok")


def image_case(name, build, i1, i2, mask_constant=None):
    """Reference kernels of an image architecture on x1 = i1, x2 = i2 or None."""
    out[f"{name}/x1"], out[f"{name}/x2"] = i1, i2
    _, _, kernel_fn = build(stax, -1)
    for tag, b in (("12", i2), ("11", None)):
        kw = {} if mask_constant is None else {"mask_constant": mask_constant}
        if "graph" in name:
            p1 = np.broadcast_to(GRAPH_PATTERN, (len(i1),) + GRAPH_PATTERN.shape)
            kw["pattern"] = (p1, p1 if b is None else
                             np.broadcast_to(GRAPH_PATTERN, (len(b),) + GRAPH_PATTERN.shape))
        k = kernel_fn(to_channels_last(i1), None if b is None else to_channels_last(b),
                      ("nngp", "ntk"), **kw)
        out[f"{name}/{tag}/nngp"] = np.asarray(k.nngp)
        out[f"{name}/{tag}/ntk"] = np.asarray(k.ntk)
    print(f"{name}: ok")


for name, (shape, build) in IMAGE_ARCHITECTURES.items():
    image_case(name, build, *inputs_images(shape))
for name, (shape, build, constant, lengths1, lengths2) in MASKED_ARCHITECTURES.items():
    image_case(name, build, *inputs_padded(shape, lengths1, lengths2, constant), constant)
path = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "data", "nt_reference.npz")
np.savez_compressed(path, **out)
print("wrote", os.path.normpath(path))
