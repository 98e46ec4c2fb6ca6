"""Enrolling ``systemd-tpm2`` LUKS2 tokens that systemd's own code unlocks.

The token is what systemd-cryptenroll 252 writes (:mod:`tpmseal.recipes.systemd_tpm2`
describes the format): a random 32-byte secret sealed under systemd's ECC
owner primary (:mod:`tpmseal.recipes.owner_primary`) with attributes
fixedTPM|fixedParent, PolicyPCR over one bank (+ PolicyAuthValue, authValue
SHA-256 of the PIN), and a keyslot whose passphrase is the base64 of the secret.
So systemd-cryptsetup, cryptsetup's systemd-tpm2 token plugin and tpmseal all
unlock it.

The difference is how the secret gets into the TPM. systemd-cryptenroll sends
it encrypted under a session salted with the primary it just read over the bus;
here one session salted with the EK pinned at provisioning carries the whole
flow: PCR_Read as an audit session (forged PCR values are detected),
CreatePrimary (its response HMAC authenticates the primary's Name), Create
with the ``decrypt`` attribute (the secret crosses only as AES-128-CFB
ciphertext); then FlushContext of the primary: 5 commands.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Any

from tpmseal.client.tpm import Tpm
from tpmseal.errors import IntegrityError, TpmsealError, UsageError
from tpmseal.recipes import cryptsetup, pcrspec, sealing
from tpmseal.recipes.owner_primary import PRIMARY_TEMPLATES
from tpmseal.recipes.systemd_tpm2 import TOKEN_TYPE, pin_auth
from tpmseal.recipes.trust import TrustRecord, salted_session
from tpmseal.session.policy import compute_policy
from tpmseal.wire import commands as cmds
from tpmseal.wire.constants import TPM_ALG, TPM_RH, TPMA_OBJECT, TPMA_SESSION
from tpmseal.wire.marshal import tpm2b
from tpmseal.wire.structures import KeyedHashParms, PcrSelectionList, Public, SensitiveCreate

log = logging.getLogger("tpmseal.luks")

SECRET_BYTES = 32

#: systemd's sealed object: fixedTPM|fixedParent, no userWithAuth (tpm2-util.c, tpm2_seal).
SEALED_ATTRS = TPMA_OBJECT.fixedTPM | TPMA_OBJECT.fixedParent


@dataclass(frozen=True)
class SystemdEnrolled:
    token_id: int
    keyslot: int
    pcrs: PcrSelectionList
    pin: bool


def seal_systemd(tpm: Tpm, secret: bytes, pcrs: PcrSelectionList, trust: TrustRecord,
                 pin: bytes | None, *, allow_unmeasured: bool = False) -> dict[str, Any]:
    """Seal *secret* the way systemd 252 does; returns the token's fields (no keyslot)."""
    if len(pcrs.selections) != 1:
        raise UsageError("a systemd-tpm2 token binds PCRs of one bank",
                         "give one bank, e.g. --pcrs sha256:7")
    if not trust.aes_128_cfb:
        raise UsageError("this TPM lacks AES-128-CFB: the secret would cross the bus in "
                         "plaintext", "use systemd-cryptenroll on such a TPM")
    session = salted_session(tpm, trust)
    try:
        session.attributes = TPMA_SESSION.continueSession | TPMA_SESSION.audit
        values = tpm.pcr_read(pcrs, session)
        zero = [i for (_, i) in pcrs.pairs() if not any(values[(pcrs.selections[0].hash_alg,
                                                                i)])]
        if zero and not allow_unmeasured:
            raise UsageError(f"refusing to enrol: PCR {', '.join(map(str, zero))} is all zero "
                             "(not measured), so anyone could recreate its value",
                             "choose measured PCRs, or pass --allow-unmeasured")
        steps = sealing.policy_steps(pcrs, values, pin is not None)
        template = Public(TPM_ALG.KEYEDHASH, TPM_ALG.SHA256, SEALED_ATTRS,
                          compute_policy(steps), KeyedHashParms(), b"")
        session.attributes = TPMA_SESSION.continueSession
        primary = tpm.run(cmds.CreatePrimary(TPM_RH.OWNER, SensitiveCreate(),
                                             PRIMARY_TEMPLATES["ecc"]), session)
        with tpm.scoped(primary.object_handle) as parent:
            session.attributes = TPMA_SESSION.decrypt  # ends with this command
            auth = pin_auth(pin) if pin is not None else b""
            r = tpm.run(cmds.Create(parent, SensitiveCreate(auth, secret), template), session)
    finally:
        if not session.ended:
            with contextlib.suppress(TpmsealError):
                tpm.flush(session.handle)
    if r.out_public.with_unique(b"") != template:
        raise IntegrityError("TPM returned a different public area than the one sent: "
                             "possible bus tampering",
                             "retry; if it persists, suspect an interposer on the TPM bus")
    sel = pcrs.selections[0]
    return {"type": TOKEN_TYPE, "keyslots": [],
            "tpm2-blob": base64.b64encode(tpm2b(r.out_private) + r.out_public.sized()).decode(),
            "tpm2-pcrs": list(sel.pcrs), "tpm2-pcr-bank": pcrspec.bank_name(sel.hash_alg),
            "tpm2-primary-alg": "ecc", "tpm2-policy-hash": template.auth_policy.hex(),
            "tpm2-pin": pin is not None}


def enroll_systemd(tpm: Tpm, device: str, trust: TrustRecord, pcrs: PcrSelectionList, *,
                   pin: bytes | None = None, key_file: str | None = None,
                   passphrase: bytes | None = None,
                   allow_unmeasured: bool = False) -> SystemdEnrolled:
    """Add a keyslot (base64 of a fresh secret) and its systemd-tpm2 token to *device*."""
    hdr = cryptsetup.header(device)
    slot, token_id = hdr.free_slot(), hdr.free_token()
    secret = os.urandom(SECRET_BYTES)
    token = seal_systemd(tpm, secret, pcrs, trust, pin, allow_unmeasured=allow_unmeasured)
    key = base64.b64encode(secret)
    cryptsetup.add_key(device, key, slot, key_file=key_file, passphrase=passphrase)
    cryptsetup.test_key(device, key, slot)
    cryptsetup.import_token(device, token_id, token, slot)
    log.info("enrolled keyslot %d with systemd-tpm2 token %d", slot, token_id)
    return SystemdEnrolled(token_id, slot, pcrs, pin is not None)
