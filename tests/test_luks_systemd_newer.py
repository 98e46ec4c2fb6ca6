"""systemd-tpm2 tokens of newer systemd versions: a persistent SRK (``tpm2_srk``), a salted
PIN (``tpm2_salt``) and signed PCR policies (``tpm2_pubkey``), unlocked by tpmseal through
its EK-salted sessions, with cryptsetup 2.6 checking the passphrase.

Bookworm's systemd 252 cannot write ``tpm2_srk``/``tpm2_salt`` tokens, so
:func:`srk_token` builds one as systemd 254+ does, with tpm2-tools: the SRK at
0x81000001 serialized as an ESYS_TR (``tpm2_readpublic -t``: what systemd stores),
a sealed object (attributes fixedTPM|fixedParent) under it with PolicyPCR (+
PolicyAuthValue), and the PIN turned into base64(PBKDF2-HMAC-SHA256(PIN, salt,
10000)) before SHA-256 makes it the authValue. The real ``cryptsetup token import``
stores it. Signed-policy tokens are enrolled by the real ``systemd-cryptenroll
--tpm2-public-key`` and unlocked with the real systemd-measure's signature.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attacks.bus import assert_no_leak, expect_error, interposer, names, tpm
from luks_support import cryptsetup, make_image, needs_cryptsetup, opens
from test_luks_systemd import systemd_enroll
from test_seal_support import assert_one_line_error, cli, extend, flush_leftovers, write
from test_systemd_measure import MEASURE, _boot_to, _measure
from tpmseal.client.tpm import Tpm
from tpmseal.errors import ExitCode, TpmsealError
from tpmseal.recipes import cryptsetup as cs
from tpmseal.recipes import signed, systemd_tpm2
from tpmseal.recipes.trust import load, trust_path
from tpmseal.transport.simulator import Simulator

pytestmark = [needs_cryptsetup, pytest.mark.skipif(
    shutil.which("tpm2_create") is None,
    reason="tpm2-tools is not installed (apt-get install tpm2-tools)")]

PIN = b"2468"
SRK = 0x81000001
CRYPTENROLL = shutil.which("systemd-cryptenroll")


def _tools(tcti: str, cwd: Path, *argv: str) -> None:
    done = subprocess.run(list(argv), env={**os.environ, "TPM2TOOLS_TCTI": tcti}, cwd=cwd,
                          capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, f"{argv[0]}: {done.stderr.decode(errors='replace')}"


#: systemd's transient primary (owner hierarchy), by tpm2-primary-alg
PRIMARY = {"ecc": "ecc256:aes128cfb", "rsa": "rsa2048:aes128cfb"}
PRIMARY_ATTRS = "restricted|decrypt|fixedtpm|fixedparent|sensitivedataorigin|userwithauth"


def srk_token(tcti: str, work: Path, secret: bytes, pin: bytes | None = None,
              salt: bytes | None = None, *, primary: str | None = None,
              bank: str = "sha256") -> dict[str, object]:
    """A systemd 254+ token for *secret* under the SRK at 0x81000001, made with tpm2-tools
    on *tcti* (the SRK read over that bus, as systemd-cryptenroll reads it) — or, with
    *primary* ("ecc"/"rsa"), under systemd's transient primary with no tpm2_srk."""
    work.mkdir(exist_ok=True)
    (work / "secret").write_bytes(secret)
    parent = hex(SRK)
    if primary is None:
        _tools(tcti, work, "tpm2_readpublic", "-c", hex(SRK), "-t", "srk.tr")
    else:
        _tools(tcti, work, "tpm2_createprimary", "-C", "o", "-g", "sha256", "-G",
               PRIMARY[primary], "-a", PRIMARY_ATTRS, "-c", "primary.ctx")
        parent = "primary.ctx"
    _tools(tcti, work, "tpm2_startauthsession", "-S", "trial.ctx")
    _tools(tcti, work, "tpm2_policypcr", "-S", "trial.ctx", "-l", f"{bank}:7", "-L", "policy")
    if pin is not None:
        _tools(tcti, work, "tpm2_policyauthvalue", "-S", "trial.ctx", "-L", "policy")
    _tools(tcti, work, "tpm2_flushcontext", "trial.ctx")
    auth = []
    if pin is not None:
        salted = base64.b64encode(hashlib.pbkdf2_hmac("sha256", pin, salt, 10000)) \
            if salt is not None else pin
        auth = ["-p", "hex:" + hashlib.sha256(salted).hexdigest()]
    _tools(tcti, work, "tpm2_create", "-C", parent, "-g", "sha256", "-a",
           "fixedtpm|fixedparent", "-L", "policy", "-i", "secret", "-u", "obj.pub",
           "-r", "obj.priv", *auth)
    token: dict[str, object] = {
        "type": "systemd-tpm2", "keyslots": ["1"],
        "tpm2-blob": base64.b64encode((work / "obj.priv").read_bytes()
                                      + (work / "obj.pub").read_bytes()).decode(),
        "tpm2-pcrs": [7], "tpm2-pcr-bank": bank, "tpm2-primary-alg": primary or "ecc",
        "tpm2-policy-hash": (work / "policy").read_bytes().hex(),
        "tpm2-pin": pin is not None}
    if primary is None:
        token["tpm2_srk"] = base64.b64encode((work / "srk.tr").read_bytes()).decode()
    if salt is not None:
        token["tpm2_salt"] = base64.b64encode(salt).decode()
    return token


