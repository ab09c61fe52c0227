"""Every public name is documented: ``widelimit.__all__`` and each subpackage's ``__all__``
(the API reference, ``make docs``, is generated from these docstrings)."""
import importlib
import inspect

import pytest

import widelimit

PACKAGES = ["widelimit", "widelimit.layers", "widelimit.kernels", "widelimit.empirical",
            "widelimit.predict", "widelimit.parametrization", "widelimit.scale", "widelimit.config",
            "widelimit.optim", "widelimit.analysis", "widelimit.limits", "widelimit.solvers"]


def _public():
    seen = []
    for pkg in PACKAGES:
        mod = importlib.import_module(pkg)
        assert inspect.getdoc(mod), f"{pkg} has no module docstring"
        for name in getattr(mod, "__all__", ()):
            seen.append((pkg, name))
    return seen


@pytest.mark.parametrize("pkg,name", _public())
def test_public_name_has_a_docstring(pkg, name):
    obj = getattr(importlib.import_module(pkg), name)
    if not (inspect.isclass(obj) or inspect.isfunction(obj) or inspect.ismodule(obj)
            or callable(obj)):
        return          # constants (tuples, strings) are documented where they are defined
    doc = obj.__doc__ if inspect.ismodule(obj) else inspect.getdoc(obj)
    assert doc and doc.strip(), f"{pkg}.{name} has no docstring"
    if inspect.isclass(obj):
        # a class must say something of its own, not only what it inherits (e.g. Enum's)
        assert obj.__doc__ and obj.__doc__.strip(), f"{pkg}.{name}: class without its own docstring"


def test_every_package_is_listed():
    assert "config" in widelimit.__all__
    assert len(_public()) > 100
