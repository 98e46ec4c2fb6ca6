"""systemd-tpm2 tokens sealed to a systemd-pcrlock policy (``tpm2_pcrlock``, systemd 255+),
unlocked by tpmseal through its EK-salted sessions, with cryptsetup 2.6 checking the key.

Bookworm's systemd 252 has no systemd-pcrlock, so :func:`pcrlock_setup` builds what
``systemd-pcrlock make-policy`` and ``systemd-cryptenroll --tpm2-pcrlock`` make, with
tpm2-tools on swtpm: an NV index with pcrlock's attributes (ordinary,
WRITEALL|POLICYWRITE|OWNERREAD; written here through PolicyCommandCode(NV_Write)
instead of pcrlock's PolicySigned by its recovery PIN), holding as a TPMT_HA the fold
of a prediction (PolicyPCR over the single-value PCRs, then a PolicyOR per
multi-value PCR), computed by tpm2-tools trial sessions; a sealed object under the
SRK with PolicyAuthorizeNV (+ PolicyAuthValue), ``pcrlock.json`` as pcrlock writes
it, and the token imported by the real ``cryptsetup token import``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from attacks.bus import assert_no_leak, expect_error, interposer, names, tpm
from luks_support import make_image, needs_cryptsetup, opens
from test_luks_systemd_newer import SRK, _tools, add_token
from test_seal_support import assert_one_line_error, cli, extend, flush_leftovers, read_pcrs
from tpmseal.client.tpm import Tpm
from tpmseal.errors import ExitCode, IntegrityError
from tpmseal.recipes import cryptsetup as cs
from tpmseal.recipes import systemd_pcrlock, systemd_tpm2
from tpmseal.recipes.trust import load, trust_path
from tpmseal.sniff.capture.hooks import (
    HookContext,
    Respond,
    Verdict,
    build_command,
    error_response,
    parse_command,
)
from tpmseal.transport.simulator import Simulator
from tpmseal.wire import commands as cmds
from tpmseal.wire.constants import TPM_ALG, TPM_CC, TPMA_NV
from tpmseal.wire.frames import parse_header
from tpmseal.wire.marshal import tpm2b, u32
from tpmseal.wire.structures import NvPublic

pytestmark = [needs_cryptsetup, pytest.mark.skipif(
    shutil.which("tpm2_policyauthorizenv") is None,
    reason="tpm2-tools is not installed (apt-get install tpm2-tools)")]

INDEX = 0x01C1A5E0
OTHER = INDEX + 1
PIN = b"1357"
SINGLE = (0, 7)  # one allowed value each: the current one
#: PCR -> its allowed values besides the current one (the current one is listed at
#: the position given, so both PolicyOR branch positions are exercised)
MULTI = {11: (1, [b"\x11" * 32]), 12: (0, [b"\x12" * 32, b"\x13" * 32])}
ATTRS = TPMA_NV.WRITEALL | TPMA_NV.POLICYWRITE | TPMA_NV.OWNERREAD
ESYS_NV_RESOURCE = 2  # IESYSC_NV_RSRC in a serialized ESYS_TR


def _trial(tcti: str, work: Path, out: str, *steps: list[str]) -> bytes:
    """The digest of a tpm2-tools trial session after *steps* (each an argv without -S)."""
    _tools(tcti, work, "tpm2_startauthsession", "-S", "trial.ctx")
    for step in steps:
        _tools(tcti, work, step[0], "-S", "trial.ctx", *step[1:], "-L", out)
    _tools(tcti, work, "tpm2_flushcontext", "trial.ctx")
    return (work / out).read_bytes()


def _values_file(work: Path, name: str, values: list[bytes]) -> str:
    (work / name).write_bytes(b"".join(values))
    return name


def define_index(tcti: str, work: Path, index: int, fold: bytes) -> NvPublic:
    """An NV index as systemd-pcrlock defines it, holding TPMT_HA(sha256, *fold*)."""
    write_policy = _trial(tcti, work, "write.policy",
                          ["tpm2_policycommandcode", "TPM2_CC_NV_Write"])
    _tools(tcti, work, "tpm2_nvdefine", "-C", "o", "-s", "34", "-a",
           "ownerread|policywrite|writeall", "-L", "write.policy", hex(index))
    (work / "nv.data").write_bytes(b"\x00\x0b" + fold)
    _tools(tcti, work, "tpm2_startauthsession", "--policy-session", "-S", "w.ctx")
    _tools(tcti, work, "tpm2_policycommandcode", "-S", "w.ctx", "TPM2_CC_NV_Write")
    _tools(tcti, work, "tpm2_nvwrite", "-C", hex(index), "-P", "session:w.ctx", "-i",
           "nv.data", hex(index))
    _tools(tcti, work, "tpm2_flushcontext", "w.ctx")
    return NvPublic(index, TPM_ALG.SHA256, ATTRS, write_policy, 34)


def pcrlock_setup(sim: Simulator, work: Path, secret: bytes, pin: bytes | None = None,
                  salt: bytes | None = None, fixed: int | None = None,
                  ) -> tuple[dict[str, object], Path]:
    """(token, pcrlock.json) for *secret*, as systemd-pcrlock and systemd-cryptenroll
    --tpm2-pcrlock make them (with *fixed*, also bound to that PCR's current value, as
    ``--tpm2-pcrs`` adds); the fold is computed by tpm2-tools and must equal tpmseal's."""
    tcti = sim.tools_tcti
    work.mkdir(exist_ok=True)
    now = read_pcrs(sim.uri, TPM_ALG.SHA256, [*SINGLE, *MULTI])
    allowed = {p: [now[(TPM_ALG.SHA256, p)]] for p in SINGLE}
    for p, (at, others) in MULTI.items():
        allowed[p] = list(others)
        allowed[p].insert(at, now[(TPM_ALG.SHA256, p)])
    singles = ["tpm2_policypcr", "-l", "sha256:" + ",".join(map(str, SINGLE)), "-f",
               _values_file(work, "single.vals", [allowed[p][0] for p in SINGLE])]
    prefix: list[list[str]] = [singles]
    for p in sorted(MULTI):  # each branch: the fold so far, then PolicyPCR(p, value)
        files = []
        for i, v in enumerate(allowed[p]):
            _trial(tcti, work, f"b{p}.{i}", *prefix, [
                "tpm2_policypcr", "-l", f"sha256:{p}", "-f", _values_file(work, "v", [v])])
            files.append(f"b{p}.{i}")
        prefix = [["tpm2_policyor", "-l", "sha256:" + ",".join(files)]]
    fold = _trial(tcti, work, "fold", *prefix)
    nv = define_index(tcti, work, INDEX, fold)
    lock = {"pcrBank": "sha256",
            "pcrValues": [{"pcr": p, "values": [v.hex() for v in allowed[p]]}
                          for p in sorted(allowed)],
            "nvIndex": INDEX, "nvHandle": _b64(esys_nv(nv)), "nvPublic": _b64(tpm2b(nv.marshal())),
            "srkHandle": "", "pinPublic": "", "pinPrivate": ""}
    path = work / "pcrlock.json"
    path.write_text(json.dumps(lock))
    assert systemd_pcrlock.parse(path.read_bytes(), str(path)).digest() == fold

    (work / "secret").write_bytes(secret)
    _tools(tcti, work, "tpm2_readpublic", "-c", hex(SRK), "-t", "srk.tr")
    steps = [["tpm2_policyauthorizenv", "-C", "o", hex(INDEX)]]
    if fixed is not None:
        steps.append(["tpm2_policypcr", "-l", f"sha256:{fixed}"])
    if pin is not None:
        steps.append(["tpm2_policyauthvalue"])
    policy = _trial(tcti, work, "policy", *steps)
    auth = []
    if pin is not None:
        salted = base64.b64encode(hashlib.pbkdf2_hmac("sha256", pin, salt, 10000)) \
            if salt is not None else pin
        auth = ["-p", "hex:" + hashlib.sha256(salted).hexdigest()]
    _tools(tcti, work, "tpm2_create", "-C", hex(SRK), "-g", "sha256", "-a",
           "fixedtpm|fixedparent", "-L", "policy", "-i", "secret", "-u", "obj.pub",
           "-r", "obj.priv", *auth)
    token: dict[str, object] = {
        "type": "systemd-tpm2", "keyslots": ["1"],
        "tpm2-blob": _b64((work / "obj.priv").read_bytes() + (work / "obj.pub").read_bytes()),
        "tpm2-pcrs": [] if fixed is None else [fixed], "tpm2-pcr-bank": "sha256",
        "tpm2-primary-alg": "ecc",
        "tpm2-policy-hash": policy.hex(), "tpm2-pin": pin is not None, "tpm2_pcrlock": True,
        "tpm2_srk": _b64((work / "srk.tr").read_bytes()), "tpm2_pcrlock_nv": lock["nvHandle"]}
    if salt is not None:
        token["tpm2_salt"] = _b64(salt)
    flush_leftovers(sim.uri)
    return token, path


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def esys_nv(nv: NvPublic) -> bytes:
    """tpm2-tss' serialized ESYS_TR of an NV index: handle, Name, type, TPM2B_NV_PUBLIC."""
    return u32(nv.nv_index) + tpm2b(nv.name()) + u32(ESYS_NV_RESOURCE) + tpm2b(nv.marshal())


