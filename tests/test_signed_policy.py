"""Signed policies and several allowed states, end to end through the CLI on swtpm.

The update flow: a vendor key signs the PCR values of a release; a secret sealed
``--authorized-by`` the key unseals after a PCR change once the new release's
policy is given, with no reseal. Attacks: forged, unsigned and other-key
policies are refused before any TPM command; a policy for other PCR values is
refused by the TPM; an interposer that rewrites the policy commands cannot make
a signed policy cover a state it does not; the secret never crosses the bus in
plaintext. PolicyOR: ``seal --pcr-values`` repeated seals to several states.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from attacks.bus import assert_no_leak, direct, expect_error, expect_ok, interposer, names, tpm
from test_seal_support import pinned_json
from tpmseal.client.tpm import Tpm
from tpmseal.errors import BadInputError, ExitCode, UsageError
from tpmseal.recipes import signed
from tpmseal.recipes.blob import SealedBlob
from tpmseal.sniff.capture.hooks import HookContext, Verdict
from tpmseal.transport.simulator import Simulator
from tpmseal.wire import commands as cmds
from tpmseal.wire.constants import TPM_ALG, TPM_CC
from tpmseal.wire.structures import DigestValues

PCRS = "sha256:0,4,7"


def _extend(sim: Simulator, pcr: int = 7, what: bytes = b"update") -> None:
    with Tpm.open(sim.uri) as t:
        t.run(cmds.PCR_Extend(pcr, DigestValues(((TPM_ALG.SHA256,
                                                   bytes(32 - len(what)) + what),))))


def _keygen(sim: Simulator, d: Path, name: str = "signer", kind: str = "ecc") -> Path:
    r = direct(sim, "policy", "keygen", "--output", str(d / f"{name}.pem"), "--type", kind)
    assert r.rc == 0, r.err
    return d / f"{name}.pem"


def _sign(sim: Simulator, key: Path, out: Path, *extra: str) -> Path:
    r = direct(sim, "policy", "sign", "--key", str(key), "--pcrs", PCRS, *extra,
               "--output", str(out))
    assert r.rc == 0, r.err
    return out


def _sealed(sim: Simulator, d: Path, key: Path, *extra: str) -> tuple[bytes, Path]:
    secret = os.urandom(32)
    (d / "key").write_bytes(secret)
    blob = d / "blob.json"
    r = direct(sim, "seal", "--input", str(d / "key"), "--output", str(blob),
               "--authorized-by", str(key.with_suffix(".pub")), "--pcrs", PCRS, *extra)
    assert r.rc == 0, r.err
    return secret, blob


@pytest.mark.parametrize("kind", ["ecc", "rsa"])
def test_update_needs_no_reseal(tcg_sim: Simulator, tmp_path: Path, kind: str) -> None:
    key = _keygen(tcg_sim, tmp_path, kind=kind)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    secret, blob = _sealed(tcg_sim, tmp_path, key)
    old = _sign(tcg_sim, key, tmp_path / "v1.json", "--current", "--version", "1")
    expect_ok(direct(tcg_sim, "unseal", "--input", str(blob), "--policy", str(old)), secret)
    _extend(tcg_sim)  # the update boots: PCR 7 changes
    expect_error(direct(tcg_sim, "unseal", "--input", str(blob), "--policy", str(old)),
                 ExitCode.PCR_MISMATCH, "no signed policy covers")
    # the vendor signs the new state (here: predicted as `pcrs show --json` output)
    shown = direct(tcg_sim, "pcrs", "show", "--pcrs", PCRS, "--json", "--authenticated")
    assert shown.rc == 0, shown.err
    (tmp_path / "values.json").write_bytes(shown.out)
    (tmp_path / "pol").mkdir()
    new = _sign(tcg_sim, key, tmp_path / "pol" / "v2.json", "--pcr-values",
                str(tmp_path / "values.json"), "--version", "2")
    old.rename(tmp_path / "pol" / "v1.json")
    expect_ok(direct(tcg_sim, "unseal", "--input", str(blob), "--policy", str(new.parent)),
              secret)
    doc = json.loads(blob.read_text())
    assert doc["format"] == "tpmseal-sealed/2" and doc["policy"]["authorizer"]


def test_signed_unseal_commands_and_no_leak(tcg_sim: Simulator, tmp_path: Path) -> None:
    key = _keygen(tcg_sim, tmp_path)
    secret, blob = _sealed(tcg_sim, tmp_path, key)
    pol = _sign(tcg_sim, key, tmp_path / "p.json", "--current")
    with interposer(tcg_sim) as p:
        expect_ok(tpm(p, "unseal", "--input", str(blob), "--policy", str(pol)), secret)
        assert names(p.exchanges) == ["StartAuthSession", "Load", "PolicyPCR", "LoadExternal",
                         "VerifySignature", "FlushContext", "PolicyAuthorize", "Unseal",
                         "FlushContext"]
        assert_no_leak(p.exchanges, secret)


def test_forged_unsigned_and_other_key_policies_are_refused(tcg_sim: Simulator,
                                                            tmp_path: Path) -> None:
    key = _keygen(tcg_sim, tmp_path)
    other = _keygen(tcg_sim, tmp_path, "other")
    _, blob = _sealed(tcg_sim, tmp_path, key)
    theirs = _sign(tcg_sim, other, tmp_path / "theirs.json", "--current")
    expect_error(direct(tcg_sim, "unseal", "--input", str(blob), "--policy", str(theirs)),
                 ExitCode.BAD_INPUT, "no signed policy is by the key")
    good = json.loads(_sign(tcg_sim, key, tmp_path / "p.json", "--current").read_text())
    # forged: the other key's signature under our fingerprint; unsigned: no signature
    forged = dict(good, signature=json.loads(theirs.read_text())["signature"])
    unsigned = dict(good, signature="")
    # altered: a signature over another approvedPolicy
    altered = dict(good, pcr_digest="00" * 32)
    for name, doc in (("forged", forged), ("unsigned", unsigned)):
        (tmp_path / f"{name}.json").write_text(json.dumps(doc))
        expect_error(direct(tcg_sim, "unseal", "--input", str(blob), "--policy",
                            str(tmp_path / f"{name}.json")), ExitCode.INTEGRITY,
                     "no signed policy carries a valid signature", what=name)
    (tmp_path / "altered.json").write_text(json.dumps(altered))
    expect_error(direct(tcg_sim, "unseal", "--input", str(blob), "--policy",
                        str(tmp_path / "altered.json")), ExitCode.BAD_INPUT, "approved_policy")
    expect_error(direct(tcg_sim, "unseal", "--input", str(blob)), ExitCode.USAGE, "--policy")


def test_policy_for_other_values_is_refused_by_the_tpm(tcg_sim: Simulator,
                                                       tmp_path: Path) -> None:
    key = _keygen(tcg_sim, tmp_path)
    _, blob = _sealed(tcg_sim, tmp_path, key)
    values = {"sha256": {str(i): "11" * 32 for i in (0, 4, 7)}}
    (tmp_path / "v.json").write_text(json.dumps(values))
    pol = _sign(tcg_sim, key, tmp_path / "p.json", "--pcr-values", str(tmp_path / "v.json"))
    expect_error(direct(tcg_sim, "unseal", "--input", str(blob), "--policy", str(pol)),
                 ExitCode.PCR_MISMATCH, "no signed policy covers")


def test_interposer_cannot_stretch_a_signed_policy(tcg_sim: Simulator, tmp_path: Path) -> None:
    """The signed state is not the current one; the interposer rewrites PolicyPCR's
    pcrDigest to the current values' and fakes a success: PolicyAuthorize refuses."""
    key = _keygen(tcg_sim, tmp_path)
    secret, blob = _sealed(tcg_sim, tmp_path, key)
    signed_now = _sign(tcg_sim, key, tmp_path / "now.json", "--current")
    _extend(tcg_sim)
    current = _sign(tcg_sim, key, tmp_path / "cur.json", "--current")
    cur_digest = bytes.fromhex(json.loads(current.read_text())["pcr_digest"])
    old_digest = bytes.fromhex(json.loads(signed_now.read_text())["pcr_digest"])
    current.unlink()

    def on_command(ctx: HookContext) -> Verdict:
        if ctx.code == TPM_CC.PolicyPCR:
            return ctx.command.replace(old_digest, cur_digest)
        return None

    with interposer(tcg_sim, on_command=on_command) as p:
        r = tpm(p, "unseal", "--input", str(blob), "--policy", str(signed_now))
        expect_error(r, ExitCode.INTEGRITY, "PolicyAuthorize")
        assert secret not in r.out
        assert_no_leak(p.exchanges, secret)


