"""Attack 12: salt stripping and session swapping — StartAuthSession has no HMAC.

The interposer (tests/attacks/strip.py) turns every salted StartAuthSession into
an unsalted one (or its own session), fixes up the HMACs the TPM then expects,
and decrypts whatever the TPM encrypts under the resulting empty key. It robs
tpm2-tools' EK-salted policy unseal and a tpmseal flow weakened to ask for the
encrypted Unseal response before confirming the session (as tpmseal did before
the confirmation rule, session/auth.py). Against tpmseal, on every path, it
recovers nothing, tpmseal exits 6, and nothing changes on disk or in NV.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from attacks.bus import direct, expect_error, interposer, tpm, unchanged
from attacks.strip import SaltStripper
from test_attack_mitm import TOOLS_FLOW, tools_flow
from tpmseal.client.tpm import Tpm
from tpmseal.errors import ExitCode
from tpmseal.recipes import sealing
from tpmseal.recipes.blob import SaltKey, SealedBlob
from tpmseal.recipes.trust import start_salted
from tpmseal.session.auth import AuthSession
from tpmseal.sniff.capture.hooks import HookContext, Verdict
from tpmseal.transport.simulator import Simulator
from tpmseal.wire import commands as cmds
from tpmseal.wire.constants import TPM_CC, TPM_RH, TPM_SE, TPMA_SESSION
from tpmseal.wire.rc import TpmResponseError

EK, SRK = 0x81010001, 0x81000001
EVE_SRK = 0x81000002
PRIV_NV, PUB_NV = 0x01800000, 0x01900000

needs_tools = pytest.mark.skipif(shutil.which("tpm2_create") is None,
                                 reason="tpm2-tools is not installed (apt-get install tpm2-tools)")


def srk_names(sim: Simulator) -> dict[int, bytes]:
    """The SRKs' Names: public, the attacker reads them whenever it likes."""
    out = {}
    with Tpm.open(sim.uri) as t:
        for h in (SRK, EVE_SRK):
            try:
                t.read_public(h)
                out[h] = t.names[h]
            except TpmResponseError:  # a profile's SRK may be absent
                continue
    return out


def nv_private(sim: Simulator) -> bytes:
    """EVE's NV private part: anyone on the bus can read it (owner auth is empty)."""
    with Tpm.open(sim.uri) as t:
        pub = t.nv_read_public(PRIV_NV)
        return t.nv_read(PRIV_NV, pub.data_size)


# ------------------------------------------------------------------ the attack works


@needs_tools
@pytest.mark.parametrize("mode", ["strip", "own"])
def test_stripping_robs_tpm2_tools_salted_unseal(tcg_sim: Simulator, tmp_path: Path,
                                                 mode: str) -> None:
    secret = os.urandom(32)
    (tmp_path / "secret.bin").write_bytes(secret)
    assert TOOLS_FLOW.exists()
    done = tools_flow(tcg_sim.uri.replace("unix:", "swtpm:path="), tmp_path, "seal")
    assert done.returncode == 0, done.stderr[-800:]
    atk = SaltStripper(mode, srk_names(tcg_sim))
    with interposer(tcg_sim, on_command=atk.on_command, on_response=atk.on_response) as p:
        done = tools_flow(p.tools_tcti, tmp_path, "unseal")
        # ESAPI notices at the response HMAC - after the secret crossed under a known key
        assert done.returncode != 0
        assert atk.stripped == 1
        assert atk.got(secret), atk
    tools_flow(tcg_sim.uri.replace("unix:", "swtpm:path="), tmp_path, "cleanup")


def _weakened_unseal(tpm_: Tpm, blob: SealedBlob, salt: SaltKey | None,
                     run: Callable[[AuthSession], None], pin: bytes | None,
                     keep: list[AuthSession] | None = None) -> bytes:
    """tpmseal's unseal before the confirmation rule: the first response HMAC it
    checks is the encrypted Unseal response's."""
    assert salt is not None
    loaded = tpm_.run(cmds.Load(blob.parent_handle, blob.private, blob.public))
    with tpm_.scoped(loaded.object_handle) as handle:
        s = start_salted(tpm_, salt.public, salt.handle, TPM_SE.POLICY, TPMA_SESSION.encrypt)
        with tpm_.scoped(s.handle):
            run(s)
            s.auth_value = (pin or b"") if blob.pin else b""
            return tpm_.run(cmds.Unseal(handle), s).out_data


