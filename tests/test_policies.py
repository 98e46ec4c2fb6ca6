"""The policy value (recipes/policies.py): constructors, rules, and the library API.

The digest a :class:`SealPolicy` computes offline is the sealed object's
authPolicy (the TPM's own Create records it), and ``tpmseal.seal`` /
``unseal`` / ``reseal`` take one value for PolicyPCR, PolicyOR and
PolicyAuthorize alike.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import tpmseal
from tpmseal.errors import UsageError
from tpmseal.recipes import signed, signer
from tpmseal.recipes.pcrspec import parse_pcrs
from tpmseal.recipes.policies import SealPolicy, any_of_states, pcr_policy, signed_by
from tpmseal.recipes.revocation import revocation_ref
from tpmseal.session.policy import pcr_digest
from tpmseal.transport.simulator import Simulator
from tpmseal.wire.constants import TPM_ALG

S256 = int(TPM_ALG.SHA256)
SEL = parse_pcrs("sha256:0,4,7")


def _state(byte: int) -> dict[tuple[int, int], bytes]:
    return {(S256, i): bytes([byte + i]) * 32 for i in (0, 4, 7, 9)}


def test_constructors_and_rules() -> None:
    key = signer.generate_key("ecc").public_key()
    p = signed_by(key, "sha256:0,4,7", min_version_nv=0x01500020, pin=True)
    assert p.authorizer is not None and p.authorizer.policy_ref == revocation_ref(0x01500020)
    assert (p.pcrs, p.pin, p.reads_pcrs) == (SEL, True, False)
    assert len(p.digest()) == 32  # offline: PolicyAuthorize then PolicyAuthValue
    assert pcr_policy("sha256:0,4,7").reads_pcrs
    two = any_of_states([_state(1), _state(2), _state(1)], SEL)
    assert len(two.states) == 2 and set(two.states[0]) == set(SEL.pairs())  # cut, deduplicated
    with pytest.raises(UsageError, match="exclude each other"):
        SealPolicy(SEL, two.states, p.authorizer)
    with pytest.raises(UsageError, match="needs --authorized-by"):
        SealPolicy(SEL, revocation_nv=0x01500020)
    with pytest.raises(UsageError, match="at most 8"):
        any_of_states([_state(n) for n in range(9)], SEL)
    with pytest.raises(UsageError, match="no value for sha256:9"):
        any_of_states([{(S256, 0): b"\0" * 32}], "sha256:0,9")
    with pytest.raises(UsageError, match="other PCRs"):
        pcr_policy("sha256:0").with_pcrs(SEL)
    with pytest.raises(UsageError, match="no PCR values yet"):
        pcr_policy(SEL).digest()


def test_renewed_and_change_states() -> None:
    two = any_of_states([_state(1), _state(2)], SEL)
    assert two.renewed() == two  # the same states while the PCR list stays
    assert two.renewed(parse_pcrs("sha256:0")) == SealPolicy(parse_pcrs("sha256:0"))
    three = two.change_states([_state(3)], [_state(1)])
    assert [v[(S256, 0)][0] for v in three.states] == [2, 3]
    with pytest.raises(UsageError, match="nothing to unseal"):
        two.change_states([], [_state(1), _state(2)])
    with pytest.raises(UsageError, match="not one of the sealed states"):
        two.change_states([], [_state(5)])
    key = signer.generate_key("ecc").public_key()
    with pytest.raises(UsageError, match="sealed to a policy signer"):
        signed_by(key, SEL).change_states([_state(1)], [])


def test_library_seal_unseal_reseal_with_policy_values(tcg_sim: Simulator,
                                                       tmp_path: Path) -> None:
    secret = os.urandom(32)
    with tpmseal.open_tpm(tcg_sim.uri) as tpm:
        now = tpm.pcr_read(SEL)
        policy = tpmseal.any_of_states([now, _state(1)], "sha256:0,4,7")
        blob = tpmseal.seal(tpm, secret, policy=policy, output=tmp_path / "or.json")
        assert blob.policy_digest == policy.digest()  # offline = what the TPM recorded
        assert blob.sealed_policy == policy
        assert tpmseal.unseal(tpm, tmp_path / "or.json") == secret
        # reseal without a policy keeps the states; with one, seals to it
        again = tpmseal.reseal(tpm, tmp_path / "or.json")
        assert again.sealed_policy == policy and again.private != blob.private
        tpmseal.reseal(tpm, tmp_path / "or.json", policy=tpmseal.pcr_policy("sha256:0,7"))
        assert tpmseal.unseal(tpm, tmp_path / "or.json") == secret
        # a signer: the secret unseals with the policy it signs for the current state
        key = signer.generate_key("rsa")
        tpmseal.seal(tpm, secret, policy=tpmseal.signed_by(key.public_key(), SEL),
                     output=tmp_path / "signed.json")
        pol = signed.sign(key, SEL, pcr_digest(TPM_ALG.SHA256, [now[k] for k in SEL.pairs()]))
        (tmp_path / "p.json").write_text(pol.to_json())
        assert tpmseal.unseal(tpm, tmp_path / "signed.json",
                              policies=[tmp_path / "p.json"]) == secret
        with pytest.raises(UsageError, match="asks for a PIN"):
            tpmseal.seal(tpm, secret, policy=tpmseal.pcr_policy(pin=True))