@pytest.fixture
def enrolled(tcg_sim: Simulator, tmp_path: Path) -> tuple[Path, Path, bytes]:
    """(image, pcrlock.json, secret): a LUKS2 image with a pcrlock token in token 0."""
    img, pw = make_image(tmp_path)
    secret = os.urandom(32)
    token, lock = pcrlock_setup(tcg_sim, tmp_path / "t", secret)
    add_token(img, pw, secret, token)
    return img, lock, secret


OK = b"token 0 (systemd-tpm2) unlocks keyslot 1\n"


@pytest.mark.parametrize(("pin", "salt"), [(None, None), (PIN, os.urandom(16))],
                         ids=["no-pin", "salted-pin"])
def test_pcrlock_token_unlocks(tcg_sim: Simulator, tmp_path: Path, pin: bytes | None,
                               salt: bytes | None) -> None:
    img, pw = make_image(tmp_path)
    secret = os.urandom(32)
    token, lock = pcrlock_setup(tcg_sim, tmp_path / "t", secret, pin, salt)
    add_token(img, pw, secret, token)
    args = ["luks", "test", str(img), "--pcrlock", str(lock)]
    if pin is not None:
        assert_one_line_error(cli([*args, "--pin-file", str(_write(tmp_path / "bad", b"0"))]),
                              ExitCode.AUTH_FAILED, "wrong PIN")
        args += ["--pin-file", str(_write(tmp_path / "pin", pin + b"\n"))]
    r = cli(args)
    assert (r.rc, r.out) == (0, OK), r.err
    assert b"pcrlock=True" in cli(["luks", "list", str(img)]).out


