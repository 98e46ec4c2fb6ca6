"""The trust file: what ``provision`` pinned about a TPM (trust on first use).

Salting a session protects the bus only if the salt is encrypted to the TPM's
real key. Reading that key over the same bus at every seal would let an
interposer hand out its own key and relay the session (the chicken-and-egg
problem the seed's author ran into). So ``provision`` records the EK's public
area and Name (checked against the EK certificate when a CA bundle is given),
the SRK's Name, and whether the TPM passed TestParms for AES-128-CFB; seal uses
that record and never a fresh ReadPublic.

Format (JSON, not secret, written atomically)::

    {"format": "tpmseal-trust/1",
     "profiles": {"tcg": {"ek": {"handle": "0x81010001", "name": HEX, "public": B64},
                          "srk": {"handle": "0x81000001", "name": HEX},
                          "aes_128_cfb": true, "ek_certificate": "verified"|"not checked",
                          "updated": ISO-8601}}}
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from pathlib import Path
from typing import Any

from tpmseal.client.tpm import Tpm
from tpmseal.errors import BadInputError, DecodeError, NotFoundError, TrustError, UsageError
from tpmseal.files import write_atomic
from tpmseal.records import record
from tpmseal.session.auth import AuthSession
from tpmseal.wire.constants import TPM_SE, TPMA_SESSION
from tpmseal.wire.rc import TpmResponseError
from tpmseal.wire.structures import Public

FORMAT = "tpmseal-trust/1"
DEFAULT_PATH = "/var/lib/tpmseal/trust.json"

EK_MISMATCH = ("the TPM's endorsement key does not match the trusted one: possible interposer "
               "or replaced TPM")


def trust_path(explicit: str | None = None) -> Path:
    """--trust-file, else $TPMSEAL_TRUST_FILE, else /var/lib/tpmseal/trust.json."""
    return Path(explicit or os.environ.get("TPMSEAL_TRUST_FILE") or DEFAULT_PATH)


@record
class TrustRecord:
    """The pinned facts about one profile's keys on one TPM."""

    profile: str
    ek_handle: int
    ek_public: Public
    srk_handle: int
    srk_name: bytes
    aes_128_cfb: bool
    ek_certificate: str = "not checked"
    updated: str = ""

    @property
    def ek_name(self) -> bytes:
        return self.ek_public.name()

    def to_json(self) -> dict[str, Any]:
        from datetime import datetime, timezone  # only to save a record
        return {
            "ek": {"handle": f"{self.ek_handle:#010x}", "name": self.ek_name.hex(),
                   "public": base64.b64encode(self.ek_public.sized()).decode()},
            "srk": {"handle": f"{self.srk_handle:#010x}", "name": self.srk_name.hex()},
            "aes_128_cfb": self.aes_128_cfb,
            "ek_certificate": self.ek_certificate,
            "updated": self.updated or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }

    @classmethod
    def from_json(cls, profile: str, d: dict[str, Any], where: str) -> TrustRecord:
        try:
            pub = Public.from_sized(base64.b64decode(d["ek"]["public"], validate=True))
            rec = cls(profile, int(d["ek"]["handle"], 16), pub, int(d["srk"]["handle"], 16),
                      bytes.fromhex(d["srk"]["name"]), bool(d["aes_128_cfb"]),
                      str(d.get("ek_certificate", "not checked")), str(d.get("updated", "")))
            name = bytes.fromhex(d["ek"]["name"])
        except (KeyError, TypeError, ValueError, binascii.Error, DecodeError) as e:
            raise BadInputError(f"trust file {where} is malformed ({type(e).__name__}: {e})",
                                "restore it from a backup, or re-pin with "
                                "`tpmseal provision --repin`") from None
        if name != rec.ek_name:
            raise BadInputError(f"trust file {where}: EK name does not match its public area",
                                "the file was edited or corrupted; re-run `tpmseal provision`")
        return rec


def load_all(path: Path) -> dict[str, TrustRecord]:
    """Every profile recorded in the trust file; empty if the file does not exist."""
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise UsageError(f"cannot read trust file {path}: {e.strerror}",
                         "pass a readable --trust-file") from None
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as e:
        raise BadInputError(f"trust file {path} is not JSON ({e.msg} at line {e.lineno})",
                            "restore it or re-run `tpmseal provision`") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BadInputError(f"trust file {path} has an unknown format "
                            f"{doc.get('format') if isinstance(doc, dict) else None!r}",
                            f"expected {FORMAT!r}")
    profiles = doc.get("profiles")
    if not isinstance(profiles, dict):
        raise BadInputError(f"trust file {path} has no profiles")
    return {name: TrustRecord.from_json(name, rec, str(path)) for name, rec in profiles.items()}


def load(path: Path, profile: str) -> TrustRecord:
    """The record for *profile*, or :class:`NotFoundError` saying to provision."""
    rec = load_all(path).get(profile)
    if rec is None:
        raise NotFoundError(f"no trusted endorsement key for profile {profile!r} in {path}",
                            f"run `tpmseal provision --profile {profile}` first (it pins the "
                            "TPM's keys), or pass the right --trust-file")
    return rec


def save(path: Path, record: TrustRecord, *, replace: bool = False) -> None:
    """Add or update *record*; refuse to change a pinned EK unless *replace*.

    With *replace* an unreadable trust file is replaced too (re-pinning is the
    way out of a corrupted one).
    """
    try:
        records = load_all(path)
    except BadInputError:
        if not replace:
            raise
        records = {}
    old = records.get(record.profile)
    if old is not None and old.ek_name != record.ek_name and not replace:
        raise TrustError(EK_MISMATCH,
                         "if the TPM was really replaced or cleared, re-pin with "
                         "`tpmseal provision --repin`")
    records[record.profile] = record
    doc = {"format": FORMAT, "profiles": {k: v.to_json() for k, v in sorted(records.items())}}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, (json.dumps(doc, indent=2) + "\n").encode(), mode=0o644)
    except PermissionError:
        raise UsageError(f"permission denied writing trust file {path}",
                         "run as root or pass --trust-file PATH") from None
    except OSError as e:
        raise UsageError(f"cannot write trust file {path}: {e.strerror or e}",
                         "pass a writable --trust-file PATH") from None


def start_salted(tpm: Tpm, public: Public, handle: int, kind: int = TPM_SE.HMAC,
                 attributes: int = TPMA_SESSION.continueSession) -> AuthSession:
    """A session salted to the key *public* that we trust to be at *handle*.

    If the TPM cannot decrypt the salt (TPM_RC_VALUE etc. on encryptedSalt,
    parameter 2), the key at the handle is not the one we trust.
    """
    try:
        return tpm.start_session(kind, salt_key=public, salt_handle=handle,
                                 attributes=attributes)
    except TpmResponseError as e:
        if e.rc.parameter == 2:
            raise TrustError(EK_MISMATCH, "the key at the pinned handle could not decrypt the "
                                          "session salt") from None
        raise


def salted_session(tpm: Tpm, record: TrustRecord,
                   attributes: int = TPMA_SESSION.continueSession) -> AuthSession:
    """An HMAC session salted with the pinned EK (AES-128-CFB capable).

    Its StartAuthSession is the expensive command of every flow (an RSA
    decryption on the chip: 70-500 ms), so a flow starts one and passes it along.
    """
    return start_salted(tpm, record.ek_public, record.ek_handle, TPM_SE.HMAC, attributes)
