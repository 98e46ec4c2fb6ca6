"""The sealed blob file: versioned JSON around the sealed object's public and private parts.

``public`` is base64 of TPM2B_PUBLIC *with* its size prefix and ``private`` of
TPM2B_PRIVATE with its size prefix — byte-identical to tpm2-tools' ``-u`` and
``-r`` files, so either tool can load the other's object. Nothing in the file is
secret: the private part is encrypted under the SRK, which never leaves the TPM.
The rest lets ``unseal`` run with no extra TPM round trips (salt key public area
and handle, the PCR selection and the values they had at seal time) and explain
a failure (which PCRs changed).

Format 2 adds a ``policy`` field for policies beyond one PolicyPCR: the
``states`` of a PolicyOR (each a ``pcr_values``-like map; ``pcr_values`` is the
first) or the ``authorizer`` of a signed policy (its LoadExternal public area
and policyRef). Blobs without one are written as format 1, as before.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from tpmseal import safejson
from tpmseal.digests import hmac_digest
from tpmseal.errors import BadInputError, DecodeError, UsageError
from tpmseal.files import read_input
from tpmseal.recipes import pcrspec
from tpmseal.recipes.policies import PcrValues, SealPolicy
from tpmseal.records import field, record, replace
from tpmseal.session import salt
from tpmseal.session.policy import MAX_BRANCHES, Authorizer, Policy
from tpmseal.wire.marshal import Reader, parse_exact, tpm2b
from tpmseal.wire.structures import PcrSelectionList, Public

FORMAT = "tpmseal-sealed/1"


def _now() -> str:
    """The current UTC time, to the second (datetime is imported only to seal)."""
    from datetime import datetime, timezone
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


FORMAT_2 = "tpmseal-sealed/2"


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
    states: tuple[PcrValues, ...] = ()  # PolicyOR branches (2 to 8); pcr_values is the first
    authorizer: Authorizer | None = None
    revocation_nv: int | None = None  # signed policies must be gated by this NV counter

    @property
    def sealed_policy(self) -> SealPolicy:
        """What the secret is sealed to (recipes/policies.py); without seal-time values
        (EVE's NV layout with no record) that is "the current values of its PCRs"."""
        return SealPolicy(self.pcrs, self.states or ((self.pcr_values,) if self.pcr_values
                                                     else ()),
                          self.authorizer, self.revocation_nv, self.pin)

    def policy(self) -> Policy:
        """The authPolicy as steps (session/policy.py); needs seal-time values or a signer."""
        return self.sealed_policy.session_policy()

    @property
    def policy_digest(self) -> bytes:
        return self.public.auth_policy

    @property
    def name(self) -> bytes:
        """The sealed object's Name."""
        return self.public.name()

    def policy_record(self) -> dict[str, Any]:
        """What the blob records beyond the object and its keys: the policy and the check
        value. Also what the trust file records for an object in EVE's NV layout, which
        has no room for it (recipes/stores.py); read back with :meth:`with_record`."""
        doc: dict[str, Any] = {
            "pcrs": pcrspec.to_dict(self.pcrs),
            "pcr_values": values_to_dict(self.pcr_values),
            "pin": self.pin,
            "check": None if self.check is None else self.check.hex(),
        }
        if self.states or self.authorizer:
            doc["policy"] = {
                "states": [values_to_dict(v) for v in self.states],
                "authorizer": None if self.authorizer is None else {
                    "public": base64.b64encode(self.authorizer.key.sized()).decode(),
                    "name": self.authorizer.name.hex(),
                    "policy_ref": self.authorizer.policy_ref.hex()},
                "revocation_nv": None if self.revocation_nv is None
                else f"{self.revocation_nv:#010x}"}
        return doc

    def with_record(self, doc: Any, where: str) -> SealedBlob:
        """This object with the policy and check value of *doc* (:meth:`policy_record`).

        *doc* is only as trustworthy as the file it came from: it must give the
        object's own authPolicy (else :class:`BadInputError`), and the TPM's policy
        check still decides; a wrong record can only make the unseal fail.
        """
        try:
            if not isinstance(doc, dict):
                raise TypeError("not a JSON object")
            out = _with_policy(self, doc)
        except BadInputError as e:
            raise BadInputError(f"{where}: {e.message}", e.hint) from None
        except (KeyError, TypeError, ValueError, binascii.Error, AttributeError, UsageError,
                IndexError, OverflowError, DecodeError) as e:
            raise BadInputError(f"{where} is malformed ({type(e).__name__}: {e})",
                                "restore it, or unseal with the options it was sealed "
                                "with") from None
        if (out.states or out.authorizer or out.pcr_values) and \
                out.sealed_policy.digest() != self.policy_digest:
            raise BadInputError(f"{where} does not give the sealed object's authPolicy",
                                "it was edited or belongs to another object: restore it")
        return out

    def to_json(self) -> str:
        doc: dict[str, Any] = {
            "format": FORMAT if not (self.states or self.authorizer) else FORMAT_2,
            "public": base64.b64encode(self.public.sized()).decode(),
            "private": base64.b64encode(tpm2b(self.private)).decode(),
            "pcrs": None,
            "pcr_values": None,
            "policy_digest": self.policy_digest.hex(),
            "parent": {"handle": f"{self.parent_handle:#010x}", "name": self.parent_name.hex()},
            "salt_key": None if self.salt_key is None else {
                "handle": f"{self.salt_key.handle:#010x}",
                "name": self.salt_key.name.hex(),
                "public": base64.b64encode(self.salt_key.public.sized()).decode()},
            "sealed_with": self.sealed_with,
            "pin": None,
            "check": None,
            "created": self.created,
        }
        return json.dumps(doc | self.policy_record(), indent=2) + "\n"

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
        if fmt not in (FORMAT, FORMAT_2):
            raise BadInputError(f"{where} has format {fmt!r}, this tpmseal reads {FORMAT!r} "
                                f"and {FORMAT_2!r}",
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


def values_to_dict(values: PcrValues) -> dict[str, dict[str, str]]:
    """PCR values as ``{"sha256": {"7": hex}}`` (also what `pcrs show --json` prints)."""
    out: dict[str, dict[str, str]] = {}
    for (bank, i), v in sorted(values.items()):
        out.setdefault(pcrspec.bank_name(bank), {})[str(i)] = v.hex()
    return out


def values_from_dict(doc: dict[str, Any]) -> PcrValues:
    """The inverse of :func:`values_to_dict`; other top-level keys (e.g. "authenticated")
    are ignored."""
    values: PcrValues = {}
    for bank, entries in doc.items():
        if not isinstance(entries, dict):
            continue
        for i, v in entries.items():
            values[(pcrspec.bank_alg(bank), int(i))] = bytes.fromhex(v)
    return values


VALUES_HINT = "pass the output of `tpmseal pcrs show --json`"


def read_values_file(path: str) -> PcrValues:
    """PCR values from a `pcrs show --json` file (its "authenticated" key is ignored)."""
    try:
        doc = safejson.loads(read_input(path, "PCR values", limit=1 << 16),
                             f"{path} is not a PCR values file", VALUES_HINT)
        if not isinstance(doc, dict):
            raise TypeError("not a JSON object")
        return values_from_dict(doc)
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError,
            AttributeError, UsageError) as e:
        msg = e.one_line() if isinstance(e, UsageError) else str(e)
        raise BadInputError(f"{path} is not a PCR values file ({msg})", VALUES_HINT) from None


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
    bare = SealedBlob(public, private, PcrSelectionList(), {},
                      handle_field(doc["parent"]["handle"], "parent"),
                      bytes.fromhex(doc["parent"]["name"]), salt_key, sealed_with,
                      created=str(doc.get("created", "")))
    return _with_policy(bare, doc)


def _with_policy(blob: SealedBlob, doc: dict[str, Any]) -> SealedBlob:
    """*blob* with the policy fields of *doc* (a blob file, or an NV record)."""
    pcrs = pcrspec.from_dict(doc["pcrs"])
    values = values_from_dict(doc.get("pcr_values") or {})
    check = doc.get("check")
    pol = doc.get("policy") or {}
    states = tuple(values_from_dict(v) for v in pol.get("states") or ())
    if states and (not 2 <= len(states) <= MAX_BRANCHES or states[0] != values
                   or any(set(v) != set(pcrs.pairs()) for v in states)):
        raise BadInputError("policy states do not match pcrs and pcr_values",
                            "the file was edited or corrupted; restore it")
    authorizer = None
    if pol.get("authorizer") is not None:
        a = pol["authorizer"]
        authorizer = Authorizer(Public.from_sized(_b64(a, "public")),
                                bytes.fromhex(a.get("policy_ref", "")))
        if bytes.fromhex(a["name"]) != authorizer.name:
            raise BadInputError("authorizer name does not match its public area",
                                "the file was edited or corrupted; restore it")
    nv = pol.get("revocation_nv")
    if nv is not None:
        from tpmseal.recipes.revocation import revocation_ref  # signed policies only

        if authorizer is None or authorizer.policy_ref != revocation_ref(int(nv, 16)):
            raise BadInputError("revocation_nv does not match the authorizer's policy_ref",
                                "the file was edited or corrupted; restore it")
    out = replace(blob, pcrs=pcrs, pcr_values=values, pin=bool(doc.get("pin")),
                  check=None if check is None else bytes.fromhex(check), states=states,
                  authorizer=authorizer, revocation_nv=None if nv is None else int(nv, 16))
    _ = out.sealed_policy  # states and a signer together: UsageError, reported as malformed
    return out


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
