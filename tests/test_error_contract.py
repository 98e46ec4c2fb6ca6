"""The error contract: every failure is one line `<what happened>; <what to do>`.

The source is scanned: every construction of a :class:`TpmsealError` subclass
must pass a hint, unless the class has a ``default_hint`` (parsers' DecodeError,
TransportError, TPM response codes, response HMAC failures). A message that the
CLI prints must also be a single line.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import tpmseal
from tpmseal.errors import TpmsealError

ROOT = Path(tpmseal.__file__).parent


def _all_error_classes() -> dict[str, type[TpmsealError]]:
    for mod in pkgutil.walk_packages([str(ROOT)], "tpmseal."):
        importlib.import_module(mod.name)
    found: dict[str, type[TpmsealError]] = {}
    todo: list[type[TpmsealError]] = [TpmsealError]
    while todo:
        cls = todo.pop()
        found[cls.__name__] = cls
        todo.extend(cls.__subclasses__())
    return found


def _hint_position(cls: type[TpmsealError]) -> int:
    params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    return params.index("hint")


def _constructions_without_hint() -> list[str]:
    classes = _all_error_classes()
    missing = []
    for path in sorted(ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) \
                else None
            cls = classes.get(name or "")
            if cls is None or cls.default_hint is not None:
                continue
            if len(node.args) > _hint_position(cls) or any(k.arg in ("hint", None)
                                                            for k in node.keywords):
                continue
            missing.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    return missing


def test_every_raise_gives_a_hint() -> None:
    assert _constructions_without_hint() == []


def test_the_scan_finds_a_missing_hint(tmp_path: Path) -> None:
    """The scanner itself: a hint-less UsageError is reported, a hinted one is not."""
    tree = ast.parse('raise UsageError("bad")\nraise UsageError("bad", "do this")\n')
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    pos = _hint_position(_all_error_classes()["UsageError"])
    assert [len(c.args) > pos for c in calls] == [False, True]


def test_default_hints_make_one_line_with_a_hint() -> None:
    for cls in _all_error_classes().values():
        if cls.default_hint is None:
            continue
        params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        args: list[object] = []
        for p in params[:_hint_position(cls)]:
            args.append(0x100 if p in ("rc", "offset") else "PolicyCheck" if p == "command"
                        else None if p == "changed" else "something failed")
        line = cls(*args).one_line()  # type: ignore[arg-type]
        assert "; " in line and "\n" not in line, (cls.__name__, line)


def test_one_line_folds_newlines() -> None:
    e = TpmsealError("first\nsecond", "do\nthis")
    assert e.one_line() == "first second; do this"