def add_token(img: Path, pw: Path, secret: bytes, token: dict[str, object]) -> None:
    """Keyslot 1 with systemd's passphrase (base64 of the secret), then the token for it,
    both through the real cryptsetup."""
    new = write(img.with_suffix(".new"), base64.b64encode(secret))
    r = cryptsetup("luksAddKey", "--batch-mode", "--key-file", str(pw), "--key-slot", "1",
                   "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", str(img), str(new))
    assert r.returncode == 0, r.stderr
    new.unlink()
    r = cryptsetup("token", "import", "--json-file=-", "--token-id", "0", str(img),
                   stdin=json.dumps(token).encode())
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize(("pin", "salt"), [(None, None), (PIN, None), (PIN, os.urandom(16))],
                         ids=["no-pin", "pin", "salted-pin"])
def test_srk_token_unlocks(tcg_sim: Simulator, tmp_path: Path, pin: bytes | None,
                           salt: bytes | None) -> None:
    img, pw = make_image(tmp_path)
    secret = os.urandom(32)
    token = srk_token(tcg_sim.tools_tcti, tmp_path / "tools", secret, pin, salt)
    flush_leftovers(tcg_sim.uri)
    add_token(img, pw, secret, token)
    tok = systemd_tpm2.SystemdToken.parse(cs.header(str(img)).tokens[0], 0)
    assert tok.srk is not None and tok.srk.handle == SRK and tok.salt == salt
    args = ["luks", "test", str(img)]
    if pin is not None:
        assert_one_line_error(cli(args), ExitCode.USAGE, "PIN")
        assert_one_line_error(cli([*args, "--pin-file", str(write(tmp_path / "bad", b"1357"))]),
                              ExitCode.AUTH_FAILED, "wrong PIN")
        args += ["--pin-file", str(write(tmp_path / "pin", pin + b"\n"))]
    r = cli(args)
    assert (r.rc, r.out) == (0, b"token 0 (systemd-tpm2) unlocks keyslot 1\n"), r.err
    listed = cli(["luks", "list", str(img)])
    assert b"primary=0x81000001" in listed.out, listed.out


def test_rsa_primary(tcg_sim: Simulator, tmp_path: Path) -> None:
    """tpm2-primary-alg rsa: what systemd uses on TPMs without ECC. (The test simulator
    allocates only the sha256 bank, so other tpm2-pcr-bank values are not tried here.)"""
    img, pw = make_image(tmp_path)
    secret = os.urandom(32)
    bank = "sha256"
    token = srk_token(tcg_sim.tools_tcti, tmp_path / "t", secret, primary="rsa", bank=bank)
    flush_leftovers(tcg_sim.uri)
    add_token(img, pw, secret, token)
    r = cli(["luks", "test", str(img)])
    assert (r.rc, r.out) == (0, b"token 0 (systemd-tpm2) unlocks keyslot 1\n"), r.err
    extend(tcg_sim.uri, 7, bank=bank)
    assert_one_line_error(cli(["luks", "test", str(img)]), ExitCode.PCR_MISMATCH,
                          f"{bank}:7 changed")


