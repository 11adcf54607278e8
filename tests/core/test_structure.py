"""The layering and the private-API rule, read from the source with `ast`.

    core (pt2e_int8 minus app)  →  backends  →  application (pt2e_int8/app)

No arrow may run back, and a private torchao / ExecuTorch symbol may only be named inside
its compatibility module, which must still find every symbol it lists in the pinned version.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPAT = {ROOT / "pt2e_int8/compat/torchao.py", ROOT / "backends/compat/executorch.py"}
PRIVATE_OWNERS = ("torchao", "executorch")


def _sources(*dirs: str) -> list[Path]:
    return sorted(p for d in dirs for p in (ROOT / d).rglob("*.py"))


def _imports(path: Path) -> list[tuple[str, tuple[str, ...]]]:
    """(module, imported names) of every import statement, also those inside functions."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, ()) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, tuple(a.name for a in node.names)))
    return found


def _layer(path: Path) -> str:
    rel = path.relative_to(ROOT).as_posix()
    if rel.startswith("pt2e_int8/app/"):
        return "app"
    return "backends" if rel.startswith("backends/") else "core"


@pytest.mark.parametrize("layer,forbidden", [("core", ("backends", "pt2e_int8.app")),
                                             ("backends", ("pt2e_int8.app",))])
def test_no_import_runs_back_up_the_layers(layer, forbidden):
    bad = [f"{p.relative_to(ROOT)} imports {mod}"
           for p in _sources("pt2e_int8", "backends") if _layer(p) == layer
           for mod, _ in _imports(p) if any(mod == f or mod.startswith(f + ".") for f in forbidden)]
    assert not bad, "layering broken (core → backends → app): " + "; ".join(bad)


def _private_uses(path: Path) -> list[str]:
    """Private names of torchao / ExecuTorch imported or read as module attributes."""
    tree = ast.parse(path.read_text())
    owners: set[str] = set()  # local names bound to a torchao / executorch module
    uses = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PRIVATE_OWNERS:
            if any(part.startswith("_") for part in node.module.split(".")):
                uses.append(f"from {node.module} import ...")
            for alias in node.names:
                if alias.name.startswith("_"):
                    uses.append(f"{node.module}.{alias.name}")
                owners.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PRIVATE_OWNERS:
                    if any(part.startswith("_") for part in alias.name.split(".")):
                        uses.append(f"import {alias.name}")
                    owners.add((alias.asname or alias.name).split(".")[0])
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                and isinstance(node.value, ast.Name) and node.value.id in owners):
            uses.append(f"{node.value.id}.{node.attr}")
    return uses


def test_private_symbols_only_in_compat_modules():
    files = [p for p in _sources("pt2e_int8", "backends", "bench", "export_examples", "tests") if p not in COMPAT]
    bad = [f"{p.relative_to(ROOT)}: {u}" for p in files for u in _private_uses(p)]
    assert not bad, "private torchao/ExecuTorch symbols outside the compat modules: " + "; ".join(bad)


def test_the_grep_catches_a_private_import(tmp_path):
    """The rule above must be able to fail."""
    sample = tmp_path / "sample.py"
    sample.write_text("from torchao.quantization.pt2e.export_utils import _replace_dropout\n"
                      "from executorch.extension.pybindings import portable_lib\n"
                      "portable_lib._unsafe_reset_threadpool(2)\n")
    assert len(_private_uses(sample)) == 2


def test_torchao_private_symbols_exist_in_the_pinned_version():
    from pt2e_int8.compat import torchao as compat

    missing = compat.missing_private_symbols()
    assert not missing, f"{compat.PINNED}: an upgrade removed {missing}; update pt2e_int8/compat/torchao.py"


def test_executorch_private_symbols_exist_in_the_pinned_version():
    from backends.compat import executorch as compat

    missing = compat.missing_private_symbols()
    assert not missing, f"{compat.PINNED}: an upgrade removed {missing}; update backends/compat/executorch.py"
