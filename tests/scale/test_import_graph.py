"""No import cycle between widelimit.layers and widelimit.scale: no module of scale/ imports
widelimit.layers at module level (only inside functions), and layers/ imports nothing of
scale/ at module level (kernel_fn calls scale.execute lazily)."""
import ast
from pathlib import Path

import widelimit

ROOT = Path(widelimit.__file__).parent


def _top_level_imports(path: Path) -> set:
    tree = ast.parse(path.read_text())
    found = set()
    for node in tree.body:                       # module level only (incl. if / try blocks)
        stack = [node]
        while stack:
            n = stack.pop()
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test):
                continue
            if isinstance(n, ast.Import):
                found.update(a.name for a in n.names)
            elif isinstance(n, ast.ImportFrom) and n.module:
                found.add(n.module)
            stack.extend(ast.iter_child_nodes(n))
    return found


def _offenders(package: str, forbidden: str) -> dict:
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = {m for m in _top_level_imports(path) if m == forbidden or m.startswith(forbidden + ".")}
        if bad:
            out[str(path.relative_to(ROOT))] = bad
    return out


def test_scale_does_not_import_layers_at_import_time():
    assert _offenders("scale", "widelimit.layers") == {}


def test_layers_do_not_import_scale_at_import_time():
    assert _offenders("layers", "widelimit.scale") == {}


def test_checker_finds_a_top_level_import(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import os\nfrom widelimit.layers.base import Layer\ndef g():\n"
                 "    from widelimit.scale import x\n")
    assert _top_level_imports(f) == {"os", "widelimit.layers.base"}