def test_srk_token_bus_shows_no_key(tcg_sim: Simulator, tmp_path: Path) -> None:
    """Through the sniffer: no CreatePrimary, no ReadPublic (the SRK's Name comes from the
    token and joins Load's HMAC), and neither the secret nor its base64 crosses."""
    img, pw = make_image(tmp_path)
    secret = os.urandom(32)
    salt = os.urandom(16)
    add_token(img, pw, secret, srk_token(tcg_sim.tools_tcti, tmp_path / "t", secret, PIN, salt))
    flush_leftovers(tcg_sim.uri)
    rec = load(trust_path(), "tcg")
    with interposer(tcg_sim) as p:
        with Tpm.open(p.uri) as tpm:
            passphrase = systemd_tpm2.unseal_token(tpm, cs.header(str(img)).tokens[0], 0,
                                                   rec, PIN)
        exchanges = p.exchanges
    assert passphrase == base64.b64encode(secret)
    assert opens(img, passphrase, 1)
    seen = names(exchanges)
    assert "CreatePrimary" not in seen and "ReadPublic" not in seen, seen
    assert {"Load", "StartAuthSession", "PolicyPCR", "PolicyAuthValue", "Unseal"} <= set(seen)
    assert_no_leak(exchanges, secret, passphrase)


# ------------------------------------------------------------ signed PCR policies (tpm2_pubkey)

needs_measure = pytest.mark.skipif(
    not (CRYPTENROLL and MEASURE),
    reason="systemd-cryptenroll/systemd-measure (package systemd) are not installed")


def pubkey_enroll(sim: Simulator, img: Path, pw: Path, key: Path,
                  pin: bytes | None = None, *, fixed: bool = False) -> None:
    """The real systemd-cryptenroll, bound to the signer *key* for PCR 11 — and with
    *fixed*, to PCR 7's current value too (its default --tpm2-pcrs)."""
    systemd_enroll(sim, img, pw, f"--tpm2-public-key={key.with_suffix('.pub')}",
                   "--tpm2-public-key-pcrs=11", pin=pin, pcrs="7" if fixed else "")


@pytest.fixture
def signer(tcg_sim: Simulator, tmp_path: Path) -> Path:
    key = tmp_path / "signer.pem"
    assert cli(["policy", "keygen", "--type", "rsa", "--output", str(key)]).rc == 0
    return key


@needs_measure
@pytest.mark.parametrize(("pin", "fixed"), [(None, False), (PIN, False), (None, True),
                                            (PIN, True)],
                         ids=["signed", "signed-pin", "signed+pcr7", "signed+pcr7-pin"])
def test_pubkey_token_unlocks_with_systemd_measure_signature(
        tcg_sim: Simulator, tmp_path: Path, signer: Path, pin: bytes | None,
        fixed: bool) -> None:
    img, pw = make_image(tmp_path)
    pubkey_enroll(tcg_sim, img, pw, signer, pin, fixed=fixed)
    token = cs.header(str(img)).tokens[0]
    assert token.get("tpm2_pubkey_pcrs") == [11]
    assert token.get("tpm2-pcrs") == ([7] if fixed else [])
    sig = _measure(tcg_sim, tmp_path, signer)
    _boot_to(tcg_sim, ["enter-initrd"])
    pin_args = ["--pin-file", str(write(tmp_path / "pin", pin))] if pin else []
    r = cli(["luks", "test", str(img), "--policy", str(sig), *pin_args])
    assert (r.rc, r.out) == (0, b"token 0 (systemd-tpm2) unlocks keyslot 1\n"), r.err
    if not any(os.path.exists(p) for p in systemd_tpm2.SIGNATURE_PATHS):
        assert_one_line_error(cli(["luks", "test", str(img), *pin_args]), ExitCode.USAGE,
                              "signed PCR policy", "--policy")
    if fixed:
        bad = ["--pin-file", str(write(tmp_path / "bad", b"1357"))] if pin else []
        if pin:
            assert_one_line_error(cli(["luks", "test", str(img), "--policy", str(sig), *bad]),
                                  ExitCode.AUTH_FAILED, "wrong PIN")
        extend(tcg_sim.uri, 7)
        assert_one_line_error(cli(["luks", "test", str(img), "--policy", str(sig), *pin_args]),
                              ExitCode.PCR_MISMATCH, "sha256:7 changed")
        return
    _boot_to(tcg_sim, ["not-a-phase"], stub=False)
    assert_one_line_error(cli(["luks", "test", str(img), "--policy", str(sig), *pin_args]),
                          ExitCode.PCR_MISMATCH, "no signed policy covers")