def test_pcr_values_or_states(tcg_sim: Simulator, tmp_path: Path) -> None:
    secret = os.urandom(32)
    (tmp_path / "key").write_bytes(secret)
    now = direct(tcg_sim, "pcrs", "show", "--pcrs", PCRS, "--json")
    (tmp_path / "now.json").write_bytes(now.out)
    nxt = json.loads(now.out)
    nxt["sha256"]["7"] = "22" * 32
    (tmp_path / "next.json").write_text(json.dumps(nxt))
    blob = tmp_path / "blob.json"
    r = direct(tcg_sim, "seal", "--input", str(tmp_path / "key"), "--output", str(blob),
               "--pcrs", PCRS, "--pcr-values", str(tmp_path / "next.json"),
               "--pcr-values", str(tmp_path / "now.json"))
    assert r.rc == 0, r.err
    assert len(json.loads(blob.read_text())["policy"]["states"]) == 2
    with interposer(tcg_sim) as p:
        expect_ok(tpm(p, "unseal", "--input", str(blob)), secret)
        sent = names(p.exchanges)
        assert sent.count("PolicyPCR") == 2 and "PolicyOR" in sent  # first branch: VALUE
        assert_no_leak(p.exchanges, secret)
    _extend(tcg_sim)
    expect_error(direct(tcg_sim, "unseal", "--input", str(blob)), ExitCode.PCR_MISMATCH,
                 "none of the 2 states")