@pytest.mark.parametrize("mode", ["strip", "own"])
def test_stripping_robs_a_weakened_tpmseal_unseal(tcg_sim: Simulator, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  mode: str) -> None:
    secret = os.urandom(32)
    key, blob = tmp_path / "key", tmp_path / "blob.json"
    key.write_bytes(secret)
    assert direct(tcg_sim, "seal", "--input", str(key), "--output", str(blob)).rc == 0
    monkeypatch.setattr(sealing, "unseal_object", _weakened_unseal)
    monkeypatch.setattr(AuthSession, "check_can_encrypt_response",
                        AuthSession.check_can_encrypt)
    atk = SaltStripper(mode, srk_names(tcg_sim))
    with interposer(tcg_sim, on_command=atk.on_command, on_response=atk.on_response) as p:
        r = tpm(p, "unseal", "--input", str(blob))
        # the weakened flow notices too - at the Unseal response, too late
        expect_error(r, ExitCode.INTEGRITY, "HMAC")
    assert atk.got(secret), atk


def test_the_rule_refuses_the_weakened_flow_itself(tcg_sim: Simulator, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the monkeypatched rule, the weakened flow cannot even be written."""
    key, blob = tmp_path / "key", tmp_path / "blob.json"
    key.write_bytes(os.urandom(32))
    assert direct(tcg_sim, "seal", "--input", str(key), "--output", str(blob)).rc == 0
    monkeypatch.setattr(sealing, "unseal_object", _weakened_unseal)
    r = direct(tcg_sim, "unseal", "--input", str(blob))
    assert r.rc == ExitCode.USAGE and "before a response HMAC has confirmed" in r.err


# ---------------------------------------------------------- and fails against tpmseal

Prepare = Callable[[Simulator, Path, bytes], tuple[list[str], list[Path], dict[str, bytes]]]


def _blob(pin: bool) -> Prepare:
    def prep(sim: Simulator, d: Path, secret: bytes) -> tuple[list[str], list[Path],
                                                               dict[str, bytes]]:
        (d / "key").write_bytes(secret)
        (d / "pin").write_bytes(b"2468")
        extra = ["--pin-file", str(d / "pin")] if pin else []
        r = direct(sim, "seal", *extra, "--input", str(d / "key"), "--output", str(d / "b.json"))
        assert r.rc == 0, r.err
        known = {"Load": SealedBlob.from_json((d / "b.json").read_bytes()).private}
        return extra, [d / "b.json"], known
    return prep


def _nv(sim: Simulator, d: Path, secret: bytes) -> tuple[list[str], list[Path],
                                                          dict[str, bytes]]:
    (d / "key").write_bytes(secret)
    r = direct(sim, "seal", "--profile", "eve", "--nv", "--input", str(d / "key"))
    assert r.rc == 0, r.err
    return [], [], {"Load": nv_private(sim)}


def _vault(sim: Simulator, d: Path, secret: bytes) -> tuple[list[str], list[Path],
                                                             dict[str, bytes]]:
    first = direct(sim, "vault-key", "--profile", "eve")
    assert first.rc == 0, first.err
    (d / "vault").write_bytes(first.out)
    return [], [], {"Load": nv_private(sim)}


def _nothing(sim: Simulator, d: Path, secret: bytes) -> tuple[list[str], list[Path],
                                                               dict[str, bytes]]:
    (d / "key").write_bytes(secret)
    return [], [], {}


# (name, profile, prepare, argv under attack; "{d}" is the work directory)
PATHS: list[tuple[str, str, Prepare, list[str]]] = [
    ("seal", "tcg", _nothing, ["seal", "--input", "{d}/key", "--output", "{d}/new.json"]),
    ("seal-pin", "tcg", _nothing, ["seal", "--pin-file", "{d}/key", "--input", "{d}/key",
                                   "--output", "{d}/new.json"]),
    ("unseal", "tcg", _blob(False), ["unseal", "--input", "{d}/b.json"]),
    ("unseal-pin", "tcg", _blob(True), ["unseal", "--input", "{d}/b.json"]),
    ("reseal", "tcg", _blob(False), ["reseal", "--input", "{d}/b.json", "--pcrs",
                                     "sha256:0,4,7"]),
    ("reseal-pin", "tcg", _blob(True), ["reseal", "--input", "{d}/b.json"]),
    ("seal-nv", "eve", _nothing, ["seal", "--profile", "eve", "--nv", "--input", "{d}/key"]),
    ("unseal-nv", "eve", _nv, ["unseal", "--profile", "eve", "--nv"]),
    ("reseal-nv", "eve", _nv, ["reseal", "--profile", "eve", "--nv", "--pcrs",
                               "sha256:0,4,7"]),
    ("vault-first-boot", "eve", _nothing, ["vault-key", "--profile", "eve"]),
    ("vault-every-boot", "eve", _vault, ["vault-key", "--profile", "eve"]),
]


def _ecc(sim: Simulator, d: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pin the TPM's ECC EK (TCG template L-2) in a fresh trust file instead."""
    trust = d / "ecc-trust.json"
    r = direct(sim, "--trust-file", str(trust), "provision", "--ek-type", "ecc")
    assert r.rc == 0, r.err
    monkeypatch.setenv("TPMSEAL_TRUST_FILE", str(trust))


CASES = [(*p, ek) for p in PATHS for ek in ("rsa", "ecc") if ek == "rsa" or p[1] == "tcg"]


@pytest.mark.parametrize("mode", ["strip", "own"])
@pytest.mark.parametrize(("name", "profile", "prepare", "argv", "ek"), CASES,
                         ids=[f"{c[0]}-{c[4]}" for c in CASES])
def test_stripping_gets_nothing_from_tpmseal(request: pytest.FixtureRequest, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch, mode: str,
                                             name: str, profile: str, prepare: Prepare,
                                             argv: list[str], ek: str) -> None:
    sim: Simulator = request.getfixturevalue(f"{profile}_sim")
    if ek == "ecc":
        _ecc(sim, tmp_path, monkeypatch)
    secret = os.urandom(32)
    extra, files, known = prepare(sim, tmp_path, secret)
    if name.endswith("-pin") and not name.startswith("seal"):
        argv = [*argv, *extra]
    argv = [a.replace("{d}", str(tmp_path)) for a in argv]
    trust = Path(os.environ["TPMSEAL_TRUST_FILE"])
    watch = unchanged(sim, trust, tmp_path / "new.json", *files)
    vault = (tmp_path / "vault").read_bytes() if (tmp_path / "vault").exists() else None
    atk = SaltStripper(mode, srk_names(sim), known)
    with interposer(sim, on_command=atk.on_command, on_response=atk.on_response) as p:
        r = tpm(p, *argv)
    expect_error(r, ExitCode.INTEGRITY, "failed its HMAC check", what=name)
    assert atk.rehmaced >= 1  # the TPM accepted the interposer's fixed-up command
    assert atk.stripped >= 1
    assert not atk.got(secret), atk
    if vault is not None:
        assert not atk.got(vault), atk
    assert not any(len(x.data) >= 16 and x.data in (secret, vault) for x in atk.recovered)
    watch.check()
    # and without the interposer everything still works
    if name in ("unseal", "unseal-nv"):
        assert direct(sim, *argv).out == secret


@pytest.mark.parametrize("mode", ["strip", "own"])
@pytest.mark.parametrize("layout", ["blob", "nv"])
def test_stripping_only_the_seal_half_of_a_reseal(request: pytest.FixtureRequest,
                                                  tmp_path: Path, mode: str,
                                                  layout: str) -> None:
    """reseal's two salted sessions: the unseal half goes through untouched (the client
    then holds the secret), the seal half's session is stripped. The audited
    PCR_Read must stop it before Create sends the secret."""
    profile = "tcg" if layout == "blob" else "eve"
    sim: Simulator = request.getfixturevalue(f"{profile}_sim")
    secret = os.urandom(32)
    if layout == "blob":
        _, files, known = _blob(False)(sim, tmp_path, secret)
        argv = ["reseal", "--input", str(tmp_path / "b.json"), "--pcrs", "sha256:0,4,7"]
    else:
        _, files, known = _nv(sim, tmp_path, secret)
        argv = ["reseal", "--profile", "eve", "--nv", "--pcrs", "sha256:0,4,7"]
    watch = unchanged(sim, Path(os.environ["TPMSEAL_TRUST_FILE"]), *files)
    atk = SaltStripper(mode, srk_names(sim), known)
    salted = {"seen": 0}

    def on_command(ctx: HookContext) -> Verdict:
        if ctx.code == TPM_CC.StartAuthSession:
            cmd, _ = ctx.parse()
            assert isinstance(cmd, cmds.StartAuthSession)
            if cmd.tpm_key != TPM_RH.NULL:
                salted["seen"] += 1
                if salted["seen"] == 1:  # the unseal half's policy session: let it be
                    return None
        return atk.on_command(ctx)

    with interposer(sim, on_command=on_command, on_response=atk.on_response) as p:
        r = tpm(p, *argv)
        sent = [e.name for e in p.exchanges]
    expect_error(r, ExitCode.INTEGRITY, "failed its HMAC check")
    assert atk.stripped == 1 and "Unseal" in sent and "Create" not in sent, (atk, sent)
    assert not atk.got(secret), atk
    watch.check()