@needs_measure
@pytest.mark.parametrize("fixed", [False, True], ids=["signed", "signed+pcr7"])
def test_pubkey_token_bus_shows_no_key(tcg_sim: Simulator, tmp_path: Path,
                                       signer: Path, fixed: bool) -> None:
    img, pw = make_image(tmp_path)
    pubkey_enroll(tcg_sim, img, pw, signer, PIN, fixed=fixed)
    sig = _measure(tcg_sim, tmp_path, signer)
    _boot_to(tcg_sim, ["enter-initrd"])
    rec = load(trust_path(), "tcg")
    with interposer(tcg_sim) as p:
        with Tpm.open(p.uri) as tpm:
            passphrase = systemd_tpm2.unseal_token(tpm, cs.header(str(img)).tokens[0], 0,
                                                   rec, PIN, signed.load_policies([str(sig)]))
        exchanges = p.exchanges
    assert opens(img, passphrase, 1)  # cryptsetup's verdict, not ours
    assert {"VerifySignature", "PolicyAuthorize", "PolicyAuthValue", "Unseal"} <= set(
        names(exchanges))
    assert_no_leak(exchanges, base64.b64decode(passphrase), passphrase)


@needs_measure
def test_pubkey_token_refuses_another_signer(tcg_sim: Simulator, tmp_path: Path,
                                             signer: Path) -> None:
    img, pw = make_image(tmp_path)
    pubkey_enroll(tcg_sim, img, pw, signer)
    other = tmp_path / "other.pem"
    assert cli(["policy", "keygen", "--type", "rsa", "--output", str(other)]).rc == 0
    sig = _measure(tcg_sim, tmp_path, other, "--phase=enter-initrd")
    _boot_to(tcg_sim, ["enter-initrd"])
    assert_one_line_error(cli(["luks", "test", str(img), "--policy", str(sig)]),
                          ExitCode.BAD_INPUT, "no signed policy is by the key")


def test_salted_pin_matches_systemds_test_vector() -> None:
    """The PBKDF2 count, checked against a vector from systemd's test-tpm2.c (pass "\\0pass",
    salt "mysa\\0lt"): the authValue is then SHA-256 of the derived key's base64."""
    derived = hashlib.pbkdf2_hmac("sha256", b"\0pass", b"mysa\0lt",
                                  systemd_tpm2.PBKDF2_ITERATIONS)
    assert derived[:8] == bytes.fromhex("e30712beeef55d18")
    assert systemd_tpm2.pin_auth(b"\0pass", b"mysa\0lt") == hashlib.sha256(
        base64.b64encode(derived)).digest()
    assert systemd_tpm2.pin_auth(PIN) == hashlib.sha256(PIN).digest()  # no salt: systemd 252


_JSON = st.recursive(st.none() | st.booleans() | st.integers(-2, 30) | st.text(max_size=8),
                     lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c,
                                                                          max_size=3),
                     max_leaves=6)
_FIELDS = ["tpm2-blob", "tpm2-pcrs", "tpm2-pcr-bank", "tpm2-primary-alg", "tpm2-policy-hash",
           "tpm2-pin", "tpm2_srk", "tpm2_salt", "tpm2_pubkey", "tpm2_pubkey_pcrs",
           "tpm2_pcrlock", "tpm2_pcrlock_nv"]


@functools.cache
def _offline_token() -> dict[str, object]:
    """A well-formed tpm2_srk + tpm2_pubkey token built without a TPM (parse only)."""
    from cryptography.hazmat.primitives import serialization as ser

    from tpmseal.recipes import signer
    from tpmseal.recipes.templates import sealed_template
    from tpmseal.session.policy import AuthorizeStep, compute_policy
    from tpmseal.wire.marshal import tpm2b, u32

    key = signer.generate_key("rsa").public_key()

    auth = signer.authorizer_for(key)
    public = sealed_template(compute_policy([AuthorizeStep(auth.name, b"")]))
    srk = sealed_template(b"")
    esys = u32(SRK) + tpm2b(srk.name()) + u32(1) + srk.sized()
    pem = key.public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo)
    return {"type": "systemd-tpm2", "keyslots": ["1"],
            "tpm2-blob": base64.b64encode(tpm2b(os.urandom(40)) + public.sized()).decode(),
            "tpm2-pcrs": [], "tpm2-pcr-bank": "sha256", "tpm2-primary-alg": "ecc",
            "tpm2-policy-hash": public.auth_policy.hex(), "tpm2-pin": False,
            "tpm2_srk": base64.b64encode(esys).decode(), "tpm2_pubkey_pcrs": [11],
            "tpm2_pubkey": base64.b64encode(pem).decode()}


