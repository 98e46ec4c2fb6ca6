"""Volumes bound by the real ``clevis luks bind … tpm2`` (clevis 19) on swtpm, unlocked
by tpmseal; the passphrase is checked by cryptsetup 2.6 and compared with
``clevis luks pass``. On the bus, clevis' own unlock shows the JWK key, tpmseal's
does not.

clevis runs tpm2-tools, which leave objects and sessions loaded on a TPM without
a resource manager: every clevis step is followed by a flush.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from attacks.bus import assert_no_leak, interposer, names
from luks_support import cryptsetup, make_image, needs_cryptsetup, opens
from test_seal_support import assert_one_line_error, cli, extend, flush_leftovers
from tpmseal.client.tpm import Tpm
from tpmseal.errors import ExitCode
from tpmseal.recipes import clevis
from tpmseal.recipes import cryptsetup as cs
from tpmseal.recipes.owner_primary import SealedUnderPrimary, unseal_under_primary
from tpmseal.recipes.trust import load, trust_path
from tpmseal.sniff.analysis.leaks import scan
from tpmseal.transport.simulator import Simulator

CLEVIS = shutil.which("clevis")

pytestmark = [needs_cryptsetup, pytest.mark.skipif(
    CLEVIS is None or not shutil.which("clevis-luks-bind"),
    reason="clevis not installed (apt-get install clevis clevis-luks clevis-tpm2)")]


def run_clevis(tcti: str, uri: str, *argv: str) -> bytes:
    assert CLEVIS is not None
    env = {**os.environ, "TPM2TOOLS_TCTI": tcti}
    done = subprocess.run([CLEVIS, *argv], env=env, capture_output=True, timeout=120,
                          check=False)
    flush_leftovers(uri)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


def bind(tcti: str, uri: str, img: Path, pw: Path) -> None:
    # the options go before the pin name: a trailing -k is silently ignored
    run_clevis(tcti, uri, "luks", "bind", "-y", "-k", str(pw), "-d", str(img), "tpm2",
               '{"pcr_ids":"7","pcr_bank":"sha256"}')


@pytest.fixture
def bound(tcg_sim: Simulator, tmp_path: Path) -> Path:
    img, pw = make_image(tmp_path)
    bind(tcg_sim.tools_tcti, tcg_sim.uri, img, pw)
    return img


def _token(img: Path) -> dict[str, Any]:
    return cs.header(str(img)).tokens[0]


def test_binding_as_clevis_writes_it(bound: Path) -> None:
    token = _token(bound)
    assert token["type"] == "clevis" and token["keyslots"] == ["1"]
    b = clevis.ClevisBinding.parse(token, 0)
    assert b.primary_alg == "ecc" and b.public.object_attributes == 0x492


def test_tpmseal_unlocks_a_clevis_volume(tcg_sim: Simulator, bound: Path) -> None:
    r = cli(["luks", "test", str(bound)])
    assert (r.rc, r.out) == (0, b"token 0 (clevis) unlocks keyslot 1\n"), r.err
    rec = load(trust_path(), "tcg")
    with Tpm.open(tcg_sim.uri) as tpm:
        passphrase = clevis.unseal_token(tpm, _token(bound), 0, rec, None)
    assert opens(bound, passphrase, 1)
    ours = run_clevis(tcg_sim.tools_tcti, tcg_sim.uri, "luks", "pass", "-d", str(bound),
                      "-s", "1")
    assert ours == passphrase


def _jwk(tpm: Tpm, img: Path) -> bytes:
    b = clevis.ClevisBinding.parse(_token(img), 0)
    rec = load(trust_path(), "tcg")
    return unseal_under_primary(tpm, SealedUnderPrimary(b.public, b.private, b.pcrs, "ecc",
                                                        "clevis binding"), rec, None)


def test_on_the_bus_clevis_leaks_the_key_tpmseal_does_not(tcg_sim: Simulator,
                                                           tmp_path: Path) -> None:
    img, pw = make_image(tmp_path)
    with interposer(tcg_sim) as p:
        bind(p.tools_tcti, p.uri, img, pw)
        bind_exchanges = p.exchanges
        p.clear()
        run_clevis(p.tools_tcti, p.uri, "luks", "pass", "-d", str(img), "-s", "1")
        clevis_exchanges = p.exchanges
        p.clear()
        with Tpm.open(p.uri) as tpm:
            jwk = _jwk(tpm, img)
            passphrase = clevis.decrypt(clevis.ClevisBinding.parse(_token(img), 0), jwk)
        ours = p.exchanges
    key = clevis.jwk_key(jwk)
    assert opens(img, passphrase, 1)
    # clevis: the JWK crosses in plaintext when bound (Create) and when unlocked (Unseal)
    assert ("Create", "command") in {(k.command, k.direction) for k in scan(bind_exchanges,
                                                                              [key])}
    assert ("Unseal", "response") in {(k.command, k.direction)
                                      for k in scan(clevis_exchanges, [key])}
    # tpmseal: the same volume, neither the JWK key nor the passphrase on the bus
    assert "Unseal" in names(ours)
    assert_no_leak(ours, key, jwk, passphrase)


def test_pcr_change(tcg_sim: Simulator, bound: Path) -> None:
    extend(tcg_sim.uri, 7)
    assert_one_line_error(cli(["luks", "test", str(bound)]), ExitCode.PCR_MISMATCH,
                          "sha256:7 changed")


def _import(img: Path, token_id: int, token: dict[str, Any]) -> None:
    r = cryptsetup("token", "import", "--disable-external-tokens", "--json-file=-",
                   "--token-id", str(token_id), "--key-slot", "1", str(img),
                   stdin=json.dumps(token).encode())
    assert r.returncode == 0, r.stderr


def test_tampered_jwe_is_an_integrity_failure(bound: Path) -> None:
    token = copy.deepcopy(_token(bound))
    ct = token["jwe"]["ciphertext"]
    token["jwe"]["ciphertext"] = ("B" if ct[0] != "B" else "C") + ct[1:]
    _import(bound, 7, token)
    assert_one_line_error(cli(["luks", "test", str(bound), "--token-id", "7"]),
                          ExitCode.INTEGRITY, "does not decrypt")


def test_unsupported_and_malformed(bound: Path) -> None:
    good = _token(bound)
    header = json.loads(clevis.b64url(good["jwe"]["protected"], "p"))

    def with_header(h: dict[str, Any]) -> dict[str, Any]:
        t = copy.deepcopy(good)
        raw = json.dumps(h).encode()
        t["jwe"]["protected"] = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        return t

    sss = copy.deepcopy(header)
    sss["clevis"]["pin"] = "sss"
    signed = copy.deepcopy(header)
    signed["clevis"]["tpm2"]["policy_pubkey"] = "x"
    cases = [(with_header(sss), ExitCode.USAGE, "'sss' pin"),
             (with_header(signed), ExitCode.USAGE, "policy_pubkey"),
             (dict(good, jwe="x"), ExitCode.BAD_INPUT, "not a JSON object"),
             (dict(good, jwe=dict(good["jwe"], protected="!!")), ExitCode.BAD_INPUT,
              "token 13: protected is not base64url"),
             (dict(good, jwe={}), ExitCode.BAD_INPUT, "missing field")]
    for i, (token, code, needle) in enumerate(cases, start=10):
        _import(bound, i, token)
        assert_one_line_error(cli(["luks", "test", str(bound), "--token-id", str(i)]), code,
                              needle)
