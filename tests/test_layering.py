"""The dependency rule of DESIGN.md 2: isa imports nothing of ours; compiler and emulator never
import each other; models never imports the emulator."""

from __future__ import annotations

import ast

import pytest
from conftest import ROOT

OURS = {"isa", "compiler", "emulator", "models", "lpu"}
ALLOWED = {
    "isa": set(),
    "compiler": {"isa"},
    "emulator": {"isa"},
    "models": {"isa", "compiler"},
    "lpu": OURS,
}


def imports_of(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.ImportFrom) and node.level > 0:
                names = [package]
            for n in names:
                top = n.split(".")[0]
                if top in OURS and top != package:
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_it_may(package):
    found = imports_of(package)
    forbidden = {k: v for k, v in found.items() if k not in ALLOWED[package]}
    assert not forbidden, f"{package} imports {forbidden}"


def test_the_checker_sees_imports(tmp_path, monkeypatch):
    # Guard against a checker that can never fail: the compiler does import isa.
    assert "isa" in imports_of("compiler")
    assert "compiler" in imports_of("lpu")
