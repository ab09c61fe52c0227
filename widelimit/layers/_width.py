"""Replace the hidden widths of an architecture (for Monte Carlo width sweeps)."""
from __future__ import annotations

from widelimit.layers.base import Layer


def replace_hidden_width(net: Layer, width: int) -> Layer:
    if not isinstance(width, int) or isinstance(width, bool) or width < 1:
        raise ValueError(f"`width` must be a positive integer, got {width!r}.")
    sized = [layer for layer in net.walk() if getattr(layer, "width_attr", None)]
    if not sized:
        return net
    readout = id(sized[-1])

    def change(layer: Layer) -> Layer:
        attr = getattr(layer, "width_attr", None)
        if attr and id(layer) != readout:
            return layer.copy(**{attr: width})
        return layer

    return net.map(change)