def test_pcrlock_with_fixed_pcrs(tcg_sim: Simulator, tmp_path: Path) -> None:
    """PolicyAuthorizeNV, then PolicyPCR over ``tpm2-pcrs`` (PCR 9, outside the
    prediction): unlocks, and a change of PCR 9 alone is exit 5."""
    img, pw = make_image(tmp_path)
    secret = os.urandom(32)
    token, lock = pcrlock_setup(tcg_sim, tmp_path / "t", secret, fixed=9)
    add_token(img, pw, secret, token)
    args = ["luks", "test", str(img), "--pcrlock", str(lock)]
    r = cli(args)
    assert (r.rc, r.out) == (0, OK), r.err
    extend(tcg_sim.uri, 9)
    assert_one_line_error(cli(args), ExitCode.PCR_MISMATCH, "sha256:9 changed")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


@pytest.mark.parametrize("pcr", [7, 11, 12], ids=["single", "first-or", "second-or"])
def test_a_pcr_outside_the_prediction_is_refused(
        tcg_sim: Simulator, enrolled: tuple[Path, Path, bytes], pcr: int) -> None:
    img, lock, _ = enrolled
    extend(tcg_sim.uri, pcr)
    assert_one_line_error(cli(["luks", "test", str(img), "--pcrlock", str(lock)]),
                          ExitCode.PCR_MISMATCH, f"PCR {pcr} holds a value")


def test_without_a_policy_file(enrolled: tuple[Path, Path, bytes]) -> None:
    if any(os.path.exists(p) for p in systemd_pcrlock.PATHS):
        pytest.skip("this machine has a pcrlock.json of its own")
    assert_one_line_error(cli(["luks", "test", str(enrolled[0])]), ExitCode.USAGE,
                          "pcrlock.json", "--pcrlock FILE")


def _edited(lock: Path, **change: object) -> Path:
    doc = json.loads(lock.read_text())
    doc.update(change)
    out = lock.with_name("edited.json")
    out.write_text(json.dumps(doc))
    return out


