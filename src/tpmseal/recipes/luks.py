"""LUKS2 volumes unlocked by the TPM: tpmseal tokens, enrol, unlock, remove, reseal.

A ``tpmseal`` LUKS2 token (LUKS2 on-disk format §3.4: a JSON object with
``type`` and ``keyslots``) carries the sealed blob of a random 32-byte keyslot
key under ``tpmseal-blob`` — the same document ``tpmseal seal --output``
writes, so nothing in the header is secret. The key is sealed on the encrypted
path (EK-salted session, AES-128-CFB) and reaches cryptsetup only on a pipe.

Order of header changes, so that a crash never loses access:

* enrol: add the keyslot (tested with the key before anything else), then
  the token. A crash in between leaves an unused keyslot, never a token
  without its key.
* reseal: the new token is added for the same keyslot before the old one is
  removed: at every moment one token unseals the key.
* remove: the keyslot goes first (cryptsetup unassigns it from the token),
  then the token; a crash in between leaves an empty token that ``remove``
  finishes. The last keyslot of a volume is never removed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tpmseal.client.tpm import Tpm
from tpmseal.errors import BadInputError, NotFoundError, UsageError
from tpmseal.log import get_logger
from tpmseal.recipes import cryptsetup, sealing
from tpmseal.recipes.blob import SealedBlob
from tpmseal.recipes.pcrspec import format_pcrs
from tpmseal.recipes.policies import SealPolicy
from tpmseal.recipes.profiles import Profile
from tpmseal.recipes.trust import TrustRecord
from tpmseal.records import record
from tpmseal.wire.structures import PcrSelectionList

if TYPE_CHECKING:  # signed policies load on use only
    from tpmseal.recipes.signed import SignedPolicy

log = get_logger("tpmseal.luks")

TOKEN_TYPE = "tpmseal"  # noqa: S105 (a LUKS2 token type, not a password)
BLOB_FIELD = "tpmseal-blob"
KEY_BYTES = 32


@record
class Enrolled:
    token_id: int
    keyslot: int
    blob: SealedBlob


def blob_of(token: Mapping[str, Any], token_id: int) -> SealedBlob:
    """The sealed blob a tpmseal token carries."""
    doc = token.get(BLOB_FIELD)
    if not isinstance(doc, dict):
        raise BadInputError(f"LUKS2 token {token_id} has no {BLOB_FIELD} object",
                            "remove it with `tpmseal luks remove --token-id "
                            f"{token_id}` and enrol again")
    return SealedBlob.from_json(json.dumps(doc), f"LUKS2 token {token_id}")


def token_for(blob: SealedBlob, keyslot: int | None = None) -> dict[str, Any]:
    return {"type": TOKEN_TYPE, "keyslots": [] if keyslot is None else [str(keyslot)],
            BLOB_FIELD: json.loads(blob.to_json())}


def enroll(tpm: Tpm, device: str, trust: TrustRecord, *, profile: Profile,
           policy: SealPolicy | None, pin: bytes | None = None,
           key_file: str | None = None, passphrase: bytes | None = None,
           allow_unmeasured: bool = False) -> Enrolled:
    """Seal a fresh key under *policy* (recipes/policies.py: the current PCR values, PolicyOR
    states, or a signer), add it as a keyslot (authorised by an existing passphrase or key
    file) and store the sealed blob as a tpmseal token for that keyslot.

    TPM commands: StartAuthSession, PCR_Read, Create; to a signer 2 (no PCR_Read), plus the
    revocation counter's NV_ReadPublic with ``min_version_nv`` (tests/test_policy_counts.py).
    """
    hdr = cryptsetup.header(device)
    slot, token_id = hdr.free_slot(), hdr.free_token()
    key = os.urandom(KEY_BYTES)
    blob = sealing.seal(tpm, key, policy, profile=profile, trust=trust, pin=pin,
                        allow_unmeasured=allow_unmeasured)
    cryptsetup.add_key(device, key, slot, key_file=key_file, passphrase=passphrase)
    cryptsetup.test_key(device, key, slot)
    cryptsetup.import_token(device, token_id, token_for(blob), slot)
    log.info("enrolled keyslot %d with token %d", slot, token_id)
    return Enrolled(token_id, slot, blob)


def unseal_token(tpm: Tpm, token: Mapping[str, Any], token_id: int,
                 trust: TrustRecord | None, pin: bytes | None,
                 policies: Sequence[SignedPolicy] = ()) -> bytes:
    """The keyslot key of a tpmseal token (unsealed on the encrypted path); *policies*:
    the signed policies offered for a token sealed to a signer.

    Needs the trust record: a blob *file* may name the key its unseal is salted to,
    but the LUKS2 header is not authenticated, and a salt key rewritten into it would
    let an interposer unwrap the salt and read the Unseal response (tests/
    test_attack_luks_tokens.py)."""
    if trust is None:
        raise UsageError("unsealing a tpmseal LUKS2 token needs the pinned endorsement key "
                         "(the token's own salt key is not authenticated)",
                         "run `tpmseal provision` first, or pass the right --trust-file "
                         "and --profile")
    return sealing.unseal(tpm, blob_of(token, token_id), trust=trust, pin=pin,
                          policies=policies)


def needs_pin(token: Mapping[str, Any], token_id: int) -> bool:
    """Whether the token's blob was sealed with a PIN."""
    return blob_of(token, token_id).pin