@pytest.mark.parametrize("kind", ["rsa", "ecc"])
def test_systemd_style_signature_file(tcg_sim: Simulator, tmp_path: Path, kind: str) -> None:
    """systemd-measure's JSON shape: {"sha256": [{"pcrs", "pkfp", "pol", "sig"}]}."""
    key = _keygen(tcg_sim, tmp_path, kind=kind)
    secret, blob = _sealed(tcg_sim, tmp_path, key)
    own = json.loads(_sign(tcg_sim, key, tmp_path / "p.json", "--current").read_text())
    sd = json.loads(_sign(tcg_sim, key, tmp_path / "sd.json", "--current", "--format",
                          "systemd").read_text())
    assert sd == {"sha256": [{"pcrs": [0, 4, 7], "pkfp": own["key_fingerprint"],
                              "pol": own["approved_policy"], "sig": sd["sha256"][0]["sig"]}]}
    assert base64.b64decode(sd["sha256"][0]["sig"])
    # a directory may hold other files: they are skipped with a warning
    (tmp_path / "notes.json").write_text("{}")
    (tmp_path / "pols").mkdir()
    (tmp_path / "sd.json").rename(tmp_path / "pols" / "sd.json")
    (tmp_path / "notes.json").rename(tmp_path / "pols" / "notes.json")
    expect_ok(direct(tcg_sim, "unseal", "--input", str(blob), "--policy",
                     str(tmp_path / "pols")), secret)


COUNTER = "0x01500020"


def _counter(sim: Simulator) -> int:
    with Tpm.open(sim.uri) as t:
        return int.from_bytes(t.nv_read(int(COUNTER, 16), 8, int(COUNTER, 16)), "big")


