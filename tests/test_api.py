"""The library API (docs/API.md): tpmseal.open_tpm/provision/seal/unseal/reseal/vault_key."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import tpmseal
from test_seal_support import cli, extend, secret_bytes
from tpmseal.client.tpm import Tpm
from tpmseal.recipes.profiles import TCG
from tpmseal.transport.simulator import Simulator
from tpmseal.wire import commands as cmds
from tpmseal.wire.constants import TPM_RH


def test_import_tpmseal_loads_nothing_else() -> None:
    code = ("import sys, tpmseal; "
            "print(sorted(m for m in sys.modules if m.startswith(('tpmseal', 'typing', "
            "'cryptography'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "['tpmseal']"


def test_every_exported_name_resolves() -> None:
    for name in tpmseal.__all__:
        assert getattr(tpmseal, name) is not None, name
    assert set(tpmseal.__all__) <= set(dir(tpmseal))
    with pytest.raises(AttributeError):
        tpmseal.no_such_thing  # noqa: B018
    assert tpmseal.PolicyMismatchError.exit_code == 5
    assert tpmseal.TrustError.exit_code == tpmseal.ExitCode.INTEGRITY
    assert int(tpmseal.ExitCode.INTEGRITY) == 6
    assert issubclass(tpmseal.TrustError, tpmseal.IntegrityError)


def test_seal_unseal_reseal(tcg_sim: Simulator, tmp_path: Path) -> None:
    key = secret_bytes()
    out = tmp_path / "disk.json"
    with tpmseal.open_tpm(tcg_sim.uri) as tpm:
        blob = tpmseal.seal(tpm, key, pcrs="sha256:0,7", output=out)
        assert blob.sealed_with == "aes-128-cfb" and out.stat().st_mode & 0o777 == 0o600
        assert tpmseal.unseal(tpm, out) == key
        assert tpmseal.unseal(tpm, str(out)) == key
        assert tpmseal.unseal(tpm, tpmseal.SealedBlob.from_json(out.read_text())) == key
        with pytest.raises(tpmseal.UsageError, match="already holds"):
            tpmseal.seal(tpm, key, output=out)
        kept = tpmseal.seal(tpm, key, pcrs="sha256:0")  # returned, not written
        assert tpmseal.unseal(tpm, kept) == key
        moved = tpmseal.reseal(tpm, out, pcrs="sha256:0,1")
        assert json.loads(out.read_text())["pcrs"] == {"sha256": [0, 1]}
        assert moved.pcrs == tpmseal.SealedBlob.from_json(out.read_text()).pcrs
        with pytest.raises(tpmseal.UsageError, match="on the bus in plaintext"):
            tpmseal.seal(tpm, key, legacy=True)
        legacy = tpmseal.seal(tpm, key, legacy=True, allow_downgrade=True)
        assert legacy.sealed_with == "legacy"
    extend(tcg_sim.uri, 1)
    # $TPMSEAL_TPM, set by the fixture, names the TPM
    with tpmseal.open_tpm() as tpm, pytest.raises(tpmseal.PolicyMismatchError) as e:
        tpmseal.unseal(tpm, out)
    assert e.value.changed == {"sha256": [1]} and e.value.exit_code == 5


def test_pin(tcg_sim: Simulator) -> None:
    key = secret_bytes()
    with tpmseal.open_tpm() as tpm:
        blob = tpmseal.seal(tpm, key, pin=b"1234")
        with pytest.raises(tpmseal.AuthFailedError):
            tpmseal.unseal(tpm, blob, pin=b"0000")
        assert tpmseal.unseal(tpm, blob, pin=b"1234") == key


def test_vault_key(eve_sim: Simulator) -> None:
    with tpmseal.open_tpm() as tpm:
        first = tpmseal.vault_key(tpm)
        assert first.action == "generated" and len(first.key) == 32
        again = tpmseal.vault_key(tpm)
        assert (again.action, again.key) == ("unsealed", first.key)
        assert tpmseal.unseal(tpm, "nv", profile="eve") == first.key
    assert first.key.hex() not in repr(first)


def test_provision(blank_sim: Simulator, tmp_path: Path) -> None:
    trust = tmp_path / "trust.json"
    with tpmseal.open_tpm(blank_sim.uri) as tpm:
        r = tpmseal.provision(tpm, trust_file=trust)
        assert r.ek.created and r.srk.created and r.aes_128_cfb
        again = tpmseal.provision(tpm, trust_file=trust)
        assert not again.ek.created
        key = secret_bytes()
        blob = tpmseal.seal(tpm, key, trust_file=trust, allow_unmeasured=True)
        assert tpmseal.unseal(tpm, blob, trust_file=trust) == key


def test_provision_defaults_to_the_clis_ek_type(blank_sim: Simulator, tmp_path: Path) -> None:
    """The API's default EK type is the CLI's (``auto``): on the same fresh swtpm, which has
    NIST P-256, both create and pin the ECC EK."""
    r = cli(["--tpm", blank_sim.uri, "--trust-file", str(tmp_path / "cli.json"), "provision",
             "--json"])
    assert r.rc == 0, r.err
    by_cli = json.loads(r.out)["ek"]
    assert by_cli["created"]
    ek = int(by_cli["handle"], 16)
    with Tpm.open(blank_sim.uri) as t:  # a fresh TPM again: no persisted EK to keep
        t.run(cmds.EvictControl(TPM_RH.OWNER, ek, ek))
    with tpmseal.open_tpm(blank_sim.uri) as tpm:
        by_api = tpmseal.provision(tpm, trust_file=tmp_path / "api.json")
    assert by_api.ek.created and by_api.ek.handle == ek == TCG.ek_ecc
    assert by_api.ek.name.hex() == by_cli["name"]  # the same template: the same key


def test_unreachable_tpm_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(tpmseal.TransportError) as e:
        tpmseal.open_tpm(f"unix:{tmp_path}/nothing.sock")
    assert e.value.exit_code == 3 and "no TPM socket" in e.value.one_line()


def test_nothing_below_the_facade_imports_it() -> None:
    """api.py sits beside cli, on recipes: no layer imports it (tpmseal/__init__ only lazily)."""
    from test_layering import ROOT, _imports

    users = [str(p.relative_to(ROOT)) for p in sorted(ROOT.rglob("*.py"))
             if p.name not in ("api.py", "__init__.py") or p.parent != ROOT
             if any(m == "tpmseal.api" or m.startswith("tpmseal.api.") for m in _imports(p))]
    assert users == []
