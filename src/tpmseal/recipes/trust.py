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
overrules. ``nv_public`` keeps the public areas (TPMS_NV_PUBLIC) of the layout's
main pair as tpmseal last left them, so reading the pair needs no NV_ReadPublic:
a hint about sizes, not a pin (stores.py says why nothing rests on it).

Several TPMs share one trust file (a simulator next to the board's TPM, a second
TPM, a replaced board): records are keyed by the salt key's Name, one per
profile, each with the TPM *addresses* it was provisioned at (canonical TPM
URIs: :func:`address`). Which record a flow uses is never decided by anything
read over the bus, since an interposer could then present the EK of another
pinned TPM whose private key it knows (a software simulator's state directory)
and redirect the salt there (docs/SECURITY.md). :func:`select` picks, in order:
the record whose salt key a blob file names (unseal; the file is not from the
bus), the record provisioned at the address the caller opened, the profile's
only record; anything else is ambiguous and a usage error listing the
candidates. ``provision`` refuses a new EK at an address a record holds (or,
for a record written before addresses were recorded, at any address) unless
``--repin``, and adds an address to the record whose EK it finds there.

Format (JSON, not secret, written atomically)::

    {"format": "tpmseal-trust/2",
     "tpms": {EK_NAME_HEX: {"profiles": {"tcg": {
                  "addresses": ["unix:/run/swtpm/tpm.sock", "device:/dev/tpmrm0"],
                  "ek": {"handle": "0x81010001", "name": EK_NAME_HEX, "public": B64},
                  "srk": {"handle": "0x81000001", "name": HEX},
                  "aes_128_cfb": true, "ek_certificate": "verified"|"not checked",
                  "nv_sealed": [HEX, ...],  (profiles with an NV layout)
                  "nv_records": {HEX: {...}},  (optional, per pinned Name)
                  "nv_public": {"0x01800000": HEX, ...},  (optional: TPMS_NV_PUBLIC)
                  "updated": ISO-8601}}}}}

Format 1 (``"profiles": {"tcg": {RECORD}}``, one record per profile) is what a
file holding one TPM per profile is still written as, with the addresses in each
record: tpmseal before format 2 reads it (it ignores ``addresses``), so rolling
tpmseal back keeps unsealing. Once a profile has records for two TPMs the file
is rewritten as format 2, which older tpmseal refuses (exit 7) rather than
misreads. A format 1 record without ``addresses`` (written before format 2) has
no recorded address.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

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
from tpmseal.wire.marshal import parse_exact
from tpmseal.wire.rc import TpmResponseError
from tpmseal.wire.structures import Public

if TYPE_CHECKING:  # wire/structures_cold.py: loaded on use
    from tpmseal.wire.structures import NvPublic

FORMAT = "tpmseal-trust/2"
#: one record per profile: still written while it can hold the file (rollback)
FORMAT_1 = "tpmseal-trust/1"
DEFAULT_PATH = "/var/lib/tpmseal/trust.json"
#: a trust file is a few kB per record; anything past this is not one
MAX_TRUST_FILE = 256 * 1024
_REPAIR = "restore it from a backup, or re-pin with `tpmseal provision --repin`"

__all__ = ["EK_MISMATCH", "TrustRecord", "address", "address_of", "find", "load", "load_all",
           "name_file", "naming", "pinned_at", "refuse_new_ek", "required", "salted_session",
           "save", "select", "start_salted", "trust_path"]


def trust_path(explicit: str | None = None) -> str:
    """--trust-file, else $TPMSEAL_TRUST_FILE, else /var/lib/tpmseal/trust.json."""
    return explicit or os.environ.get("TPMSEAL_TRUST_FILE") or DEFAULT_PATH


def address(uri: str) -> str:
    """The canonical form of a TPM URI, as records hold it: ``device:``/``unix:`` with an
    absolute path (``/dev/tpmN`` as ``/dev/tpmrmN``, the same chip), ``sim:DIR`` as its
    socket ``unix:DIR/tpm.sock``, ``mssim:`` and TCTI forms as ``tcp:HOST:PORT``. A URI
    that does not parse is kept as it is (opening it reports the problem). The caller
    names the address: nothing here comes from the bus.
    """
    from tpmseal.transport.base import parse_uri

    try:
        u = parse_uri(uri)
    except UsageError:
        return uri
    if u.scheme in ("tcp", "mssim"):
        return f"tcp:{u.host}:{u.port}"
    path = os.path.abspath(u.path)
    if u.scheme == "sim":
        return f"unix:{os.path.join(path, 'tpm.sock')}"
    head, tail = os.path.split(path)
    if u.scheme == "device" and tail.startswith("tpm") and tail[3:].isdigit():
        path = os.path.join(head, f"tpmrm{tail[3:]}")  # the same chip as its resource manager
    return f"{u.scheme}:{path}"


def address_of(tpm: Tpm) -> str:
    """The canonical address of the TPM *tpm* was opened on (its transport's URI)."""
    return address(tpm.transport.uri)


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
    #: the public areas of the NV layout's main pair as tpmseal last wrote them, by
    #: index: lets a read skip NV_ReadPublic (a hint, never trusted: recipes/stores.py)
    nv_public: dict[int, NvPublic] = field(default_factory=dict)
    #: canonical TPM URIs this record was provisioned at (:func:`address`); none for a
    #: record written before they were recorded
    addresses: tuple[str, ...] = ()
    #: the trust file this record was read from (not part of it)
    path: str | None = field(default=None, repr=False)

    @property
    def ek_name(self) -> bytes:
        return self.ek_public.name()

    def describe(self) -> str:
        """EK Name prefix and addresses, for messages."""
        at = ", ".join(self.addresses) or "no recorded address"
        return f"EK {self.ek_name.hex()[:16]}... at {at}"

    def to_json(self) -> dict[str, Any]:
        from datetime import datetime, timezone  # only to save a record
        extra: dict[str, Any] = {"nv_sealed": [n.hex() for n in self.nv_sealed]} \
            if self.nv_sealed else {}
        if self.nv_records:
            extra["nv_records"] = self.nv_records
        if self.nv_public:
            extra["nv_public"] = {f"{i:#010x}": p.marshal().hex()
                                  for i, p in sorted(self.nv_public.items())}
        return {"addresses": list(self.addresses)} | extra | {
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
            addresses = d.get("addresses", [])
            if not isinstance(addresses, list) or not all(isinstance(a, str)
                                                          for a in addresses):
                raise ValueError("addresses is not a list of strings")
            rec = cls(profile, handle_field(d["ek"]["handle"], f"trust file {where}: EK"), pub,
                      handle_field(d["srk"]["handle"], f"trust file {where}: SRK"),
                      bytes.fromhex(d["srk"]["name"]), bool(d["aes_128_cfb"]),
                      str(d.get("ek_certificate", "not checked")), str(d.get("updated", "")),
                      tuple(bytes.fromhex(n) for n in d.get("nv_sealed", [])),
                      dict(d.get("nv_records") or {}), _nv_public(d.get("nv_public") or {}),
                      tuple(addresses), where)
            name = bytes.fromhex(d["ek"]["name"])
        except (KeyError, TypeError, ValueError, binascii.Error, DecodeError, AttributeError,
                IndexError) as e:
            raise BadInputError(f"trust file {where} is malformed ({type(e).__name__}: {e})",
                                _REPAIR) from None
        if name != rec.ek_name:
            raise BadInputError(f"trust file {where}: EK name does not match its public area",
                                "the file was edited or corrupted; re-run `tpmseal provision`")
        return rec


def _nv_public(d: dict[str, str]) -> dict[int, NvPublic]:
    """The ``nv_public`` hints: TPMS_NV_PUBLIC hex by index; each must describe its index."""
    out: dict[int, NvPublic] = {}
    if not d:  # most trust files pin no NV index: leave wire/structures_cold.py unloaded
        return out
    from tpmseal.wire.structures import NvPublic

    for key, value in d.items():
        pub = parse_exact(bytes.fromhex(value), NvPublic.unmarshal, "TPMS_NV_PUBLIC")
        if pub.nv_index != int(key, 16):
            raise ValueError(f"nv_public {key} describes NV {pub.nv_index:#x}")
        out[pub.nv_index] = pub
    return out


def _object(value: Any, what: str, path: str | os.PathLike[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadInputError(f"trust file {path}: {what} is not a JSON object", _REPAIR)
    return value


def load_all(path: str | os.PathLike[str]) -> list[TrustRecord]:
    """Every record in the trust file (format 2, or 1: one record per profile); empty if
    the file does not exist."""
    raw = read_capped(path, "trust file", MAX_TRUST_FILE)
    if raw is None:
        return []
    doc = safejson.loads(raw, f"trust file {path} is malformed",
                         "restore it or re-run `tpmseal provision`")
    fmt = doc.get("format") if isinstance(doc, dict) else None
    if fmt == FORMAT_1:
        profiles = _object(doc.get("profiles"), "profiles", path)
        return [TrustRecord.from_json(name, _object(rec, f"profile {name[:40]!r}", path),
                                      str(path)) for name, rec in profiles.items()]
    if fmt != FORMAT:
        raise BadInputError(f"trust file {path} has an unknown format {str(fmt)[:40]!r}",
                            f"pass a {FORMAT!r} file written by `tpmseal provision`")
    records = []
    for key, entry in _object(doc.get("tpms"), "tpms", path).items():
        profiles = _object(_object(entry, f"TPM {key[:20]!r}", path).get("profiles"),
                           f"TPM {key[:20]!r}: profiles", path)
        for name, rec in profiles.items():
            r = TrustRecord.from_json(name, _object(rec, f"profile {name[:40]!r}", path),
                                      str(path))
            if r.ek_name.hex() != key:
                raise BadInputError(f"trust file {path}: the record under {key[:20]!r} is for "
                                    "another EK", _REPAIR)
            records.append(r)
    return records


def _at(records: list[TrustRecord], where: str | None) -> TrustRecord | None:
    return next((r for r in records if where is not None and where in r.addresses), None)


def select(records: list[TrustRecord], profile: str, path: str | os.PathLike[str], *,
           address: str | None = None, salt_name: bytes | None = None) -> TrustRecord | None:
    """The record of *profile* a flow at *address* uses; None if the profile has none.

    *salt_name*: the Name of the salt key a blob file records (unseal), which picks the
    record pinning that key. Else the record provisioned at *address*, else the
    profile's only record. Never the bus's word: see the module docstring.
    """
    mine = [r for r in records if r.profile == profile]
    here = _at(mine, address)
    if salt_name is not None:
        sealed_on = next((r for r in mine if r.ek_name == salt_name), None)
        if sealed_on is not None:
            if here is not None and here is not sealed_on:
                raise BadInputError(
                    f"the blob was sealed on the TPM pinned as {sealed_on.describe()} in trust "
                    f"file {path}, not on the one at {address} ({here.describe()})",
                    "unseal it on the TPM it was sealed on (--tpm), or restore the blob "
                    "sealed on this one")
            return sealed_on
    if here is not None:
        return here
    if len(mine) <= 1:
        return mine[0] if mine else None
    raise UsageError(
        f"trust file {path} pins {len(mine)} TPMs for profile {profile} and none at "
        f"{address or 'an unnamed address'}: " + "; ".join(r.describe() for r in mine),
        "pass --tpm with the address of the one you mean (an address listed), or run "
        "`tpmseal provision` at this address to pin this TPM")


def find(path: str | os.PathLike[str], profile: str, *, address: str | None = None,
         salt_name: bytes | None = None) -> TrustRecord | None:
    """:func:`select` over the trust file at *path*."""
    return select(load_all(path), profile, path, address=address, salt_name=salt_name)


def load(path: str | os.PathLike[str], profile: str, *, address: str | None = None,
         salt_name: bytes | None = None) -> TrustRecord:
    """Like :func:`find`, but :class:`NotFoundError` saying to provision if there is none."""
    return required(find(path, profile, address=address, salt_name=salt_name), path, profile)


def required(rec: TrustRecord | None, path: str | os.PathLike[str], profile: str) -> TrustRecord:
    """*rec*, or :class:`NotFoundError` saying to provision *profile*."""
    if rec is None:
        raise NotFoundError(f"no trusted endorsement key for profile {profile!r} in trust "
                            f"file {path}",
                            f"run `tpmseal provision --profile {profile}` first (it pins the "
                            "TPM's keys), or pass the right --trust-file")
    return rec


def pinned_at(records: list[TrustRecord], profile: str,
              where: str | None) -> TrustRecord | None:
    """The record ``provision`` at *where* must find the same EK in: the one provisioned
    there, else one without addresses (written before they were recorded: it may be at
    any address)."""
    mine = [r for r in records if r.profile == profile]
    return _at(mine, where) or next((r for r in mine if not r.addresses), None)


def refuse_new_ek(pinned: TrustRecord | None, ek_name: bytes, path: str | os.PathLike[str],
                  where: str | None) -> None:
    """:class:`TrustError` if *pinned* (see :func:`pinned_at`) pins another EK than the
    one found at *where*."""
    if pinned is None or pinned.ek_name == ek_name:
        return
    recorded = ("pinned for it" if where in pinned.addresses else
                "pinned without an address (a trust file from before per-TPM records)")
    raise TrustError(
        f"{EK_MISMATCH}: the TPM at {where} has EK {ek_name.hex()[:16]}..., trust file {path} "
        f"has EK {pinned.ek_name.hex()[:16]}... {recorded}; nothing was created",
        "if the TPM was really replaced or cleared, re-pin with `tpmseal provision --repin`"
        + ("" if pinned.addresses else "; if it is a second TPM, first run `tpmseal "
           "provision` on the pinned one (it records its address)"))


def save(path: str | os.PathLike[str], record: TrustRecord, *, replace: bool = False) -> None:
    """Add or update *record*, provisioned at ``record.addresses`` (one address).

    A record pinned at that address (or one without addresses) must have the same EK,
    else :class:`TrustError` unless *replace*, which drops it (re-pinning after
    replacing the TPM). A record of the profile with the same EK elsewhere gains the
    address (the same TPM reached another way). With *replace* an unreadable trust
    file is replaced too (re-pinning is the way out of a corrupted one).
    """
    try:
        records = load_all(path)
    except BadInputError:
        if not replace:
            raise
        records = []
    where = record.addresses[0] if record.addresses else None
    pinned = pinned_at(records, record.profile, where)
    if pinned is not None and pinned.ek_name != record.ek_name:
        if not replace:
            refuse_new_ek(pinned, record.ek_name, path, where)
        records.remove(pinned)
    same = next((r for r in records
                 if r.profile == record.profile and r.ek_name == record.ek_name), None)
    if same is not None:
        records.remove(same)
        if not record.nv_sealed:  # a re-provision keeps the pins
            record = _replace(record, nv_sealed=same.nv_sealed, nv_records=same.nv_records,
                              nv_public=same.nv_public)
        record = _replace(record, addresses=tuple(dict.fromkeys(
            (*same.addresses, *record.addresses))))
    _write(path, [*records, record])


def _write(path: str | os.PathLike[str], records: list[TrustRecord]) -> None:
    """Format 1 while every profile has one record (an older tpmseal reads it, ignoring
    the addresses: a rollback keeps unsealing), else format 2."""
    ordered = sorted(records, key=lambda r: (r.ek_name, r.profile))
    doc: dict[str, Any]
    if len({r.profile for r in ordered}) == len(ordered):
        doc = {"format": FORMAT_1, "profiles": {r.profile: r.to_json() for r in ordered}}
    else:
        tpms: dict[str, dict[str, Any]] = {}
        for r in ordered:
            tpms.setdefault(r.ek_name.hex(), {"profiles": {}})["profiles"][r.profile] = \
                r.to_json()
        doc = {"format": FORMAT, "tpms": tpms}
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        write_atomic(path, (json.dumps(doc, indent=2) + "\n").encode(), mode=0o644)
    except PermissionError:
        raise UsageError(f"permission denied writing trust file {path}",
                         "run as root or pass --trust-file PATH") from None
    except OSError as e:
        raise UsageError(f"cannot write trust file {path}: {e.strerror or e}",
                         "pass a writable --trust-file PATH") from None


@contextlib.contextmanager
def naming(path: str | os.PathLike[str]) -> Iterator[None]:
    """Trust problems (:class:`TrustError`) raised in the block name the trust file *path*
    if their message does not already (the layers below know no file)."""
    try:
        yield
    except TrustError as e:
        name_file(e, path)
        raise


def name_file(e: TrustError, path: str | os.PathLike[str]) -> None:
    """Add "(trust file PATH)" to *e*'s message unless it names that file already."""
    if str(path) not in e.message:
        e.message = f"{e.message} (trust file {path})"
        e.args = (e.message,)


def pin_sealed(record: TrustRecord, names: tuple[bytes, ...],
               policies: dict[str, Any] | None = None,
               publics: dict[int, NvPublic] | None = None) -> TrustRecord:
    """Record *names* as the sealed objects of the profile's NV layout, with the policy
    records in *policies* (by Name in hex) added; records of other Names are dropped.
    *publics* replaces the ``nv_public`` hints (None keeps them). Returns the record."""
    if record.path is None:
        raise UsageError("this trust record was not read from a trust file",
                         "load it with trust.load() to pin sealed objects")
    kept = {n.hex(): r for n in names
            if (r := (policies or {}).get(n.hex(), record.nv_records.get(n.hex()))) is not None}
    publics = record.nv_public if publics is None else publics
    if names == record.nv_sealed and kept == record.nv_records and \
            publics == record.nv_public:
        return record
    records = load_all(record.path)
    old = next((r for r in records
                if (r.profile, r.ek_name) == (record.profile, record.ek_name)), None)
    updated = _replace(old or record, nv_sealed=names, nv_records=kept, nv_public=publics,
                       updated="", path=record.path)
    _write(record.path, [r for r in records if r is not old] + [updated])
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
