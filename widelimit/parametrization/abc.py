"""abc-parametrizations (Yang & Hu 2021, "Feature Learning in Infinite-Width
Neural Networks", Sec. 3 and Table 1).

An abc-parametrization of an L-hidden-layer network of width n gives every
weight matrix ``W^l`` three exponents:

* a multiplier ``n^{-a}`` (the layer computes ``n^{-a} W^l x``),
* an initialisation ``W^l_{ij} ~ N(0, n^{-2b})``,
* a learning rate ``eta * n^{-c}``.

Here n is measured *relative to a base model* (``n = width / base_width``,
the muTransfer convention of Yang et al. 2022, "Tensor Programs V"), so the
base model is left untouched and every scheme agrees with PyTorch's default
("standard") parametrization at the base width.

Named schemes are written in the form of Tensor Programs V, Table 3/8 (the
form the ``mup`` package uses): hidden and input layers carry no multiplier
and the output layer carries the ``1/n`` multiplier.  By the abc symmetry
``(a, b, c) -> (a + t, b - t, c - 2t)`` for SGD and ``(a + t, b - t, c - t)``
for Adam (Yang & Hu 2021, Eq. (5)) these are equivalent to the paper's
presentation, e.g. muP ``a = (-1/2, 0, 1/2), b = 1/2, c = 0``.

Biases and other vectors with one width dimension (LayerNorm gains,
embeddings) use the *input* row: Yang & Hu treat a bias as an input weight
whose input is the constant 1.  Parameters without width dimensions are not
scaled.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from widelimit._validate import check_real

__all__ = ["Row", "ABC", "SCHEMES", "get_scheme", "abc"]


@dataclass(frozen=True)
class Row:
    """Exponents of one layer role.

    Attributes:
        a: multiplier exponent, the layer computes ``n^{-a} W x``.
        b: init exponent, ``std(W) ~ n^{-b}`` (variance ``n^{-2b}``).
        c_sgd: learning-rate exponent for SGD-like optimisers, ``lr ~ n^{-c}``.
        c_adam: learning-rate exponent for Adam-like (entrywise normalised)
            optimisers.
        sgd_fan_out: extra exponent on the fan-out width for SGD learning
            rates of hidden matrices: ``lr ~ fan_in^{-c_sgd} fan_out^{e}``.
            muP uses ``lr ~ fan_out / fan_in`` (Tensor Programs V, Table 8),
            i.e. ``c_sgd = 1, sgd_fan_out = 1``, which is constant for square
            matrices.
    """

    a: float = 0.0
    b: float = 0.0
    c_sgd: float = 0.0
    c_adam: float = 0.0
    sgd_fan_out: float = 0.0


@dataclass(frozen=True)
class ABC:
    """An abc-parametrization: one :class:`Row` per layer role.

    ``rescale_init=False`` leaves the initialisation alone (used for SP, which
    *is* PyTorch's default initialisation).
    """

    name: str
    input: Row = field(default_factory=Row)
    hidden: Row = field(default_factory=lambda: Row(b=0.5))
    output: Row = field(default_factory=lambda: Row(b=0.5))
    rescale_init: bool = True

    def row(self, role: str) -> Row:
        """Row for ``role`` in ``{"input", "hidden", "output", "vector"}``."""
        if role in ("input", "vector"):
            return self.input
        if role == "hidden":
            return self.hidden
        if role == "output":
            return self.output
        raise ValueError(f"unknown layer role {role!r}")

    def is_sp(self) -> bool:
        """True when the scheme changes nothing relative to the base model."""
        return not self.rescale_init and all(
            r.a == 0 and r.c_sgd == 0 and r.c_adam == 0 and r.sgd_fan_out == 0
            for r in (self.input, self.hidden, self.output)
        )


#: Standard parametrization: PyTorch defaults (init var 1/fan_in, no
#: multipliers, width-independent learning rate).  Yang & Hu 2021, Eq. (3).
SP = ABC("sp", Row(0, 0, 0, 0), Row(0, 0.5, 0, 0), Row(0, 0.5, 0, 0), rescale_init=False)

#: NTK parametrization (Jacot et al. 2018): N(0, 1) entries times
#: 1/sqrt(fan_in).  Adam exponents chosen so that logits move by Theta(1)
#: and features by Theta(n^{-1/2}) per step (kernel regime).
NTK = ABC("ntk", Row(0, 0, 0, 0.5), Row(0.5, 0, 0, 1.0), Row(0.5, 0, 0, 0.5))

#: Maximal update parametrization, Tensor Programs V Table 3 / Table 8:
#: input: var 1/fan_in, SGD lr x n, Adam lr x 1; hidden: var 1/fan_in,
#: SGD lr x fan_out/fan_in, Adam lr x 1/n; output: multiplier 1/n, var O(1),
#: SGD lr x n, Adam lr x 1.
MUP = ABC("mup", Row(0, 0, -1, 0), Row(0, 0.5, 1, 1, sgd_fan_out=1), Row(1, 0, -1, 0))

#: Mean-field parametrization (Mei et al. 2018; Yang & Hu 2021 Sec. 3):
#: every weight has O(1) entries, hidden multiplier 1/sqrt(n), output
#: multiplier 1/n, SGD lr x n.  It is muP moved by the abc symmetry with
#: t = 1/2 on the hidden layers, so its training dynamics equal muP's; for
#: one hidden layer it is exactly the classical two-layer mean-field net.
MF = ABC("mf", Row(0, 0, -1, 0), Row(0.5, 0, 0, 0.5, sgd_fan_out=1), Row(1, 0, -1, 0))

SCHEMES: dict[str, ABC] = {"sp": SP, "ntk": NTK, "mup": MUP, "mf": MF}


def abc(
    a: tuple[float, float, float],
    b: tuple[float, float, float],
    c: tuple[float, float, float] | float,
    c_adam: tuple[float, float, float] | float | None = None,
    name: str = "abc",
) -> ABC:
    """Custom abc-parametrization from (input, hidden, output) exponents.

    Args:
        a: multiplier exponents ``n^{-a}``.
        b: init exponents, ``std ~ n^{-b}``.
        c: SGD learning-rate exponents (a float applies to all layers, the
            global-``c`` setting of Yang & Hu 2021).
        c_adam: Adam learning-rate exponents; defaults to ``c``.
    """
    def triple(v: tuple[float, float, float] | float, what: str) -> tuple[float, float, float]:
        if isinstance(v, (str, bytes)) or v is None:
            raise TypeError(f"`{what}` must be a real number or 3 of them (input, hidden, output), got {v!r}.")
        if not isinstance(v, (tuple, list)):
            return (check_real(what, v),) * 3
        if len(v) != 3:
            raise ValueError(f"`{what}` needs 3 exponents (input, hidden, output), got {len(v)}")
        return tuple(check_real(f"{what}[{i}]", x) for i, x in enumerate(v))  # type: ignore[return-value]

    a3, b3, c3 = triple(a, "a"), triple(b, "b"), triple(c, "c")
    ca3 = c3 if c_adam is None else triple(c_adam, "c_adam")
    rows = [Row(a3[i], b3[i], c3[i], ca3[i]) for i in range(3)]
    return ABC(name, rows[0], rows[1], rows[2], rescale_init=True)


def get_scheme(scheme: str | ABC) -> ABC:
    """Resolve a scheme name (``"sp"``, ``"ntk"``, ``"mup"``, ``"mf"``) or pass an
    :class:`ABC` through."""
    if isinstance(scheme, ABC):
        return scheme
    if isinstance(scheme, str) and scheme.lower() in SCHEMES:
        return SCHEMES[scheme.lower()]
    raise ValueError(
        f"unknown scheme {scheme!r}; use one of {sorted(SCHEMES)} or a custom "
        "widelimit.parametrization.abc(a=..., b=..., c=...)"
    )


def with_name(scheme: ABC, name: str) -> ABC:
    """Copy of ``scheme`` under another name."""
    return replace(scheme, name=name)