def test_offline_token_parses() -> None:
    tok = systemd_tpm2.SystemdToken.parse(_offline_token(), 0)
    assert tok.srk is not None and tok.authorizer is not None and not tok.pcrs.selections


@settings(max_examples=300, deadline=None)
@given(edits=st.dictionaries(st.sampled_from(_FIELDS),
                             _JSON | st.binary(max_size=80).map(
                                 lambda b: base64.b64encode(b).decode()), max_size=3),
       cut=st.integers(0, 400))
def test_token_parser_raises_only_typed_errors(edits: dict[str, object], cut: int) -> None:
    """Headers are attacker-writable: any field of any JSON type, or base64 of any bytes
    (and truncated copies of the real ones), gives a token or a typed error."""
    base = _offline_token()
    token = {**base, **edits}
    for name in ("tpm2-blob", "tpm2_srk", "tpm2_pubkey"):
        if name not in edits and cut % 3 == _FIELDS.index(name) % 3:
            raw = base64.b64decode(str(base[name]))
            token[name] = base64.b64encode(raw[:cut % (len(raw) + 1)]).decode()
    with contextlib.suppress(TpmsealError):
        systemd_tpm2.SystemdToken.parse(token, 0)


@needs_measure
def test_forged_pcr_values_do_not_stretch_the_fixed_pcrs(tcg_sim: Simulator, tmp_path: Path,
                                                         signer: Path) -> None:
    """PCR 7 of a signed token is pre-checked with an unauthenticated PCR_Read. An
    interposer replaying the old PCR_Read answer after PCR 7 changed gets past that check,
    not past the TPM: Unseal fails its policy, and the audited read that follows confirms
    the change (exit 5)."""
    from tpmseal.sniff.capture.hooks import HookContext, Verdict
    from tpmseal.wire.constants import TPM_CC, TPM_ST

    img, pw = make_image(tmp_path)
    pubkey_enroll(tcg_sim, img, pw, signer, fixed=True)
    sig = _measure(tcg_sim, tmp_path, signer)
    _boot_to(tcg_sim, ["enter-initrd"])
    old: list[bytes] = []

    def record(ctx: HookContext) -> Verdict:
        if ctx.code == TPM_CC.PCR_Read and ctx.response is not None and not old:
            old.append(ctx.response)
        return None

    def replay(ctx: HookContext) -> Verdict:  # the plain pre-check read, not the audited one
        plain = int.from_bytes(ctx.command[:2], "big") == TPM_ST.NO_SESSIONS
        return old[0] if ctx.code == TPM_CC.PCR_Read and plain else None

    with interposer(tcg_sim, on_response=record) as p:
        r = tpm(p, "luks", "test", str(img), "--policy", str(sig))
    assert r.rc == 0 and old, r.err
    extend(tcg_sim.uri, 7)
    with interposer(tcg_sim, on_response=replay) as p:
        r = tpm(p, "luks", "test", str(img), "--policy", str(sig))
        exchanges = p.exchanges
    expect_error(r, ExitCode.PCR_MISMATCH, "at TPM2_Unseal", "sha256:7")
    assert "Unseal" in names(exchanges)


@needs_measure
def test_forged_policy_digest_is_not_reported_as_no_signature_covering(
        tcg_sim: Simulator, tmp_path: Path, signer: Path) -> None:
    """systemd-measure's policies carry no pcrDigest: tpmseal runs PolicyPCR over the
    current values and compares PolicyGetDigest's answer, which has no HMAC. A forged
    digest makes no signature fit; the audited PCR read says one does (exit 6, not the
    exit 5 "boot a release that one of them covers")."""
    from tpmseal.sniff.capture.hooks import HookContext, Verdict
    from tpmseal.wire.constants import TPM_CC

    img, pw = make_image(tmp_path)
    pubkey_enroll(tcg_sim, img, pw, signer, fixed=True)
    sig = _measure(tcg_sim, tmp_path, signer)
    _boot_to(tcg_sim, ["enter-initrd"])

    def forge(ctx: HookContext) -> Verdict:
        if ctx.code == TPM_CC.PolicyGetDigest and ctx.response is not None:
            return ctx.response[:-32] + bytes(32)
        return None

    with interposer(tcg_sim, on_response=forge) as p:
        r = tpm(p, "luks", "test", str(img), "--policy", str(sig))
    expect_error(r, ExitCode.INTEGRITY, "interposer")
    assert cli(["luks", "test", str(img), "--policy", str(sig)]).rc == 0