def test_revoke_below(tcg_sim: Simulator, tmp_path: Path) -> None:
    key = _keygen(tcg_sim, tmp_path)
    secret, blob = _sealed(tcg_sim, tmp_path, key, "--min-version-nv", COUNTER)
    start = _counter(tcg_sim)  # the highest count this TPM's counters ever held
    assert start >= 1
    v1 = _sign(tcg_sim, key, tmp_path / "v1.json", "--current", "--version", str(start),
               "--nv-index", COUNTER)
    v2 = _sign(tcg_sim, key, tmp_path / "v2.json", "--current", "--version", str(start + 1),
               "--nv-index", COUNTER)
    plain = _sign(tcg_sim, key, tmp_path / "plain.json", "--current")
    expect_error(direct(tcg_sim, "unseal", "--input", str(blob), "--policy", str(plain)),
                 ExitCode.BAD_INPUT, "revocable")
    expect_ok(direct(tcg_sim, "unseal", "--input", str(blob), "--policy", str(v1)), secret)
    r = direct(tcg_sim, "policy", "revoke-below", str(start + 1), "--nv-index", COUNTER)
    assert r.rc == 0, r.err
    assert _counter(tcg_sim) == start + 1
    expect_error(direct(tcg_sim, "unseal", "--input", str(blob), "--policy", str(v1)),
                 ExitCode.PCR_MISMATCH, "revoked")
    with interposer(tcg_sim) as p:
        expect_ok(tpm(p, "unseal", "--input", str(blob), "--policy", str(v1), "--policy",
                      str(v2)), secret)
        assert names(p.exchanges).count("PolicyNV") == 1  # v2, the newest, is tried first
        assert_no_leak(p.exchanges, secret)


def test_signed_policy_with_pin(tcg_sim: Simulator, tmp_path: Path) -> None:
    key = _keygen(tcg_sim, tmp_path)
    (tmp_path / "pin").write_bytes(b"1234\n")
    secret, blob = _sealed(tcg_sim, tmp_path, key, "--pin-file", str(tmp_path / "pin"))
    pol = _sign(tcg_sim, key, tmp_path / "p.json", "--current")
    with interposer(tcg_sim) as p:
        expect_ok(tpm(p, "unseal", "--input", str(blob), "--policy", str(pol), "--pin-file",
                      str(tmp_path / "pin")), secret)
        sent = names(p.exchanges)  # (swtpm may answer Unseal with TPM_RC_RETRY once)
        assert sent.index("PolicyAuthorize") + 1 == sent.index("PolicyAuthValue")
        assert_no_leak(p.exchanges, secret)
    (tmp_path / "bad").write_bytes(b"4321\n")
    expect_error(direct(tcg_sim, "unseal", "--input", str(blob), "--policy", str(pol),
                        "--pin-file", str(tmp_path / "bad")), ExitCode.AUTH_FAILED, "wrong PIN")


def test_policy_for_a_plain_blob_is_a_usage_error(tcg_sim: Simulator, tmp_path: Path) -> None:
    (tmp_path / "key").write_bytes(os.urandom(32))
    blob = tmp_path / "blob.json"
    assert direct(tcg_sim, "seal", "--input", str(tmp_path / "key"), "--output",
                  str(blob)).rc == 0
    pol = _sign(tcg_sim, _keygen(tcg_sim, tmp_path), tmp_path / "p.json", "--current")
    expect_error(direct(tcg_sim, "unseal", "--input", str(blob), "--policy", str(pol)),
                 ExitCode.USAGE, "not sealed to a policy signer")


