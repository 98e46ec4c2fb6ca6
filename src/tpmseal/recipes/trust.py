"""The trust file: what ``provision`` pinned about a TPM (trust on first use).

Salting a session protects the bus only if the salt is encrypted to the TPM's
real key. Reading that key over the same bus at every seal would let an
interposer hand out its own key and relay the session (the chicken-and-egg
problem the seed's author ran into). So ``provision`` records the EK's public
area and Name (checked against the EK certificate when a CA bundle is given),
the SRK's Name, and whether the TPM passed TestParms for AES-128-CFB; seal uses
that record and never a fresh ReadPublic.

For a profile with an NV layout (EVE's), the record also pins the Names of the
sealed objects tpmseal stored there (``nv_sealed``): the layout has no metadata
and the SRK's authorization is empty, so anyone on the bus can store an object
of their own sealed to the current PCRs; a Name that is not pinned is refused
(recipes/stores.py). The list briefly holds two Names while a re-seal swaps the
pair, so a crash at any moment leaves a pinned copy. ``nv_records`` keeps, per
pinned Name, what a blob file would record beyond the object (its policy: PCR
states, signer, PIN; recipes/blob.py ``policy_record``), which the layout has no
room for; the stores treat it as untrusted input that the TPM's policy check
overrules.

Format (JSON, not secret, written atomically)::

    {"format": "tpmseal-trust/1",
     "profiles": {"tcg": {"ek": {"handle": "0x81010001", "name": HEX, "public": B64},
                          "srk": {"handle": "0x81000001", "name": HEX},
                          "aes_128_cfb": true, "ek_certificate": "verified"|"not checked",
                          "nv_sealed": [HEX, ...],  (profiles with an NV layout)
                          "nv_records": {HEX: {...}},  (optional, per pinned Name)
                          "updated": ISO-8601}}}
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from typing import Any

from tpmseal import safejson
from tpmseal.client.tpm import Tpm
from tpmseal.errors import (
    EK_MISMATCH,
    BadInputError,
    DecodeError,
    NotFoundError,
    TrustError,
    UsageError,
)
from tpmseal.files import read_capped, write_atomic
from tpmseal.recipes.blob import check_salt_key, handle_field
from tpmseal.records import field, record
from tpmseal.records import replace as _replace
from tpmseal.session.auth import AuthSession
from tpmseal.wire.constants import TPM_SE, TPMA_SESSION
from tpmseal.wire.rc import TpmResponseError
from tpmseal.wire.structures import Public

FORMAT = "tpmseal-trust/1"
DEFAULT_PATH = "/var/lib/tpmseal/trust.json"
#: a trust file is a few kB per profile; anything past this is not one
MAX_TRUST_FILE = 256 * 1024

__all__ = ["EK_MISMATCH", "TrustRecord", "load", "load_all", "salted_session", "save",
           "start_salted", "trust_path"]


def trust_path(explicit: str | None = None) -> str:
    """--trust-file, else $TPMSEAL_TRUST_FILE, else /var/lib/tpmseal/trust.json."""
    return (explicit or os.environ.get("TPMSEAL_TRUST_FILE") or DEFAULT_PATH)


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
    #: Names of the sealed objects tpmseal stored in the profile's NV layout
    nv_sealed: tuple[bytes, ...] = ()
    #: per pinned Name (hex), its policy record (recipes/blob.py ``policy_record``)
    nv_records: dict[str, Any] = field(default_factory=dict)
    #: the trust file this record was read from (not part of it)
    path: str | None = field(default=None, repr=False)

    @property
    def ek_name(self) -> bytes:
        return self.ek_public.name()

    def to_json(self) -> dict[str, Any]:
        from datetime import datetime, timezone  # only to save a record
        extra: dict[str, Any] = {"nv_sealed": [n.hex() for n in self.nv_sealed]} \
            if self.nv_sealed else {}
        if self.nv_records:
            extra["nv_records"] = self.nv_records
        return extra | {
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
            check_salt_key(pub, f"trust file {where}: the EK")
            rec = cls(profile, handle_field(d["ek"]["handle"], f"trust file {where}: EK"), pub,
                      handle_field(d["srk"]["handle"], f"trust file {where}: SRK"),
                      bytes.fromhex(d["srk"]["name"]), bool(d["aes_128_cfb"]),
                      str(d.get("ek_certificate", "not checked")), str(d.get("updated", "")),
                      tuple(bytes.fromhex(n) for n in d.get("nv_sealed", [])),
                      dict(d.get("nv_records") or {}), where)
            name = bytes.fromhex(d["ek"]["name"])
        except (KeyError, TypeError, ValueError, binascii.Error, DecodeError, AttributeError,
                IndexError) as e:
            raise BadInputError(f"trust file {where} is malformed ({type(e).__name__}: {e})",
                                "restore it from a backup, or re-pin with "
                                "`tpmseal provision --repin`") from None
        if name != rec.ek_name:
            raise BadInputError(f"trust file {where}: EK name does not match its public area",
                                "the file was edited or corrupted; re-run `tpmseal provision`")
        return rec


def load_all(path: str | os.PathLike[str]) -> dict[str, TrustRecord]:
    """Every profile recorded in the trust file; empty if the file does not exist."""
    raw = read_capped(path, "trust file", MAX_TRUST_FILE)
    if raw is None:
        return {}
    doc = safejson.loads(raw, f"trust file {path} is malformed",
                         "restore it or re-run `tpmseal provision`")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        fmt = doc.get("format") if isinstance(doc, dict) else None
        raise BadInputError(f"trust file {path} has an unknown format {str(fmt)[:40]!r}",
                            f"pass a {FORMAT!r} file written by `tpmseal provision`")
    profiles = doc.get("profiles")
    if not isinstance(profiles, dict):
        raise BadInputError(f"trust file {path} has no profiles",
                            "restore it or re-run `tpmseal provision`")
    records = {}
    for name, rec in profiles.items():
        if not isinstance(rec, dict):
            raise BadInputError(f"trust file {path}: profile {name[:40]!r} is not a JSON object",
                                "restore it or re-pin with `tpmseal provision --repin`")
        records[name] = TrustRecord.from_json(name, rec, str(path))
    return records


def load(path: str | os.PathLike[str], profile: str) -> TrustRecord:
    """The record for *profile*, or :class:`NotFoundError` saying to provision."""
    rec = load_all(path).get(profile)
    if rec is None:
        raise NotFoundError(f"no trusted endorsement key for profile {profile!r} in {path}",
                            f"run `tpmseal provision --profile {profile}` first (it pins the "
                            "TPM's keys), or pass the right --trust-file")
    return rec


def save(path: str | os.PathLike[str], record: TrustRecord, *, replace: bool = False) -> None:
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
    if old is not None and old.ek_name == record.ek_name and not record.nv_sealed:
        # a re-provision keeps the pins
        record = _replace(record, nv_sealed=old.nv_sealed, nv_records=old.nv_records)
    records[record.profile] = record
    _write(path, records)


def _write(path: str | os.PathLike[str], records: dict[str, TrustRecord]) -> None:
    doc = {"format": FORMAT, "profiles": {k: v.to_json() for k, v in sorted(records.items())}}
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        write_atomic(path, (json.dumps(doc, indent=2) + "\n").encode(), mode=0o644)
    except PermissionError:
        raise UsageError(f"permission denied writing trust file {path}",
                         "run as root or pass --trust-file PATH") from None
    except OSError as e:
        raise UsageError(f"cannot write trust file {path}: {e.strerror or e}",
                         "pass a writable --trust-file PATH") from None


def pin_sealed(record: TrustRecord, names: tuple[bytes, ...],
               policies: dict[str, Any] | None = None) -> TrustRecord:
    """Record *names* as the sealed objects of the profile's NV layout, with the policy
    records in *policies* (by Name in hex) added; records of other Names are dropped.
    Returns the record."""
    if record.path is None:
        raise UsageError("this trust record was not read from a trust file",
                         "load it with trust.load() to pin sealed objects")
    kept = {n.hex(): r for n in names
            if (r := (policies or {}).get(n.hex(), record.nv_records.get(n.hex()))) is not None}
    if names == record.nv_sealed and kept == record.nv_records:
        return record
    records = load_all(record.path)
    updated = _replace(records.get(record.profile, record), nv_sealed=names, nv_records=kept,
                       updated="", path=record.path)
    records[record.profile] = updated
    _write(record.path, records)
    return updated


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
