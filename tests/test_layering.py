"""The layers of docs/ARCHITECTURE.md: imports only point downwards; one runtime dependency."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import tpmseal

ORDER = ["transport", "wire", "session", "client", "sniff", "recipes", "cli"]
ROOT = Path(tpmseal.__file__).parent


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node, except those under ``if TYPE_CHECKING:`` (never imported at run time)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) \
                and node.test.id == "TYPE_CHECKING":
            for branch in node.orelse:
                yield branch
                yield from _runtime_nodes(branch)
            continue
        yield node
        yield from _runtime_nodes(node)


def _imports(path: Path) -> Iterator[str]:
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module


def test_imports_point_downwards() -> None:
    rank = {name: i for i, name in enumerate(ORDER)}
    upward = []
    for path in sorted(ROOT.rglob("*.py")):
        layer = path.relative_to(ROOT).parts[0]
        for module in _imports(path):
            parts = module.split(".")
            if layer in rank and parts[0] == "tpmseal" and len(parts) > 1 \
                    and rank.get(parts[1], -1) > rank[layer]:
                upward.append(f"{path.relative_to(ROOT)} imports {module}")
    assert upward == []


def test_runtime_dependency_is_cryptography_only() -> None:
    found = {m.split(".")[0] for path in ROOT.rglob("*.py") for m in _imports(path)}
    allowed = {"__future__", "tpmseal", "cryptography"}
    assert {m for m in found - allowed if m not in sys.stdlib_module_names} == set()


def test_sniff_sides_read_on_their_own() -> None:
    """analysis imports no other side of sniff; capture and formats ignore each other."""
    allowed = {"analysis": {"analysis"}, "capture": {"analysis", "capture"},
               "formats": {"analysis", "formats"}}
    crossing = []
    for side, may in allowed.items():
        for path in sorted((ROOT / "sniff" / side).rglob("*.py")):
            for module in _imports(path):
                parts = module.split(".")
                if parts[:2] == ["tpmseal", "sniff"] and (len(parts) < 3 or parts[2] not in may):
                    crossing.append(f"{path.relative_to(ROOT)} imports {module}")
    assert crossing == []
