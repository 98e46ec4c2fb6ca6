"""The sealed blob file: versioned JSON around the sealed object's public and private parts.

``public`` is base64 of TPM2B_PUBLIC *with* its size prefix and ``private`` of
TPM2B_PRIVATE with its size prefix — byte-identical to tpm2-tools' ``-u`` and
``-r`` files, so either tool can load the other's object. Nothing in the file is
secret: the private part is encrypted under the SRK, which never leaves the TPM.
The rest lets ``unseal`` run with no extra TPM round trips (salt key public area
and handle, the PCR selection and the values they had at seal time) and explain
a failure (which PCRs changed).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from tpmseal import safejson
from tpmseal.digests import hmac_digest
from tpmseal.errors import BadInputError, DecodeError, UsageError
from tpmseal.recipes import pcrspec
from tpmseal.records import field, record
from tpmseal.session import salt
from tpmseal.wire.marshal import Reader, parse_exact, tpm2b
from tpmseal.wire.structures import PcrSelectionList, Public

FORMAT = "tpmseal-sealed/1"


def _now() -> str:
    """The current UTC time, to the second (datetime is imported only to seal)."""
    from datetime import datetime, timezone
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


ENCRYPTED = "aes-128-cfb"
LEGACY = "legacy"


@record
class SaltKey:
    """The key a session salt is encrypted to (normally the EK), as pinned."""

    handle: int
    public: Public

    @property
    def name(self) -> bytes:
        return self.public.name()


@record
class SealedBlob:
    """A sealed object plus what is needed to unseal it and to explain failures."""

    public: Public
    private: bytes  # TPM2B_PRIVATE contents (no size prefix)
    pcrs: PcrSelectionList
    pcr_values: dict[tuple[int, int], bytes]
    parent_handle: int
    parent_name: bytes
    salt_key: SaltKey | None
    sealed_with: str
    pin: bool = False
    check: bytes | None = None
    created: str = field(default_factory=_now)

    @property
    def policy_digest(self) -> bytes:
        return self.public.auth_policy

    @property
    def name(self) -> bytes:
        """The sealed object's Name."""
        return self.public.name()

    def to_json(self) -> str:
        values: dict[str, dict[str, str]] = {}
        for (bank, i), v in sorted(self.pcr_values.items()):
            values.setdefault(pcrspec.bank_name(bank), {})[str(i)] = v.hex()
        doc: dict[str, Any] = {
            "format": FORMAT,
            "public": base64.b64encode(self.public.sized()).decode(),
            "private": base64.b64encode(tpm2b(self.private)).decode(),
            "pcrs": pcrspec.to_dict(self.pcrs),
            "pcr_values": values,
            "policy_digest": self.policy_digest.hex(),
            "parent": {"handle": f"{self.parent_handle:#010x}", "name": self.parent_name.hex()},
            "salt_key": None if self.salt_key is None else {
                "handle": f"{self.salt_key.handle:#010x}",
                "name": self.salt_key.name.hex(),
                "public": base64.b64encode(self.salt_key.public.sized()).decode()},
            "sealed_with": self.sealed_with,
            "pin": self.pin,
            "check": None if self.check is None else self.check.hex(),
            "created": self.created,
        }
        return json.dumps(doc, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes, where: str = "blob") -> SealedBlob:
        """Parse and validate a blob file; every problem is a one-line BadInputError."""
        doc = safejson.loads(text, f"{where} is not a tpmseal blob",
                             "pass the JSON file written by `tpmseal seal --output`")
        if not isinstance(doc, dict):
            raise BadInputError(f"{where} is not a tpmseal blob: JSON is not an object",
                                "pass the JSON file written by `tpmseal seal --output`")
        fmt = doc.get("format")
        if fmt is None:
            raise BadInputError(f"{where} is not a tpmseal blob (it has no format field)",
                                "pass the JSON file written by `tpmseal seal --output`")
        if fmt != FORMAT:
            raise BadInputError(f"{where} has format {fmt!r}, this tpmseal reads {FORMAT!r}",
                                "upgrade tpmseal or re-seal the secret")
        try:
            return _parse(doc)
        except BadInputError as e:
            raise BadInputError(f"{where}: {e.message}", e.hint) from None
        except DecodeError as e:
            raise BadInputError(f"{where}: a TPM structure is malformed: {e.message}",
                                "the file is truncated or corrupted") from None
        except (KeyError, TypeError, ValueError, binascii.Error, AttributeError, UsageError,
                IndexError, OverflowError) as e:
            what = f"missing field {e}" if isinstance(e, KeyError) else f"{type(e).__name__}: {e}"
            raise BadInputError(f"{where} is malformed ({what})",
                                "the file is truncated or corrupted; restore it") from None


