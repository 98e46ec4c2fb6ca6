"""Where sealed blobs live — a JSON file or EVE's NV indices — and crash-safe replacement.

Both stores give the same guarantee to ``reseal``: at every instant a crash
leaves at least one complete copy that unseals (the old or the new).

* :class:`FileStore`: unnamed temp file, fsync, link or rename
  (:func:`tpmseal.files.write_atomic`); a new blob is created exclusively.
* :class:`NvStore`: EVE's layout has no metadata — TPM2B_PRIVATE contents in
  one ordinary owner-read/write index, TPMT_PUBLIC bytes (TPM2B_PUBLIC contents)
  in another, no size prefixes. Replacing it in place always has a moment with
  no complete pair, so the new pair is first written to *staging* indices, then
  the main pair is rewritten (in place when the sizes match, private first as
  EVE writes it), then staging is removed. Readers try the main pair first and
  fall back to staging. Which indices exist comes from one GetCapability
  listing (in an EK-salted audit session when a key is pinned), not from a
  probe per index; part of a pair and no complete one is a *torn* layout
  (:class:`~tpmseal.errors.TornStoreError`), never taken for an empty one.
  Whether a reseal stages its new pair first follows from where the copy that
  unsealed was read, never from a re-read an interposer could answer with "no
  such index".

  The layout is open to anyone on the bus (owner authorization is empty), and so
  is the SRK: an interposer can store an object of its own, sealed to the current
  PCRs, and every HMAC would verify. So the store only yields objects whose Name
  the trust file pins (``nv_sealed``, recipes/trust.py); it pins the new Name
  before a save writes anything and drops the old one after, and pins on first
  use an object found on a device whose trust file has no pin yet (docs/SECURITY.md).

  What a blob file records beyond the object (its policy: PolicyOR states, the
  signer, the PIN flag, the check value) has no room in EVE's layout, so a save
  records it in the trust file next to the pinned Name (``nv_records``) and the
  store reads it back for that Name: ``unseal --nv`` of a signed or PolicyOR
  secret needs no extra options, and PCRs the caller names that are not the
  record's are refused (:class:`UsageError`), not silently overridden. The record
  is a local file, not an HMAC-verified answer, so it is treated as input that can
  be wrong: it must give the object's own authPolicy (which the pinned Name
  covers), and the TPM's policy check at Unseal still decides; a tampered record
  can make an unseal fail, never succeed where the object's policy would not.

  Reading a pair costs NV_ReadPublic (size, "written") and NV_Read per index.
  The trust record also keeps the main pair's public areas as the last save left
  them (``nv_public``), and with them the pair is read with two NV_Reads. That
  gives up nothing: NV_ReadPublic's answer carries no HMAC, and the NV_Reads are
  authorized by the owner's empty password, so no HMAC covers the index Name
  either way; what authenticates the content is the pinned object Name, the
  SRK's integrity check of the private part at Load and the salted policy
  session at Unseal. The hint is never taken for the layout's state: a pair that
  does not read with it (an error answer, a part that does not parse, a Name
  that is not pinned, or a copy that then does not unseal) is read again the
  ordinary way, so a stale hint (the index redefined) costs two commands and
  absence is still concluded only from plain reads, confirmed by the audited
  listing. An ordinary read of the main pair that differs from the hint updates it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Collection, Iterator, Sequence
from itertools import chain
from typing import TYPE_CHECKING, Protocol

from tpmseal.client.tpm import Tpm
from tpmseal.errors import (
    BUS_HINT,
    DecodeError,
    IntegrityError,
    NotFoundError,
    TornStoreError,
    UsageError,
)
from tpmseal.files import read_capped, write_atomic
from tpmseal.log import get_logger
from tpmseal.recipes.blob import ENCRYPTED, LEGACY, SaltKey, SealedBlob
from tpmseal.recipes.pcrspec import format_pcrs
from tpmseal.recipes.profiles import PROFILES, NvLayout, Profile
from tpmseal.recipes.trust import TrustRecord, pin_sealed, salted_session
from tpmseal.records import field, mutable_record, record
from tpmseal.session.auth import AuthSession
from tpmseal.wire import commands as cmds
from tpmseal.wire.constants import TPM_ALG, TPM_RH, TPMA_NV, TPMA_SESSION
from tpmseal.wire.rc import TpmResponseError
from tpmseal.wire.structures import PcrSelectionList, Public

if TYPE_CHECKING:  # wire/structures_cold.py: loaded on use
    from tpmseal.wire.structures import NvPublic

log = get_logger("tpmseal.store")

#: EVE's NV attributes: an ordinary index the owner may read and write (Part 2 §13.4).
NV_ATTRS = TPMA_NV.OWNERWRITE | TPMA_NV.OWNERREAD
#: a blob file is about 3 kB (RSA-4096 salt key included); anything past this is not one
MAX_BLOB_FILE = 64 * 1024
#: TPMA_NV bits 4..7: the index type (TPM_NT), 0 for an ordinary index
NT_MASK = 0xF0


class Store(Protocol):
    """A place holding sealed blobs."""

    def describe(self) -> str: ...

    def candidates(self, tpm: Tpm) -> Iterator[SealedBlob]:
        """Blobs to try, best first, read from the TPM only as the caller asks for them."""
        ...

    def save(self, tpm: Tpm, blob: SealedBlob, keep: SealedBlob | None = None, *,
             exclusive: bool = False) -> None:
        """Replace what is stored with *blob* without a moment of having no copy.

        *keep* is the stored copy known to unseal (a reseal's source): it stays in
        place until *blob* is complete elsewhere. With *exclusive* the store was
        found empty: a file store then creates the file exclusively, so that a
        concurrent writer's blob is never replaced (:class:`UsageError` instead).
        """
        ...

    def unsealed(self, blob: SealedBlob) -> None:
        """Called after *blob*, one of :meth:`candidates`, unsealed."""
        ...


@record
class FileStore:
    path: str | os.PathLike[str]

    def describe(self) -> str:
        return str(self.path)

    def read(self) -> SealedBlob | None:
        """The blob in the file; None if there is none (a file needs no TPM to read)."""
        if os.path.exists(self.path) and not os.path.isfile(self.path):
            raise UsageError(f"{self.path} is not a regular file",
                             "a sealed blob is a JSON file: name a file path")
        text = read_capped(self.path, "blob", MAX_BLOB_FILE)
        return None if text is None else SealedBlob.from_json(text, str(self.path))

    def candidates(self, tpm: Tpm) -> Iterator[SealedBlob]:
        blob = self.read()
        if blob is not None:
            yield blob

    def save(self, tpm: Tpm, blob: SealedBlob, keep: SealedBlob | None = None, *,
             exclusive: bool = False) -> None:
        write_atomic(self.path, blob.to_json().encode(), mode=0o600, exclusive=exclusive)

    def unsealed(self, blob: SealedBlob) -> None:
        """A blob file pins nothing: it carries its object (docs/SECURITY.md)."""


# ----------------------------------------------------------------------------- NV


def nv_public(tpm: Tpm, index: int) -> NvPublic | None:
    """NV_ReadPublic, or None if the index is not defined."""
    try:
        return tpm.nv_read_public(index)
    except TpmResponseError as e:
        if e.name == "HANDLE":
            return None
        raise


def nv_undefine(tpm: Tpm, index: int) -> None:
    """Remove an index; nothing happens if it does not exist."""
    try:
        tpm.run(cmds.NV_UndefineSpace(TPM_RH.OWNER, index))
    except TpmResponseError as e:
        if e.name != "HANDLE":
            raise


def nv_define_write(tpm: Tpm, index: int, data: bytes) -> NvPublic:
    """Define an ordinary owner read/write index of exactly len(data) bytes and fill it;
    returns its public area."""
    from tpmseal.wire.structures import NvPublic

    pub = NvPublic(index, TPM_ALG.SHA256, NV_ATTRS, b"", len(data))
    tpm.run(cmds.NV_DefineSpace(TPM_RH.OWNER, b"", pub))
    tpm.nv_write(index, data)
    return pub.written()


@record
class NvListing:
    """Which indices of a layout exist, with their public areas.

    *authenticated*: learned from a GetCapability listing and NV_ReadPublic in an
    EK-salted audit session (response HMACs cover them), not from error answers.
    """

    pubs: dict[int, NvPublic]
    authenticated: bool

    def written(self, index: int) -> bool:
        p = self.pubs.get(index)
        return p is not None and bool(p.attributes & TPMA_NV.WRITTEN)

    def complete(self, private: int, public: int) -> bool:
        return self.written(private) and self.written(public)


def nv_listing(tpm: Tpm, indices: Sequence[int], trust: TrustRecord | None,
               session: AuthSession | None = None,
               audited: Collection[int] = ()) -> NvListing:
    """The public areas of those *indices* that exist: their existence authenticated
    (through *session*, or a new EK-salted one) when there is a pinned key, with
    the public areas of *audited* HMAC-checked too; else from plain answers."""
    if trust is not None:
        return NvListing(authenticated_nv(tpm, trust, list(indices), session, audited), True)
    defined = set(tpm.handles(min(indices))).intersection(indices)
    return NvListing({i: tpm.nv_read_public(i) for i in sorted(defined)}, False)


def _put(tpm: Tpm, listing: NvListing, index: int, data: bytes) -> NvPublic:
    """Make *index* hold exactly *data*: written in place when the index already has
    the right size and attributes (one command), else (re)defined and written.
    Returns the index's public area as it then is (as far as the listing tells)."""
    old = listing.pubs.get(index)
    if old is not None:
        if old.data_size == len(data) and old.attributes & NV_ATTRS == NV_ATTRS and \
                not old.attributes & (TPMA_NV.WRITELOCKED | NT_MASK):
            tpm.nv_write(index, data)
            return old.written()
        nv_undefine(tpm, index)
    return nv_define_write(tpm, index, data)


@mutable_record
class NvStore:
    """EVE's NV layout. It has no metadata: the policy of an object tpmseal stored
    comes from its record in the trust file; for another object (sealed by EVE, or
    before records) the caller says which PCRs it was sealed to (*pcrs*) and whether
    it needs a PIN. *accept_any*: take whatever object is stored and pin it (after
    other software, e.g. EVE, re-sealed it).

    *pcrs_option*: the option the caller named *pcrs* with (None: *pcrs* is the
    profile's default). A copy whose record gives other PCRs than named ones is
    refused (:meth:`candidates`), not silently preferred to them."""

    layout: NvLayout
    pcrs: PcrSelectionList
    srk: int
    trust: TrustRecord | None
    pin: bool = False
    accept_any: bool = False
    pcrs_option: str | None = None
    #: the index each candidate's private part was read from (by private part)
    _origin: dict[bytes, int] = field(default_factory=dict, repr=False)
    #: the main pair's public areas as an ordinary read found them (by private part),
    #: where they differ from the trust record's hint
    _seen: dict[bytes, dict[int, NvPublic]] = field(default_factory=dict, repr=False)

    @classmethod
    def for_profile(cls, profile: Profile, pcrs: PcrSelectionList | None,
                    trust: TrustRecord | None, pin: bool = False,
                    accept_any: bool = False, pcrs_option: str = "--pcrs") -> NvStore:
        """*pcrs*: the PCRs the caller named (with *pcrs_option*), None for the profile's."""
        if profile.nv is None:
            raise UsageError(f"profile {profile.name!r} has no NV layout",
                             "use --profile eve with --nv, or a blob file")
        return cls(profile.nv, pcrs or profile.default_pcrs,
                   trust.srk_handle if trust else profile.srk, trust, pin, accept_any,
                   pcrs_option if pcrs is not None else None)

    def describe(self) -> str:
        return f"NV {self.layout.private:#x}/{self.layout.public:#x}"

    @property
    def indices(self) -> tuple[int, int, int, int]:
        """The main pair, then the staging pair (private, public each)."""
        lay = self.layout
        return lay.private, lay.public, lay.staging_private, lay.staging_public

    def _pair(self, tpm: Tpm, private: int, public: int) -> SealedBlob | None:
        """The pair read the ordinary way: NV_ReadPublic and NV_Read of each index."""
        parts: dict[int, NvPublic] = {}
        for index in (private, public):  # the public index only if the private one is there
            p = nv_public(tpm, index)
            if p is None or not p.attributes & TPMA_NV.WRITTEN:
                return None
            parts[index] = p
        priv, pub = (tpm.nv_read(i, p.data_size) for i, p in parts.items())
        blob = self._blob(priv, pub, public)
        if blob is not None and private == self.layout.private and self._hint() != parts:
            self._seen[blob.private] = parts
        return blob

    def _hint(self) -> dict[int, NvPublic] | None:
        """The trust record's public areas of the main pair, if it has both."""
        lay, t = self.layout, self.trust
        if t is None or not t.nv_sealed:
            return None
        hint = {i: t.nv_public[i] for i in (lay.private, lay.public) if i in t.nv_public}
        return hint if len(hint) == 2 else None

    def _hinted(self, tpm: Tpm, hint: dict[int, NvPublic]) -> SealedBlob | None:
        """The main pair read with the hint's sizes (two NV_Reads), or None if it does
        not read as the pinned object (any object with *accept_any*) that way (see the
        module docstring)."""
        lay = self.layout
        try:
            blob = self._blob(tpm.nv_read(lay.private, hint[lay.private].data_size),
                              tpm.nv_read(lay.public, hint[lay.public].data_size), lay.public)
        except TpmResponseError as e:
            blob = None
            log.info("NV %#x/%#x did not read as last written (%s): reading its public "
                     "areas", lay.private, lay.public, e.rc.describe())
        if blob is not None and self.trust is not None and (
                self.accept_any or blob.name in self.trust.nv_sealed):
            return blob
        return None

    def _blob(self, priv: bytes, pub: bytes, public: int) -> SealedBlob | None:
        """The blob of a pair's contents; None if NV *public* holds no public area."""
        try:
            public_area = Public.from_bytes(pub)
        except DecodeError as e:
            log.info("NV %#x does not hold a public area: %s", public, e.message)
            return None
        t = self.trust
        salt = SaltKey(t.ek_handle, t.ek_public) if t else None
        sealed_with = ENCRYPTED if t is not None and t.aes_128_cfb else LEGACY
        return SealedBlob(public_area, priv, self.pcrs, {}, self.srk, t.srk_name if t else b"",
                          salt, sealed_with, self.pin)

    def candidates(self, tpm: Tpm) -> Iterator[SealedBlob]:
        """The stored copies, each with the policy its record gives (:meth:`_recorded`).

        A copy whose record gives other PCRs than the caller named is skipped (after a
        reseal was cut, main and staging may hold copies sealed to different PCRs, and
        the named ones choose between them); if every copy is skipped, the first one's
        :class:`UsageError` is raised, before any session starts: named PCRs are never
        silently replaced by a record's.
        """
        refused: UsageError | None = None
        yielded = False
        for blob in self._stored(tpm):
            recorded = self._recorded(blob)
            wrong = self._refuse_named_pcrs(recorded)
            if wrong is None:
                yielded = True
                yield recorded
            elif refused is None:
                refused = wrong
            else:
                log.info("skipping a copy in %s: %s", self.describe(), wrong.one_line())
        if refused is not None and not yielded:
            raise refused

    def _stored(self, tpm: Tpm) -> Iterator[SealedBlob]:
        """The pinned copies as read (no record applied), best first."""
        # staging is read only if the main pair is missing or did not unseal; a main pair
        # read with the hint is read again the ordinary way if it did not unseal
        lay = self.layout
        hint = self._hint()
        fast = self._hinted(tpm, hint) if hint is not None else None
        if fast is not None:
            self._origin[fast.private] = lay.private
            yield fast
        for priv, pub in ((lay.private, lay.public), (lay.staging_private, lay.staging_public)):
            blob = self._pair(tpm, priv, pub)
            if blob is not None and (fast is None or (blob.private, blob.public) !=
                                     (fast.private, fast.public)):
                self._check_pinned(blob, priv, pub)
                self._origin[blob.private] = priv
                yield blob

    def _recorded(self, blob: SealedBlob) -> SealedBlob:
        """*blob* with the policy the trust file records for its Name, if any."""
        t = self.trust
        doc = t.nv_records.get(blob.name.hex()) if t is not None else None
        if doc is None:
            return blob
        return blob.with_record(doc, f"{self._where()}: the record of NV object "
                                     f"{blob.name.hex()[:16]}")

    def _where(self) -> str:
        return f"trust file {self.trust.path if self.trust else ''}"

    def _refuse_named_pcrs(self, recorded: SealedBlob) -> UsageError | None:
        """The refusal of a copy whose record gives other PCRs than the caller named
        (compared as sets of bank and index: the record's order is used), else None.

        A record wins over the profile's default list, never over named PCRs (a copy
        without a record has the named PCRs: :meth:`_blob`).
        """
        option = self.pcrs_option
        if option is None or set(recorded.pcrs.pairs()) == set(self.pcrs.pairs()):
            return None
        asked, says = format_pcrs(self.pcrs), format_pcrs(recorded.pcrs)
        profile = next((f" --profile {p.name}" for p in PROFILES.values()
                        if p.nv == self.layout), "")
        return UsageError(
            f"{option} {asked} is not what NV object {recorded.name.hex()[:16]} is sealed "
            f"to: its record in {self._where()} says {says}; nothing was changed",
            f"drop {option} (the recorded PCRs are used)" + (
                f", or move the secret to {asked} with `tpmseal reseal --nv{profile} "
                f"--pcrs {asked}`" if option == "--pcrs" else ""))

    def _check_pinned(self, blob: SealedBlob, priv: int, pub: int) -> None:
        t = self.trust
        if t is None or not t.nv_sealed or self.accept_any or blob.name in t.nv_sealed:
            return
        raise IntegrityError(
            f"the sealed object in NV {priv:#x}/{pub:#x} is not the one tpmseal sealed: "
            "possible interposer; nothing was changed",
            f"check the TPM bus; if other software (e.g. EVE) re-sealed it, accept it once "
            f"with --accept-sealed-object (its Name is then pinned in {t.path})")

    def unsealed(self, blob: SealedBlob) -> None:
        """Pin on first use: a trust file without a pin (from before pinning, or a device
        EVE sealed) learns the Name of the object that just unsealed."""
        t = self.trust
        if t is None:
            return
        seen = self._seen.get(blob.private)
        if (t.nv_sealed and not self.accept_any) or t.nv_sealed == (blob.name,):
            if seen is not None and t.path is not None:  # the hint is out of date
                with contextlib.suppress(UsageError):  # only a hint: the next read retries
                    self.trust = pin_sealed(t, t.nv_sealed, publics=seen)
            return
        log.warning("pinning the sealed object in %s (Name %s) in %s", self.describe(),
                    blob.name.hex()[:16], t.path)
        try:
            self.trust = pin_sealed(t, (blob.name,), publics=seen)
        except UsageError as e:
            log.warning("could not pin the sealed object: %s", e.one_line())

    def _pin(self, names: tuple[bytes, ...], blob: SealedBlob,
             publics: dict[int, NvPublic] | None = None) -> None:
        """Pin *names*, recording *blob*'s policy for its Name (and *publics*, the main
        pair's public areas, as the read hint)."""
        if self.trust is not None and self.trust.path is not None:
            self.trust = pin_sealed(self.trust, names, {blob.name.hex(): blob.policy_record()},
                                    publics)

    def listing(self, tpm: Tpm, session: AuthSession | None = None,
                also: Sequence[int] = (), *, authenticate: bool = True) -> NvListing:
        """The layout's indices (and *also*, whose public areas are HMAC-checked),
        authenticated when a key is pinned and *authenticate* (an error message
        needs no HMAC-checked listing)."""
        return nv_listing(tpm, [*self.indices, *also], self.trust if authenticate else None,
                          session, also)

    def refuse_torn(self, listing: NvListing) -> None:
        """:class:`TornStoreError` if the layout holds part of a pair and no complete one.

        EVE writes the private index first, so a power cut mid-seal leaves only
        0x1800000; a new key must never replace what that pair sealed (the data
        encrypted under it would be lost): its owner restores it from escrow.
        """
        lay = self.layout
        if listing.complete(lay.private, lay.public) or \
                listing.complete(lay.staging_private, lay.staging_public):
            return
        parts = [i for i in self.indices if i in listing.pubs]
        if parts:
            what = ", ".join(f"{i:#x}{'' if listing.written(i) else ' (never written)'}"
                             for i in parts)
            raise TornStoreError(
                f"{self.describe()} holds an incomplete sealed pair (present: {what}): a seal "
                "was interrupted; nothing was changed",
                "restore the key from its escrow (for EVE, the controller's copy) with "
                "`tpmseal seal --nv --profile eve --input KEY --force` (if nothing was ever "
                "encrypted with it, an interrupted first boot, seal a new key the same way)")

    def refuse_occupied(self, listing: NvListing, *, looked_empty: bool) -> None:
        """Before writing into the layout without --force: refuse if it holds anything.

        *looked_empty*: plain reads had found no pair. "No such index" is an error
        response, and error responses carry no HMAC (Part 1 §18.8), so if the
        authenticated listing then shows a complete pair, someone hid it.
        """
        lay = self.layout
        for priv, pub in ((lay.private, lay.public), (lay.staging_private, lay.staging_public)):
            if listing.complete(priv, pub):
                if looked_empty and listing.authenticated:
                    raise IntegrityError(
                        f"NV {priv:#x}/{pub:#x} holds a sealed secret that could not be read: "
                        "possible interposer hiding it; nothing was changed",
                        "retry and check the TPM bus; if the stored copy is known to be "
                        "corrupt, replace it with `tpmseal seal --nv --force`")
                raise UsageError(f"{self.describe()} already holds a sealed secret",
                                 "use `tpmseal reseal` to change its policy, or --force to "
                                 "replace it (the old secret is then lost)")
        self.refuse_torn(listing)

    def save(self, tpm: Tpm, blob: SealedBlob, keep: SealedBlob | None = None,
             listing: NvListing | None = None, *, exclusive: bool = False) -> None:
        """Store *blob* in the main pair. If the main pair is complete (and holds *keep*),
        *blob* first goes to staging, so that a crash while the main pair is rewritten
        leaves a complete pair (the old main one, or the new staging one); an index of
        the right size is rewritten in place, with no undefine/define.

        Commands: 4 into an empty layout, 8 replacing a pair of the same sizes
        (+2 NV_Read to check *keep*), plus a listing if the caller has none.

        *listing*: the layout as the caller just listed it.
        """
        lay = self.layout
        listing = listing or self.listing(tpm, authenticate=False)  # crash safety only
        priv, pub = blob.private, blob.public.marshal()
        old = self.trust.nv_sealed if self.trust is not None else ()
        self._pin(tuple(dict.fromkeys((*old, blob.name))), blob)  # both, while the pair swaps
        staged = False
        origin = self._origin.get(keep.private) if keep is not None else None
        if origin is not None:
            # where the copy that unsealed was read from - not a re-read, which an
            # interposer could answer with "no such index" to make us skip staging
            stage = origin == lay.private
        else:
            stage = listing.complete(lay.private, lay.public) and (
                keep is None or self._main_holds(tpm, listing, keep))
        if stage:
            # 1. a complete new copy in staging (the main pair is untouched)
            for index in (lay.staging_public, lay.staging_private):
                if index in listing.pubs:
                    nv_undefine(tpm, index)
            nv_define_write(tpm, lay.staging_private, priv)
            nv_define_write(tpm, lay.staging_public, pub)
            staged = True
        # else the main pair is incomplete (nothing stored yet, or an earlier save
        # stopped mid-swap) or is not the copy that unseals: staging may hold the
        # only good copy, so it stays until the main pair is complete again.
        # 2. the main pair, private first as EVE writes it (staging covers the moment
        #    it is incomplete or mixed)
        publics = {lay.private: _put(tpm, listing, lay.private, priv),
                   lay.public: _put(tpm, listing, lay.public, pub)}
        # 3. drop staging
        for index in (lay.staging_public, lay.staging_private):
            if staged or index in listing.pubs:
                nv_undefine(tpm, index)
        self._pin((blob.name,), blob, publics)

    def _main_holds(self, tpm: Tpm, listing: NvListing, keep: SealedBlob) -> bool:
        """Whether the main pair holds *keep* (both halves: a save that stopped between
        its two in-place writes leaves the new private part next to the old public)."""
        lay = self.layout
        return all(tpm.nv_read(i, listing.pubs[i].data_size) == data for i, data in (
            (lay.private, keep.private), (lay.public, keep.public.marshal())))


def authenticated_nv(tpm: Tpm, trust: TrustRecord, indices: list[int],
                     session: AuthSession | None = None,
                     audited: Collection[int] | None = None) -> dict[int, NvPublic]:
    """The public areas of those *indices* that exist, from HMAC-checked responses.

    Absence is learned from a GetCapability listing in an EK-salted audit
    session (its response HMAC covers the list), never from an error. A
    caller's *session* is used (and kept) instead of a new one.

    *audited*: the indices whose public areas must be HMAC-checked too (default:
    all). Each costs two NV_ReadPublic (the first learns the Name the audited
    one's cpHash needs); the others are read once, plainly, for callers that
    only act on them in ways a forged answer cannot turn against the secret,
    except that one read as "never written" is read again audited: that answer
    makes a layout look torn, and the torn-layout error tells the admin a seal
    was interrupted and how to seal a new key over it (attack matrix row 37).
    """
    s = session or salted_session(tpm, trust)
    s.attributes = TPMA_SESSION.continueSession | TPMA_SESSION.audit
    with contextlib.nullcontext() if session else tpm.scoped(s.handle):
        defined = set(tpm.handles(min(indices), s))
        out: dict[int, NvPublic] = {}
        for i in sorted(defined.intersection(indices)):
            try:
                out[i] = tpm.nv_read_public(i, s) if audited is None or i in audited \
                    else tpm.nv_read_public(i)
                if not out[i].attributes & TPMA_NV.WRITTEN and audited is not None and \
                        i not in audited:
                    out[i] = tpm.nv_read_public(i, s)
            except TpmResponseError as e:
                raise IntegrityError(
                    f"NV {i:#x} is listed by the TPM but could not be read "
                    f"({e.rc.describe()}): possible interposer; nothing was changed",
                    hint=BUS_HINT) from None
        return out


def first_candidate(tpm: Tpm, store: Store) -> SealedBlob | None:
    """The best stored copy, or None if nothing is stored."""
    return next(store.candidates(tpm), None)


def require_candidates(tpm: Tpm, store: Store) -> Iterator[SealedBlob]:
    """The store's candidates; :class:`NotFoundError` if there is none
    (:class:`TornStoreError` if an NV layout holds only part of a pair).

    An NV layout that looks empty is confirmed empty first (an authenticated
    listing): "no such index" is a forgeable error, and "nothing sealed, seal one"
    would steer the admin towards overwriting the real copy.
    """
    it = store.candidates(tpm)
    first = next(it, None)
    if first is None:
        if isinstance(store, NvStore):  # part of a pair is not "nothing": say so
            listing = store.listing(tpm)
            if listing.authenticated:  # a complete pair after all: someone hid it
                store.refuse_occupied(listing, looked_empty=True)
            else:
                store.refuse_torn(listing)
        raise NotFoundError(f"no sealed secret in {store.describe()}",
                            "seal one first with `tpmseal seal`")
    return chain([first], it)
