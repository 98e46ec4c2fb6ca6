"""Attack 11: EK certificate validation (recipes/ekcert.py) against forged certificates.

The real chain (swtpm_setup's local CA: root → intermediate → EK certificate in
NV 0x01C00002) passes. Rejected, with exit 6 and nothing written:

* a certificate for the real EK key from another CA — even one that copies the
  real issuer's name (only the signature tells them apart);
* a certificate for a different key, signed by the real CA (the attacker
  holding the CA's key: the certificate chains, but is not for this EK).

The forged certificate is served by the interposer, rewriting NV_Read of the
certificate index (tests/attacks/certs.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from attacks.bus import (
    assert_no_leak,
    direct,
    expect_error,
    interposer,
    names,
    tpm,
    unchanged,
)
from attacks.certs import CertSwap, ca_signing_key, issuer_name, make_cert, own_ca
from attacks.mitm import ManInTheMiddle, attacker_key
from test_seal_support import pinned_json
from tpmseal.client.tpm import Tpm
from tpmseal.errors import ExitCode
from tpmseal.session.salt import public_key
from tpmseal.sniff.capture.hooks import HookContext, Verdict
from tpmseal.transport.simulator import Simulator
from tpmseal.wire.structures import Public

EK = 0x81010001
EK_CERT = 0x01C00002


def _ek(sim: Simulator) -> tuple[Public, int]:
    with Tpm.open(sim.uri) as t:
        return t.read_public(EK), t.nv_read_public(EK_CERT).data_size


def test_real_chain_passes(tcg_sim: Simulator, tmp_path: Path) -> None:
    trust = tmp_path / "trust.json"
    with interposer(tcg_sim) as p:
        r = tpm(p, "--trust-file", str(trust), "provision", "--ek-ca", str(tcg_sim.ca_dir))
        assert r.rc == 0, r.err
        assert f"EK certificate: verified (NV {EK_CERT:#x})".encode() in r.out
        assert "NV_Read" in names(p.exchanges)
    rec = pinned_json(json.loads(trust.read_text()), "tcg")
    assert rec["ek_certificate"] == f"verified (NV {EK_CERT:#x})"
    assert rec["ek"]["name"] == _ek(tcg_sim)[0].name().hex()


@pytest.mark.parametrize("issuer", ["own-name", "real-name"])
def test_certificate_from_another_ca_is_rejected(tcg_sim: Simulator, tmp_path: Path,
                                                 issuer: str) -> None:
    ek, size = _ek(tcg_sim)
    name = (issuer_name(tcg_sim.ca_dir) if issuer == "real-name"
            else x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "attacker CA")]))
    ca_key, _ = own_ca(name)
    forged = make_cert(public_key(ek), name, ca_key)
    assert len(forged) <= size
    _expect_rejection(tcg_sim, tmp_path, forged, "does not chain to the given CA bundle")


def test_certificate_for_another_key_from_the_real_ca_is_rejected(tcg_sim: Simulator,
                                                                  tmp_path: Path) -> None:
    _, size = _ek(tcg_sim)
    forged = make_cert(attacker_key().public_key(), issuer_name(tcg_sim.ca_dir),
                       ca_signing_key(tcg_sim.ca_dir))
    assert len(forged) <= size
    _expect_rejection(tcg_sim, tmp_path, forged, "is for a different key")


def _expect_rejection(sim: Simulator, tmp: Path, forged: bytes, needle: str) -> None:
    fresh = tmp / "trust.json"
    pinned = sim.state / "trust.json"
    blob, sealed = tmp / "blob.json", tmp / "sealed.json"
    secret = os.urandom(32)
    (tmp / "key").write_bytes(secret)
    assert direct(sim, "seal", "--input", str(tmp / "key"), "--output", str(sealed)).rc == 0
    watch = unchanged(sim, fresh, pinned, blob, sealed)
    swap = CertSwap(EK_CERT, forged)
    with interposer(sim, on_response=swap) as p:
        r = tpm(p, "--trust-file", str(fresh), "provision", "--ek-ca", str(sim.ca_dir))
        expect_error(r, ExitCode.INTEGRITY, needle)
        r = tpm(p, "provision", "--ek-ca", str(sim.ca_dir))
        expect_error(r, ExitCode.INTEGRITY, needle)
        r = tpm(p, "seal", "--ek-ca", str(sim.ca_dir), "--input", str(tmp / "key"),
                "--output", str(blob))
        expect_error(r, ExitCode.INTEGRITY, needle)
        assert "Create" not in names(p.exchanges)
        r = tpm(p, "unseal", "--ek-ca", str(sim.ca_dir), "--input", str(sealed))
        expect_error(r, ExitCode.INTEGRITY, needle)
        assert "Unseal" not in names(p.exchanges)
        assert swap.served >= 4
        assert_no_leak(p.exchanges, secret)
    watch.check()


def test_mitm_with_a_real_ca_certificate_for_its_key_is_out_of_scope(
        tcg_sim: Simulator, tmp_path: Path) -> None:
    """Whoever holds the CA's signing key can certify the attacker's key: --ek-ca trusts
    the CA (SECURITY.md). This is why the bundle must hold only the manufacturer's CAs."""
    ek, _ = _ek(tcg_sim)
    mitm = ManInTheMiddle(ek, EK)
    forged = make_cert(attacker_key().public_key(), issuer_name(tcg_sim.ca_dir),
                       ca_signing_key(tcg_sim.ca_dir))
    swap = CertSwap(EK_CERT, forged)

    def respond(ctx: HookContext) -> Verdict:
        return swap(ctx) or mitm.on_response(ctx)

    trust = tmp_path / "trust.json"
    with interposer(tcg_sim, on_command=mitm.on_command, on_response=respond) as p:
        r = tpm(p, "--trust-file", str(trust), "provision", "--ek-ca", str(tcg_sim.ca_dir))
        assert r.rc == 0, r.err
    assert pinned_json(json.loads(trust.read_text()), "tcg")["ek"]["name"] == \
        mitm.fake_ek.name().hex()