def test_tampered_policy_file_is_denied(tcg_sim: Simulator,
                                        enrolled: tuple[Path, Path, bytes]) -> None:
    """An attacker who moved PCR 11 and wrote its new value into pcrlock.json passes the
    fold, but the index holds the old one: PolicyAuthorizeNV refuses. An edited index
    description is refused before any policy command."""
    img, lock, secret = enrolled
    doc = json.loads(lock.read_text())
    extend(tcg_sim.uri, 11)
    now = read_pcrs(tcg_sim.uri, TPM_ALG.SHA256, [11])[(TPM_ALG.SHA256, 11)]
    values = [dict(e, values=[*e["values"], now.hex()]) if e["pcr"] == 11 else e
              for e in doc["pcrValues"]]
    with interposer(tcg_sim) as p:
        r = tpm(p, "luks", "test", str(img), "--pcrlock", str(_edited(lock, pcrValues=values)))
        exchanges = p.exchanges
    expect_error(r, ExitCode.BAD_INPUT, "PolicyAuthorizeNV", "does not hold")
    assert "PolicyOR" in names(exchanges) and "Unseal" not in names(exchanges)
    assert_no_leak(exchanges, secret, base64.b64encode(secret))
    nv = NvPublic(INDEX, TPM_ALG.SHA256, ATTRS | TPMA_NV.AUTHREAD, b"\x00" * 32, 34)
    for change, needle in (({"nvPublic": _b64(tpm2b(nv.marshal()))}, "not PolicyAuthorizeNV"),
                           ({"nvIndex": OTHER}, "nvIndex"),
                           ({"nvHandle": _b64(b"other")}, "tpm2_pcrlock_nv"),
                           ({"pcrValues": [{"pcr": 7, "values": ["00"]}]}, "1-byte"),
                           ({"pcrBank": "md5"}, "md5")):
        assert_one_line_error(cli(["luks", "test", str(img), "--pcrlock",
                                   str(_edited(lock, **change))]), ExitCode.BAD_INPUT, needle)


def test_bus_shows_no_key(tcg_sim: Simulator, tmp_path: Path) -> None:
    """Through the sniffer: the fold, PolicyAuthorizeNV and Unseal in one EK-salted
    session; no NV_ReadPublic (the index's Name comes from pcrlock.json and the TPM
    checks it), and neither the secret, its base64 nor the PIN crosses."""
    img, pw = make_image(tmp_path)
    secret = os.urandom(32)
    salt = os.urandom(16)
    token, lock = pcrlock_setup(tcg_sim, tmp_path / "t", secret, PIN, salt)
    add_token(img, pw, secret, token)
    rec = load(trust_path(), "tcg")
    with interposer(tcg_sim) as p:
        with Tpm.open(p.uri) as tpm:
            passphrase = systemd_tpm2.unseal_token(tpm, cs.header(str(img)).tokens[0], 0,
                                                   rec, PIN, pcrlock=str(lock))
        exchanges = p.exchanges
    assert passphrase == base64.b64encode(secret)
    assert opens(img, passphrase, 1)
    seen = names(exchanges)
    assert "NV_ReadPublic" not in seen and "CreatePrimary" not in seen, seen
    assert seen.count("PolicyOR") == 2 and seen.count("PolicyAuthorizeNV") == 1, seen
    done = [n for n, e in zip(seen, exchanges, strict=True)
            if e.response and not parse_header(e.response).code]  # swtpm may say RETRY
    assert done == ["PCR_Read", "StartAuthSession", "Load", "PolicyPCR", "PolicyPCR", "PolicyOR",
                    "PolicyPCR", "PolicyOR", "PolicyAuthorizeNV", "PolicyAuthValue", "Unseal",
                    "FlushContext"], " ".join(seen)  # the README's 11, + the PIN
    assert_no_leak(exchanges, secret, passphrase, PIN)


def _redirect(to: int) -> Callable[[HookContext], bytes | None]:
    """Point PolicyAuthorizeNV at index *to* (its password session has no HMAC)."""
    def attack(ctx: HookContext) -> bytes | None:
        if ctx.name != "PolicyAuthorizeNV":
            return None
        cmd, auths = parse_command(ctx.command)
        assert isinstance(cmd, cmds.PolicyAuthorizeNV)
        return build_command(cmds.PolicyAuthorizeNV(cmd.auth_handle, to, cmd.policy_session),
                             auths)

    return attack