def test_unversioned_signature_is_refused_by_the_tpm(tcg_sim: Simulator, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A secret sealed --min-version-nv is PolicyAuthorize(key, policyRef naming the
    counter): with tpmseal's own check bypassed, the key's unversioned signature still
    does not unseal it, so no signature outside the counter's reach works."""
    key = _keygen(tcg_sim, tmp_path)
    secret, blob = _sealed(tcg_sim, tmp_path, key, "--min-version-nv", COUNTER)
    plain = _sign(tcg_sim, key, tmp_path / "plain.json", "--current")
    monkeypatch.setattr(signed, "usable", lambda policies, *a: list(policies))
    r = direct(tcg_sim, "unseal", "--input", str(blob), "--policy", str(plain))
    expect_error(r, ExitCode.INTEGRITY, "refused the signed policy at TPM2_Unseal")
    assert secret not in r.out


_SOME_STATE = {"sha256": {"0": "0a" * 32, "4": "0b" * 32, "7": "0c" * 32}}


def test_format_2_blobs_round_trip_and_refuse_edits(tcg_sim: Simulator, tmp_path: Path) -> None:
    key = _keygen(tcg_sim, tmp_path)
    _, blob = _sealed(tcg_sim, tmp_path, key, "--min-version-nv", COUNTER)
    text = blob.read_text()
    parsed = SealedBlob.from_json(text)
    assert parsed.to_json().replace(parsed.created, "") == text.replace(parsed.created, "")
    assert parsed.authorizer is not None and parsed.revocation_nv == int(COUNTER, 16)
    doc = json.loads(text)
    edits: dict[str, Callable[[dict[str, Any]], None]] = {
        "authorizer name": lambda d: d["policy"]["authorizer"].update(name="00" * 34),
        "counter": lambda d: d["policy"].update(revocation_nv="0x01500021"),
        "one state": lambda d: d["policy"].update(states=[d["pcr_values"]]),
        "nine states": lambda d: d["policy"].update(states=[d["pcr_values"]] * 9),
        "states and a signer": lambda d: d.update(pcr_values=_SOME_STATE) or d["policy"].update(
            states=[_SOME_STATE, {"sha256": {"0": "01" * 32, "4": "02" * 32, "7": "03" * 32}}]),
    }
    for edit in edits.values():
        d = json.loads(json.dumps(doc))
        edit(d)
        with pytest.raises(BadInputError):
            SealedBlob.from_json(json.dumps(d))
    # an edited policy_ref gives another authPolicy: refused before the TPM is asked
    d = json.loads(json.dumps(doc))
    d["policy"]["authorizer"]["policy_ref"] = ""
    d["policy"]["revocation_nv"] = None
    (tmp_path / "edited.json").write_text(json.dumps(d))
    pol = _sign(tcg_sim, key, tmp_path / "p.json", "--current")
    expect_error(direct(tcg_sim, "unseal", "--input", str(tmp_path / "edited.json"),
                        "--policy", str(pol)), ExitCode.BAD_INPUT, "policy_digest")


def test_reseal_adds_and_drops_states(tcg_sim: Simulator, tmp_path: Path) -> None:
    secret = os.urandom(32)
    (tmp_path / "key").write_bytes(secret)
    blob = tmp_path / "blob.json"
    assert direct(tcg_sim, "seal", "--input", str(tmp_path / "key"), "--output", str(blob),
                  "--pcrs", PCRS).rc == 0
    now = json.loads(direct(tcg_sim, "pcrs", "show", "--pcrs", PCRS, "--json").out)
    (tmp_path / "now.json").write_text(json.dumps(now))
    nxt = json.loads(json.dumps(now))
    nxt["sha256"]["7"] = "33" * 32
    (tmp_path / "next.json").write_text(json.dumps(nxt))
    r = direct(tcg_sim, "reseal", "--input", str(blob), "--add-state", str(tmp_path / "next.json"))
    assert r.rc == 0, r.err
    assert len(json.loads(blob.read_text())["policy"]["states"]) == 2
    expect_ok(direct(tcg_sim, "unseal", "--input", str(blob)), secret)
    r = direct(tcg_sim, "reseal", "--input", str(blob), "--drop-state", str(tmp_path / "now.json"))
    assert r.rc == 0, r.err
    doc = json.loads(blob.read_text())
    assert doc["format"] == "tpmseal-sealed/1" and doc["pcr_values"]["sha256"]["7"] == "33" * 32
    expect_error(direct(tcg_sim, "unseal", "--input", str(blob)), ExitCode.PCR_MISMATCH)
    expect_error(direct(tcg_sim, "reseal", "--input", str(blob), "--drop-state",
                        str(tmp_path / "now.json")), ExitCode.PCR_MISMATCH)


def _nv_record(sim: Simulator) -> tuple[dict[str, Any], dict[str, Any]]:
    """The trust file and the one policy record of the EVE profile's NV object."""
    doc = json.loads((sim.state / "trust.json").read_text())
    records = pinned_json(doc, "eve")["nv_records"]
    assert list(records) == pinned_json(doc, "eve")["nv_sealed"]
    return doc, next(iter(records.values()))


def test_signed_policy_in_eves_nv_layout(eve_sim: Simulator, tmp_path: Path) -> None:
    """The trust file records the signer next to the pinned Name: `unseal --nv` needs
    only the signed policy, before and after an update."""
    key = _keygen(eve_sim, tmp_path)
    secret = os.urandom(32)
    (tmp_path / "key").write_bytes(secret)
    pub = str(key.with_suffix(".pub"))
    r = direct(eve_sim, "seal", "--profile", "eve", "--nv", "--input", str(tmp_path / "key"),
               "--authorized-by", pub, "--pcrs", PCRS, "--min-version-nv", COUNTER)
    assert r.rc == 0, r.err
    _, rec = _nv_record(eve_sim)
    assert rec["policy"]["authorizer"] and rec["policy"]["revocation_nv"] == COUNTER
    pol = _sign(eve_sim, key, tmp_path / "p.json", "--current", "--version", "5",
                "--nv-index", COUNTER)
    nv = ("unseal", "--profile", "eve", "--nv")
    expect_ok(direct(eve_sim, *nv, "--policy", str(pol)), secret)
    _extend(eve_sim)
    pol2 = _sign(eve_sim, key, tmp_path / "p2.json", "--current", "--version", "6",
                 "--nv-index", COUNTER)
    expect_ok(direct(eve_sim, *nv, "--policy", str(pol2)), secret)
    expect_error(direct(eve_sim, *nv), ExitCode.USAGE, "sealed to a policy signer")
    # reseal --nv keeps the signer and records the new object
    r = direct(eve_sim, "reseal", "--profile", "eve", "--nv", "--policy", str(pol2))
    assert r.rc == 0, r.err
    assert _nv_record(eve_sim)[1]["policy"] == rec["policy"]
    expect_ok(direct(eve_sim, *nv, "--policy", str(pol2)), secret)


def test_several_states_in_eves_nv_layout(eve_sim: Simulator, tmp_path: Path) -> None:
    """PolicyOR states in the NV layout: recorded in the trust file, no flags at unseal."""
    secret = os.urandom(32)
    (tmp_path / "key").write_bytes(secret)
    now = direct(eve_sim, "pcrs", "show", "--pcrs", PCRS, "--json").out
    (tmp_path / "a.json").write_bytes(now)
    _extend(eve_sim)
    (tmp_path / "b.json").write_bytes(direct(eve_sim, "pcrs", "show", "--pcrs", PCRS,
                                             "--json").out)
    r = direct(eve_sim, "seal", "--profile", "eve", "--nv", "--pcrs", PCRS, "--input",
               str(tmp_path / "key"), "--pcr-values", str(tmp_path / "a.json"),
               "--pcr-values", str(tmp_path / "b.json"))
    assert r.rc == 0, r.err
    assert len(_nv_record(eve_sim)[1]["policy"]["states"]) == 2
    expect_ok(direct(eve_sim, "unseal", "--profile", "eve", "--nv"), secret)  # state b
    _extend(eve_sim)  # neither state
    expect_error(direct(eve_sim, "unseal", "--profile", "eve", "--nv"), ExitCode.PCR_MISMATCH,
                 "none of the 2 states")
    (tmp_path / "c.json").write_bytes(direct(eve_sim, "pcrs", "show", "--pcrs", PCRS,
                                             "--json").out)
    expect_error(direct(eve_sim, "reseal", "--profile", "eve", "--nv", "--add-state",
                        str(tmp_path / "c.json")), ExitCode.PCR_MISMATCH)


def test_tampered_nv_record_denies_but_never_leaks(eve_sim: Simulator, tmp_path: Path) -> None:
    """Attack: the NV record is a local file, not an HMAC-checked answer. An attacker who
    rewrites it (their own signer and its policy for this state; the signer removed;
    another PolicyOR state added) gets a refusal, never the secret: the record must
    give the pinned object's authPolicy, and the TPM's policy check still decides."""
    key = _keygen(eve_sim, tmp_path)
    evil = _keygen(eve_sim, tmp_path, "evil")
    secret = os.urandom(32)
    (tmp_path / "key").write_bytes(secret)
    r = direct(eve_sim, "seal", "--profile", "eve", "--nv", "--input", str(tmp_path / "key"),
               "--authorized-by", str(key.with_suffix(".pub")), "--pcrs", PCRS)
    assert r.rc == 0, r.err
    theirs = _sign(eve_sim, evil, tmp_path / "evil.json", "--current")
    mine = _sign(eve_sim, key, tmp_path / "mine.json", "--current")
    doc, _ = _nv_record(eve_sim)
    evil_pub = direct(eve_sim, "seal", "--profile", "eve", "--output",
                      str(tmp_path / "evil-blob.json"), "--input", str(tmp_path / "key"),
                      "--authorized-by", str(evil.with_suffix(".pub")), "--pcrs", PCRS)
    assert evil_pub.rc == 0, evil_pub.err
    evil_auth = json.loads((tmp_path / "evil-blob.json").read_text())["policy"]["authorizer"]
    now = json.loads(direct(eve_sim, "pcrs", "show", "--pcrs", PCRS, "--json").out)
    now.pop("authenticated", None)
    nv = ("unseal", "--profile", "eve", "--nv")
    edits: list[tuple[str, Callable[[dict[str, Any]], Any], Path | None, int]] = [
            ("another signer", lambda r: r["policy"].update(authorizer=evil_auth), theirs,
             ExitCode.BAD_INPUT),
            ("no signer: plain PolicyPCR over the current values", lambda r: r.pop("policy"),
             None, ExitCode.PCR_MISMATCH),
            ("the current state instead of the signer", lambda r: r.update(
                pcr_values=now, policy=None), None, ExitCode.BAD_INPUT),
            ("a wrong check value", lambda r: r.update(check="00" * 32), mine,
             ExitCode.INTEGRITY)]
    for what, edit, policy, code in edits:
        bad = json.loads(json.dumps(doc))
        edit(next(iter(pinned_json(bad, "eve")["nv_records"].values())))
        (eve_sim.state / "trust.json").write_text(json.dumps(bad))
        r = direct(eve_sim, *nv, *(("--policy", str(policy)) if policy else ()))
        assert r.out == b"" and r.rc == code, (what, r.rc, r.err)
    (eve_sim.state / "trust.json").write_text(json.dumps(doc))
    expect_ok(direct(eve_sim, *nv, "--policy", str(mine)), secret)


def test_reseal_keeps_the_signer(tcg_sim: Simulator, tmp_path: Path) -> None:
    key = _keygen(tcg_sim, tmp_path)
    secret, blob = _sealed(tcg_sim, tmp_path, key, "--min-version-nv", COUNTER)
    start = _counter(tcg_sim)
    pol = _sign(tcg_sim, key, tmp_path / "p.json", "--current", "--version", str(start),
                "--nv-index", COUNTER)
    before = json.loads(blob.read_text())
    r = direct(tcg_sim, "reseal", "--input", str(blob), "--policy", str(pol))
    assert r.rc == 0, r.err
    after = json.loads(blob.read_text())
    assert after["policy"] == before["policy"] and after["private"] != before["private"]
    expect_ok(direct(tcg_sim, "unseal", "--input", str(blob), "--policy", str(pol)), secret)


@pytest.mark.parametrize("text", [
    b"", b"[]", b"\xff\xfe", b'{"format": "tpmseal-signed-policy/1"}', b'{"sha256": 5}',
    b'{"sha256": [{"pcrs": "x"}]}', b'{"sha256": [{"pcrs": [99], "pkfp": "", "pol": "", '
    b'"sig": ""}]}', b'{"sha256": [{"pcrs": [7], "pkfp": "zz", "pol": "", "sig": "!"}]}',
    b'{"sha1": []}', b'{"format": "tpmseal-signed-policy/1", "pcrs": {"sha256": [7]}, '
    b'"pcr_digest": "00", "approved_policy": "00", "key_fingerprint": "", "signature": "",'
    b' "nv_index": "0x1", "version": -1}'])
def test_malformed_policy_files_are_typed_errors(text: bytes) -> None:
    with pytest.raises((BadInputError, UsageError)):
        signed.parse_policies(text, "p.json")


def test_revoke_below_an_undefined_counter_says_how_to_define_it(tcg_sim: Simulator) -> None:
    r = direct(tcg_sim, "policy", "revoke-below", "3", "--nv-index", "0x01500777")
    expect_error(r, ExitCode.NOT_FOUND, "NV 0x1500777 is not defined")
    assert "--min-version-nv" in r.err