def describe(token: Mapping[str, Any], token_id: int) -> dict[str, Any]:
    blob = blob_of(token, token_id)
    out = {"pcrs": format_pcrs(blob.pcrs), "pin": blob.pin, "sealed_with": blob.sealed_with,
           "created": blob.created}
    if blob.authorizer is not None:
        out["signer"] = blob.authorizer.name.hex()
    if blob.states:
        out["states"] = len(blob.states)
    return out


def remove(device: str, token_id: int) -> list[int]:
    """Remove a token and the keyslots only it uses; returns the keyslots removed."""
    hdr = cryptsetup.header(device)
    token = hdr.tokens.get(token_id)
    if token is None:
        raise NotFoundError(f"{device} has no token {token_id}", "see `tpmseal luks list`")
    mine = set(cryptsetup.token_keyslots(token))
    shared = {s for tid, t in hdr.tokens.items() if tid != token_id
              for s in cryptsetup.token_keyslots(t)}
    doomed = sorted((mine - shared) & hdr.keyslots)
    if doomed and not hdr.keyslots - set(doomed):
        raise UsageError(f"refusing to remove keyslot {', '.join(map(str, doomed))} of "
                         f"{device}: it is the last one, and the volume's data would be lost",
                         "add a recovery passphrase first (cryptsetup luksAddKey)")
    for slot in doomed:
        cryptsetup.kill_slot(device, slot)
    cryptsetup.remove_token(device, token_id)
    return doomed


def reseal(tpm: Tpm, device: str, token_id: int, trust: TrustRecord, *, profile: Profile,
           pcrs: PcrSelectionList | None, pin: bytes | None = None,
           allow_unmeasured: bool = False, policies: Sequence[SignedPolicy] = ()) -> Enrolled:
    """Move a tpmseal token's key to new PCRs (a token sealed to a signer stays sealed to
    it): the new token is stored before the old goes."""
    hdr = cryptsetup.header(device)
    token = hdr.tokens.get(token_id)
    if token is None or token.get("type") != TOKEN_TYPE:
        raise NotFoundError(f"{device} has no tpmseal token {token_id}",
                            "see `tpmseal luks list`")
    slots = cryptsetup.token_keyslots(token)
    if len(slots) != 1:
        raise BadInputError(f"tpmseal token {token_id} is assigned to {len(slots)} keyslots, "
                            "not one", "enrol again and remove this token")
    old = blob_of(token, token_id)
    key = sealing.unseal(tpm, old, trust=trust, pin=pin, policies=policies)
    cryptsetup.test_key(device, key, slots[0])
    blob = sealing.seal(tpm, key, old.sealed_policy.renewed(pcrs), profile=profile,
                        trust=trust, pin=pin, allow_unmeasured=allow_unmeasured,
                        check=old.check is not None or None)
    new_id = hdr.free_token()
    cryptsetup.import_token(device, new_id, token_for(blob), slots[0])
    cryptsetup.remove_token(device, token_id)
    return Enrolled(new_id, slots[0], blob)
