"""Where sealed blobs live — a JSON file or EVE's NV indices — and crash-safe replacement.

Both stores give the same guarantee to ``reseal``: at every instant a crash
leaves at least one complete copy that unseals (the old or the new).

* :class:`FileStore`: temp file, fsync, rename (:func:`tpmseal.files.write_atomic`).
* :class:`NvStore`: EVE's layout has no metadata — TPM2B_PRIVATE contents in
  one ordinary owner-read/write index, TPMT_PUBLIC bytes (TPM2B_PUBLIC contents)
  in another, no size prefixes. Replacing it in place always has a moment with
  no complete pair, so the new pair is first written to *staging* indices, then
  the main pair is replaced, then staging is removed. Readers try the main pair
  first and fall back to staging. Whether a reseal stages its new pair first
  follows from where the copy that unsealed was read, never from a re-read an
  interposer could answer with "no such index".

  The layout is open to anyone on the bus (owner authorization is empty), and so
  is the SRK: an interposer can store an object of its own, sealed to the current
  PCRs, and every HMAC would verify. So the store only yields objects whose Name
  the trust file pins (``nv_sealed``, recipes/trust.py); it pins the new Name
  before a save writes anything and drops the old one after, and pins on first
  use an object found on a device whose trust file has no pin yet (docs/SECURITY.md).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Protocol

from tpmseal.client.tpm import Tpm
from tpmseal.errors import DecodeError, IntegrityError, NotFoundError, UsageError
from tpmseal.files import write_atomic
from tpmseal.recipes.blob import ENCRYPTED, LEGACY, SaltKey, SealedBlob
from tpmseal.recipes.profiles import NvLayout, Profile
from tpmseal.recipes.trust import TrustRecord, pin_sealed, salted_session
from tpmseal.session.auth import AuthSession, Session
from tpmseal.wire import commands as cmds
from tpmseal.wire.constants import TPM_ALG, TPM_RH, TPMA_NV, TPMA_SESSION
from tpmseal.wire.rc import TpmResponseError
from tpmseal.wire.structures import NvPublic, PcrSelectionList, Public

log = logging.getLogger("tpmseal.store")

#: EVE's NV attributes: an ordinary index the owner may read and write (Part 2 §13.4).
NV_ATTRS = TPMA_NV.OWNERWRITE | TPMA_NV.OWNERREAD


class Store(Protocol):
    """A place holding sealed blobs."""

    def describe(self) -> str: ...

    def candidates(self, tpm: Tpm) -> Iterator[SealedBlob]:
        """Blobs to try, best first, read from the TPM only as the caller asks for them."""
        ...

    def save(self, tpm: Tpm, blob: SealedBlob, keep: SealedBlob | None = None) -> None:
        """Replace what is stored with *blob* without a moment of having no copy.

        *keep* is the stored copy known to unseal (a reseal's source): it stays in
        place until *blob* is complete elsewhere.
        """
        ...

    def unsealed(self, blob: SealedBlob) -> None:
        """Called after *blob*, one of :meth:`candidates`, unsealed."""
        ...


@dataclass(frozen=True)
class FileStore:
    path: Path

    def describe(self) -> str:
        return str(self.path)

    def candidates(self, tpm: Tpm) -> Iterator[SealedBlob]:
        if self.path.exists() and not self.path.is_file():
            raise UsageError(f"{self.path} is not a regular file",
                             "a sealed blob is a JSON file: name a file path")
        try:
            text = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as e:
            raise UsageError(f"cannot read blob {self.path}: {e.strerror}") from None
        yield SealedBlob.from_json(text, str(self.path))

    def save(self, tpm: Tpm, blob: SealedBlob, keep: SealedBlob | None = None) -> None:
        write_atomic(self.path, blob.to_json().encode(), mode=0o600)

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


def nv_read_index(tpm: Tpm, index: int, *sessions: Session) -> bytes | None:
    """The whole content of an owner-readable index; None if undefined or never written."""
    pub = nv_public(tpm, index)
    if pub is None or not pub.attributes & TPMA_NV.WRITTEN:
        return None
    return tpm.nv_read(index, pub.data_size, TPM_RH.OWNER, *sessions)


def nv_undefine(tpm: Tpm, index: int) -> None:
    """Remove an index; nothing happens if it does not exist."""
    try:
        tpm.run(cmds.NV_UndefineSpace(TPM_RH.OWNER, index))
    except TpmResponseError as e:
        if e.name != "HANDLE":
            raise


def nv_define_write(tpm: Tpm, index: int, data: bytes) -> None:
    """Define an ordinary owner read/write index of exactly len(data) bytes and fill it."""
    tpm.run(cmds.NV_DefineSpace(TPM_RH.OWNER, b"", NvPublic(
        index, TPM_ALG.SHA256, NV_ATTRS, b"", len(data))))
    tpm.nv_write(index, data)


@dataclass
class NvStore:
    """EVE's NV layout. It has no metadata, so the caller says which PCRs the object
    was sealed to (*pcrs*) and whether it needs a PIN. *accept_any*: take whatever
    object is stored and pin it (after other software, e.g. EVE, re-sealed it)."""

    layout: NvLayout
    pcrs: PcrSelectionList
    srk: int
    trust: TrustRecord | None
    pin: bool = False
    accept_any: bool = False
    #: the private index each candidate was read from (by its private part)
    _origin: dict[bytes, int] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def for_profile(cls, profile: Profile, pcrs: PcrSelectionList | None,
                    trust: TrustRecord | None, pin: bool = False,
                    accept_any: bool = False) -> NvStore:
        if profile.nv is None:
            raise UsageError(f"profile {profile.name!r} has no NV layout",
                             "use --profile eve with --nv, or a blob file")
        return cls(profile.nv, pcrs or profile.default_pcrs,
                   trust.srk_handle if trust else profile.srk, trust, pin, accept_any)

    def describe(self) -> str:
        return f"NV {self.layout.private:#x}/{self.layout.public:#x}"

    def _pair(self, tpm: Tpm, private: int, public: int) -> SealedBlob | None:
        priv = nv_read_index(tpm, private)
        pub = nv_read_index(tpm, public) if priv is not None else None
        if priv is None or pub is None:
            return None
        try:
            public_area = Public.from_bytes(pub)
        except DecodeError as e:
            log.warning("NV %#x does not hold a public area: %s", public, e.message)
            return None
        t = self.trust
        salt = SaltKey(t.ek_handle, t.ek_public) if t else None
        sealed_with = ENCRYPTED if t is not None and t.aes_128_cfb else LEGACY
        return SealedBlob(public_area, priv, self.pcrs, {}, self.srk, t.srk_name if t else b"",
                          salt, sealed_with, self.pin)

    def candidates(self, tpm: Tpm) -> Iterator[SealedBlob]:
        # staging is read only if the main pair is missing or did not unseal
        for priv, pub in ((self.layout.private, self.layout.public),
                          (self.layout.staging_private, self.layout.staging_public)):
            blob = self._pair(tpm, priv, pub)
            if blob is not None:
                self._check_pinned(blob, priv, pub)
                self._origin[blob.private] = priv
                yield blob

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
        if t is None or (t.nv_sealed and not self.accept_any) or t.nv_sealed == (blob.name,):
            return
        log.warning("pinning the sealed object in %s (Name %s) in %s", self.describe(),
                    blob.name.hex()[:16], t.path)
        try:
            self.trust = pin_sealed(t, (blob.name,))
        except UsageError as e:
            log.warning("could not pin the sealed object: %s", e.one_line())

    def _pin(self, names: tuple[bytes, ...]) -> None:
        if self.trust is not None and self.trust.path is not None:
            self.trust = pin_sealed(self.trust, names)

    def save(self, tpm: Tpm, blob: SealedBlob, keep: SealedBlob | None = None) -> None:
        lay = self.layout
        priv, pub = blob.private, blob.public.marshal()
        old = self.trust.nv_sealed if self.trust is not None else ()
        self._pin(tuple(dict.fromkeys((*old, blob.name))))  # both, while the pair swaps
        origin = self._origin.get(keep.private) if keep is not None else None
        if origin is not None:
            # where the copy that unsealed was read from - not a re-read, which an
            # interposer could answer with "no such index" to make us skip staging
            stage = origin == lay.private
        else:
            main = self._pair(tpm, lay.private, lay.public)
            stage = main is not None and (keep is None or main.private == keep.private)
        if stage:
            # 1. a complete new copy in staging (the main pair is untouched)
            for index in (lay.staging_public, lay.staging_private):
                nv_undefine(tpm, index)
            nv_define_write(tpm, lay.staging_private, priv)
            nv_define_write(tpm, lay.staging_public, pub)
        # else the main pair is incomplete (nothing stored yet, or an earlier save
        # stopped mid-swap) or is not the copy that unseals: staging may hold the
        # only good copy, so it stays until the main pair is complete again.
        # 2. replace the main pair (staging covers the moment it is incomplete)
        nv_undefine(tpm, lay.public)
        nv_undefine(tpm, lay.private)
        nv_define_write(tpm, lay.private, priv)
        nv_define_write(tpm, lay.public, pub)
        # 3. drop staging
        nv_undefine(tpm, lay.staging_public)
        nv_undefine(tpm, lay.staging_private)
        self._pin((blob.name,))

    def confirm_nothing_stored(self, tpm: Tpm, session: AuthSession | None = None,
                               also: Sequence[int] = ()) -> dict[int, NvPublic] | None:
        """Before writing into a layout that looked empty, make sure it really is.

        "No such index" is an error response, and error responses carry no HMAC
        (Part 1 §18.8): an interposer can forge them to make the store look empty
        and have a fresh seal overwrite the real sealed copy. So ask again in an
        authenticated way and refuse if a complete copy exists after all.
        Returns the authenticated public areas of the indices in *also* that
        exist (None when there is no pinned key to authenticate with).
        """
        if self.trust is None:
            return None  # no pinned key to authenticate with (legacy)
        lay = self.layout
        pairs = ((lay.private, lay.public), (lay.staging_private, lay.staging_public))
        pubs = authenticated_nv(tpm, self.trust,
                                [i for pair in pairs for i in pair] + list(also), session)
        for priv, pub in pairs:
            if all(i in pubs and pubs[i].attributes & TPMA_NV.WRITTEN for i in (priv, pub)):
                raise IntegrityError(
                    f"NV {priv:#x}/{pub:#x} holds a sealed secret that could not be read: "
                    "possible interposer hiding it; nothing was changed",
                    "retry and check the TPM bus; if the stored copy is known to be corrupt, "
                    "replace it with `tpmseal seal --nv --force`")
        return {i: pubs[i] for i in also if i in pubs}


def authenticated_nv(tpm: Tpm, trust: TrustRecord, indices: list[int],
                     session: AuthSession | None = None) -> dict[int, NvPublic]:
    """The public areas of those *indices* that exist, from HMAC-checked responses.

    Absence is learned from a GetCapability listing in an EK-salted audit
    session (its response HMAC covers the list), never from an error. A
    caller's *session* is used (and kept) instead of a new one.
    """
    s = session or salted_session(tpm, trust)
    s.attributes = TPMA_SESSION.continueSession | TPMA_SESSION.audit
    with contextlib.nullcontext() if session else tpm.scoped(s.handle):
        defined = set(tpm.handles(min(indices), s))
        out: dict[int, NvPublic] = {}
        for i in sorted(defined.intersection(indices)):
            try:
                out[i] = tpm.nv_read_public(i, s)
            except TpmResponseError as e:
                raise IntegrityError(
                    f"NV {i:#x} is listed by the TPM but could not be read "
                    f"({e.rc.describe()}): possible interposer; nothing was changed") from None
        return out


def first_candidate(tpm: Tpm, store: Store) -> SealedBlob | None:
    """The best stored copy, or None if nothing is stored."""
    return next(store.candidates(tpm), None)


def require_candidates(tpm: Tpm, store: Store) -> Iterator[SealedBlob]:
    """The store's candidates; :class:`NotFoundError` if there is none.

    An NV layout that looks empty is confirmed empty first (an authenticated
    listing): "no such index" is a forgeable error, and "nothing sealed, seal one"
    would steer the admin towards overwriting the real copy.
    """
    it = store.candidates(tpm)
    first = next(it, None)
    if first is None:
        if isinstance(store, NvStore):
            store.confirm_nothing_stored(tpm)
        raise NotFoundError(f"no sealed secret in {store.describe()}",
                            "seal one first with `tpmseal seal`")
    return chain([first], it)