def _b64(doc: dict[str, Any], key: str) -> bytes:
    try:
        return base64.b64decode(doc[key], validate=True)
    except binascii.Error:
        raise BadInputError(f"field {key!r} is not valid base64",
                            "the file is truncated or corrupted; restore it") from None


def handle_field(text: Any, what: str) -> int:
    """A TPM handle written as hex: 32 bits (Part 2 §7.1), else :class:`BadInputError`."""
    value = int(text, 16) if isinstance(text, str) and len(text) <= 12 else -1
    if not 0 <= value <= 0xFFFFFFFF:
        raise BadInputError(f"{what} handle {str(text)[:20]!r} is not a 32-bit handle",
                            "the file is corrupted or edited; restore it")
    return value


def check_salt_key(pub: Public, what: str) -> None:
    """A salt key read from a file must be one a session can be salted to."""
    problem = salt.key_problem(pub)
    if problem is not None:
        raise BadInputError(f"{what} cannot salt a session: {problem}",
                            "the file is corrupted or edited; restore it or re-run provision")


def _parse(doc: dict[str, Any]) -> SealedBlob:
    public = Public.from_sized(_b64(doc, "public"))
    private = parse_exact(_b64(doc, "private"), lambda r: Reader.tpm2b(r, "TPM2B_PRIVATE"),
                          "TPM2B_PRIVATE")
    pcrs = pcrspec.from_dict(doc["pcrs"])
    values: dict[tuple[int, int], bytes] = {}
    for bank, entries in (doc.get("pcr_values") or {}).items():
        for i, v in entries.items():
            values[(pcrspec.bank_alg(bank), int(i))] = bytes.fromhex(v)
    if bytes.fromhex(doc["policy_digest"]) != public.auth_policy:
        raise BadInputError("policy_digest does not match the sealed object's authPolicy",
                            "the file was edited or corrupted; restore it")
    salt_doc = doc.get("salt_key")
    salt_key = None
    if salt_doc is not None:
        salt_pub = Public.from_sized(_b64(salt_doc, "public"))
        check_salt_key(salt_pub, "salt_key")
        salt_key = SaltKey(handle_field(salt_doc["handle"], "salt_key"), salt_pub)
        if bytes.fromhex(salt_doc["name"]) != salt_key.name:
            raise BadInputError("salt_key name does not match its public area",
                                "the file was edited or corrupted; restore it")
    sealed_with = doc["sealed_with"]
    if sealed_with not in (ENCRYPTED, LEGACY):
        raise BadInputError(f"unknown sealed_with {str(sealed_with)[:40]!r}",
                            f"expected {ENCRYPTED!r} or {LEGACY!r}; restore the file")
    check = doc.get("check")
    return SealedBlob(
        public, private, pcrs, values, handle_field(doc["parent"]["handle"], "parent"),
        bytes.fromhex(doc["parent"]["name"]), salt_key, sealed_with, bool(doc.get("pin")),
        None if check is None else bytes.fromhex(check), str(doc.get("created", "")))


def check_value(secret: bytes, name: bytes) -> bytes:
    """HMAC-SHA256 keyed by the secret over the sealed object's Name.

    Lets unseal detect a wrong result (a buggy stack, a tampered response) without
    storing anything that helps an attacker — provided the secret has at least
    128 bits of entropy. For a short passphrase it would allow an offline guessing
    attack, so it is only stored for key-like secrets (see :func:`key_like`).
    """
    return hmac_digest(secret, b"tpmseal-check/1" + name, "sha256")


def key_like(secret: bytes) -> bool:
    """Heuristic: 16+ bytes that are not printable text — a generated key, not a passphrase."""
    if len(secret) < 16:
        return False
    try:
        text = secret.decode("ascii")
    except UnicodeDecodeError:
        return True
    return not text.strip().isprintable()