def test_interposer_naming_another_index_gets_nothing(tcg_sim: Simulator,
                                                      tmp_path: Path) -> None:
    """The interposer defines its own index holding the same fold (it can: the owner
    password is empty) and points PolicyAuthorizeNV at it. The TPM then puts that
    index's Name into the session digest, and Unseal refuses: exit 6, no key."""
    img, pw = make_image(tmp_path)
    secret = os.urandom(32)
    token, lock = pcrlock_setup(tcg_sim, tmp_path / "t", secret)
    add_token(img, pw, secret, token)
    fold = systemd_pcrlock.parse(lock.read_bytes(), str(lock)).digest()
    define_index(tcg_sim.tools_tcti, tmp_path / "t", OTHER, fold)
    rec = load(trust_path(), "tcg")
    with interposer(tcg_sim) as p:
        with p.interpose(on_command=_redirect(OTHER)), Tpm.open(p.uri) as tpm, \
                pytest.raises(IntegrityError) as e:
            systemd_tpm2.unseal_token(tpm, cs.header(str(img)).tokens[0], 0, rec, None,
                                      pcrlock=str(lock))
        exchanges = p.exchanges
    assert "NV index" in e.value.message and e.value.exit_code == ExitCode.INTEGRITY
    assert names(exchanges).count("PolicyAuthorizeNV") == 1
    assert "Unseal" in names(exchanges)  # sent, and refused by the TPM
    assert_no_leak(exchanges, secret, base64.b64encode(secret))


def test_a_replayed_pcr_read_gains_nothing(tcg_sim: Simulator,
                                           enrolled: tuple[Path, Path, bytes]) -> None:
    """The PCRs are pre-checked with an unauthenticated PCR_Read, for the message. An
    interposer replaying the answer from before PCR 11 moved passes that check, not the
    TPM: PolicyOR refuses the new value, no Unseal is sent, and the PCRs read again in an
    audited session name PCR 11 (exit 5; replaying that read too breaks its HMAC)."""
    img, lock, secret = enrolled
    old: list[bytes] = []

    def record(ctx: HookContext) -> None:
        if ctx.code == TPM_CC.PCR_Read and ctx.response is not None and not old:
            old.append(ctx.response)

    def replay(ctx: HookContext) -> bytes | None:
        plain = ctx.command[:2] == b"\x80\x01"
        return old[0] if ctx.code == TPM_CC.PCR_Read and plain else None

    with interposer(tcg_sim, on_response=record) as p:
        assert tpm(p, "luks", "test", str(img), "--pcrlock", str(lock)).rc == 0 and old
    extend(tcg_sim.uri, 11)
    with interposer(tcg_sim, on_response=replay) as p:
        r = tpm(p, "luks", "test", str(img), "--pcrlock", str(lock))
        exchanges = p.exchanges
    expect_error(r, ExitCode.PCR_MISMATCH, "PCR 11 holds a value")
    assert "PolicyOR" in names(exchanges) and "Unseal" not in names(exchanges)
    assert_no_leak(exchanges, secret, base64.b64encode(secret))


RC_VALUE_P1 = 0x1C4  # TPM_RC_VALUE, parameter 1


def _forge_plain_pcr_read(ctx: HookContext) -> bytes | None:
    """Flip the last byte of every PCR value in an unauthenticated (sessionless) PCR_Read."""
    if ctx.code != TPM_CC.PCR_Read or ctx.response is None \
            or ctx.response[:2] != b"\x80\x01" or parse_header(ctx.response).code:
        return None
    return ctx.response[:-1] + bytes([ctx.response[-1] ^ 1])


def _value_at(code: int) -> Callable[[HookContext], Verdict]:
    return lambda ctx: Respond(error_response(RC_VALUE_P1)) if ctx.code == code else None


