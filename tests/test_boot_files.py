"""boot/boot-files lists every module the initramfs unlock path can import.

tpmseal imports many modules on use (start-up time), so a module the unlock
path loads only for one kind of token (systemd-pcrlock, signed policies) is
missing from an initramfs unless boot-files names it: the unlock then fails at
boot with an ImportError. This reads the imports made inside functions of every
module boot-files loads and requires each tpmseal target to be listed too,
except the ones no unlock reaches (sealing, provisioning, the simulator).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"

#: imported on use by modules of the unlock path, but only by flows an initramfs
#: unlock never runs
NOT_AT_BOOT = {
    "tpmseal.recipes.templates",      # seal() only
    "tpmseal.recipes.hierarchy",      # provision
    "tpmseal.transport.simulator",    # sim: URIs
    "tpmseal.transport.mssim",        # mssim: URIs
    "tpmseal.wire.handles",           # the sniffer's handle table
    "tpmseal.wire.decode",            # the sniffer's decoder
    "tpmseal.recipes.probe",
    "tpmseal.recipes.ekcert",         # provision --ek-ca
    "tpmseal.recipes.systemd_enroll",  # luks enroll --token-type systemd-tpm2
}


def _listed() -> set[str]:
    out = subprocess.run([sys.executable, str(ROOT / "boot" / "boot-files")],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    modules = set()
    for line in out.splitlines():
        kind, _, path = line.partition(" ")
        if kind == "file" and path.startswith(str(SRC.resolve()) + "/"):
            rel = Path(path).relative_to(SRC.resolve()).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            modules.add(".".join(parts))
    return modules


def _lazy_imports(module: str) -> set[str]:
    path = SRC / Path(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    found = set()
    for fn in ast.walk(ast.parse(path.read_text())):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.startswith("tpmseal"):
                    found.add(node.module)
                    found.update(f"{node.module}.{a.name}" for a in node.names
                                 if (SRC / Path(*node.module.split(".")) / f"{a.name}.py")
                                 .exists())
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("tpmseal"))
    return found


def test_every_module_the_unlock_path_imports_on_use_is_listed() -> None:
    listed = _listed()
    assert "tpmseal.recipes.luks" in listed
    missing = {target: module for module in sorted(listed)
               for target in _lazy_imports(module)
               if target not in listed and target not in NOT_AT_BOOT}
    assert not missing, f"add these to boot/boot-files (imported on use by): {missing}"


def test_every_token_type_module_is_listed() -> None:
    """recipes/unlockers.py imports a token type's module by its name, on use."""
    from tpmseal.cli.luks import SYSTEMD
    from tpmseal.recipes.unlockers import KINDS, kind_module

    assert SYSTEMD in KINDS  # cli/luks.py names systemd's type without importing its module

    assert set(KINDS.values()) <= _listed()
    for kind in KINDS:
        assert kind == kind_module(kind).TOKEN_TYPE