@pytest.mark.parametrize("attack", ["pcr-read", "policy-or", "policy-pcr"])
def test_forged_pcr_answers_are_tampering_not_a_pcr_change(
        tcg_sim: Simulator, enrolled: tuple[Path, Path, bytes], attack: str) -> None:
    """Attack 31: the pre-check's plain PCR_Read, or PolicyPCR/PolicyOR's TPM_RC_VALUE,
    carries no HMAC. Forged while the PCRs fit the prediction, they were reported as a
    PCR change (exit 5, "run systemd-pcrlock make-policy"); the PCRs read again in an
    EK-salted audit session fit, so it is tampering (exit 6), no Unseal, no key."""
    img, lock, secret = enrolled
    hooks: dict[str, Any] = (
        {"on_response": _forge_plain_pcr_read} if attack == "pcr-read"
        else {"on_command": _value_at(TPM_CC.PolicyOR if attack == "policy-or"
                                      else TPM_CC.PolicyPCR)})
    with interposer(tcg_sim, **hooks) as p:
        r = tpm(p, "luks", "test", str(img), "--pcrlock", str(lock))
        exchanges = p.exchanges
    expect_error(r, ExitCode.INTEGRITY, "forged", "interposer")
    assert "Unseal" not in names(exchanges)
    assert_no_leak(exchanges, secret, base64.b64encode(secret))


RC_AUTH_FAIL_S1 = 0x98E  # TPM_RC_AUTH_FAIL, session 1 (the owner's password)


@pytest.mark.parametrize(("rc", "attack"), [(RC_VALUE_P1, "value"),
                                            (RC_AUTH_FAIL_S1, "auth-fail")])
def test_forged_policy_authorize_nv_refusal_is_tampering(
        tcg_sim: Simulator, enrolled: tuple[Path, Path, bytes], rc: int, attack: str) -> None:
    """Attack 32: PolicyAuthorizeNV's answer has no HMAC. A forged TPM_RC_VALUE read
    "NV index does not hold the policy pcrlock.json predicts (the file is stale)" (exit
    7, "run systemd-pcrlock make-policy again") and a forged AUTH_FAIL "the owner
    hierarchy has a password … clear the owner password" (exit 2). The index read in
    an EK-salted audit session (owner password, as systemd reads it) holds the fold of
    this prediction: tampering, exit 6, no Unseal."""
    img, lock, secret = enrolled
    with interposer(tcg_sim, on_command=lambda ctx: Respond(error_response(rc))
                    if ctx.code == TPM_CC.PolicyAuthorizeNV else None) as p:
        r = tpm(p, "luks", "test", str(img), "--pcrlock", str(lock))
        exchanges = p.exchanges
    expect_error(r, ExitCode.INTEGRITY, "forged", "PolicyAuthorizeNV")
    assert "Unseal" not in names(exchanges) and "NV_Read" in names(exchanges)
    assert_no_leak(exchanges, secret, base64.b64encode(secret))


def test_redirected_policy_authorize_nv_to_a_stale_index_is_tampering(
        tcg_sim: Simulator, tmp_path: Path) -> None:
    """The interposer points PolicyAuthorizeNV at an index of its own holding another
    digest, so the TPM itself answers TPM_RC_VALUE: the real index, read audited, holds
    this prediction's fold, so it is not reported as a stale pcrlock.json (exit 6)."""
    img, pw = make_image(tmp_path)
    secret = os.urandom(32)
    token, lock = pcrlock_setup(tcg_sim, tmp_path / "t", secret)
    add_token(img, pw, secret, token)
    define_index(tcg_sim.tools_tcti, tmp_path / "t", OTHER, b"\x5a" * 32)
    with interposer(tcg_sim) as p:
        with p.interpose(on_command=_redirect(OTHER)):
            r = tpm(p, "luks", "test", str(img), "--pcrlock", str(lock))
        exchanges = p.exchanges
    expect_error(r, ExitCode.INTEGRITY, "forged", "PolicyAuthorizeNV")
    assert "Unseal" not in names(exchanges)
    assert_no_leak(exchanges, secret, base64.b64encode(secret))


def test_a_real_owner_password_stays_a_usage_error(
        tcg_sim: Simulator, enrolled: tuple[Path, Path, bytes], tmp_path: Path) -> None:
    """The control for attack 32: with an owner password really set, the TPM refuses
    PolicyAuthorizeNV and the audited read of the index alike, so the owner-password
    explanation stands (exit 2), not "forged"."""
    img, lock, secret = enrolled
    _tools(tcg_sim.tools_tcti, tmp_path, "tpm2_changeauth", "-c", "o", "owner-secret")
    with interposer(tcg_sim) as p:
        r = tpm(p, "luks", "test", str(img), "--pcrlock", str(lock))
        exchanges = p.exchanges
    expect_error(r, ExitCode.USAGE, "owner hierarchy has a password")
    assert "NV_Read" in names(exchanges) and "Unseal" not in names(exchanges)
    assert_no_leak(exchanges, secret, base64.b64encode(secret))
