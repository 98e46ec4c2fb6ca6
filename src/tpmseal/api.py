"""The library API: a thin, documented facade over :mod:`tpmseal.recipes` (docs/API.md).

Everything here is also reachable as ``tpmseal.<name>``, loaded on first use::

    import tpmseal

    with tpmseal.open_tpm("swtpm:path=/run/tpm.sock") as tpm:
        blob = tpmseal.seal(tpm, key, pcrs="sha256:0,7", output="disk.json")
        assert tpmseal.unseal(tpm, "disk.json") == key

Functions take an open TPM (:func:`open_tpm`, a context manager that flushes what it
loaded when it closes) and keyword options named like the CLI's. Failures raise the
typed errors of :mod:`tpmseal.errors`; each carries ``exit_code`` (the CLI's, README:
exit codes), ``message`` and ``hint``, and ``one_line()`` gives the CLI's sentence.
Messages never contain key material.

The same rules as the CLI hold: sealing needs the EK pinned by :func:`provision`
(unless ``legacy``); ``legacy`` on a TPM pinned as AES-128-CFB-capable needs
``allow_downgrade``; a PCR 0 or 4 that is all zero is refused unless
``allow_unmeasured``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING

from tpmseal.client.tpm import Tpm
from tpmseal.errors import UsageError
from tpmseal.recipes import lifecycle, trust
from tpmseal.recipes.blob import SealedBlob
from tpmseal.recipes.lifecycle import UnsealOptions, VaultResult
from tpmseal.recipes.pcrspec import parse_pcrs
from tpmseal.recipes.policies import SealPolicy, any_of_states, pcr_policy, signed_by
from tpmseal.recipes.profiles import DEFAULT_EK_TYPE, Profile, get_profile
from tpmseal.recipes.stores import FileStore, NvStore, Store

if TYPE_CHECKING:
    from tpmseal.recipes.provision import ProvisionResult
    from tpmseal.recipes.signed import SignedPolicy
    from tpmseal.recipes.trust import TrustRecord
    from tpmseal.wire.structures import PcrSelectionList

__all__ = ["SealPolicy", "SealedBlob", "Tpm", "VaultResult", "any_of_states", "open_tpm",
           "pcr_policy", "provision", "reseal", "seal", "signed_by", "unseal", "vault_key"]

def open_tpm(uri: str | None = None, *, timeout: float | None = None) -> Tpm:
    """Open the TPM named by *uri*: ``device:/dev/tpmrm0``, ``unix:PATH``, ``tcp:H:P``,
    ``sim:DIR`` or a tpm2-tools TCTI string (``swtpm:path=P``, ``mssim:host=H,port=P``).

    Without *uri*: ``$TPMSEAL_TPM``, else ``$TPM2TOOLS_TCTI``, else ``$TCTI``, else
    ``device:/dev/tpmrm0``. *timeout* bounds each exchange (default ``$TPMSEAL_TIMEOUT`` or
    120 s). Use the result as a context manager: closing it flushes the objects and
    sessions it loaded. Raises :class:`~tpmseal.errors.TransportError` (exit code 3).
    """
    from tpmseal.transport.base import open_transport

    return Tpm(open_transport(uri, timeout))


def _profile(profile: str | Profile) -> Profile:
    return profile if isinstance(profile, Profile) else get_profile(profile)


def _pcrs(pcrs: str | PcrSelectionList | None) -> PcrSelectionList | None:
    return parse_pcrs(pcrs) if isinstance(pcrs, str) else pcrs


def _path(trust_file: str | PathLike[str] | None) -> str:
    return trust.trust_path(None if trust_file is None else str(trust_file))


def _record(tpm: Tpm, trust_file: str | PathLike[str] | None, profile: Profile, *,
            required: bool, source: str | PathLike[str] | SealedBlob | None = None
            ) -> TrustRecord | None:
    """The record for the TPM *tpm* is open on, as the CLI picks it (recipes/trust.py,
    select): a blob's salt key, else the address, else the profile's only record."""
    blob = source if isinstance(source, SealedBlob) else (
        FileStore(Path(source)).read() if source is not None and source != "nv" else None)
    salt = blob.salt_key.name if blob is not None and blob.salt_key is not None else None
    load = trust.load if required else trust.find
    return load(_path(trust_file), profile.name, address=trust.address_of(tpm),
                salt_name=salt)


def provision(tpm: Tpm, *, profile: str | Profile = "tcg", ek_type: str = DEFAULT_EK_TYPE,
              trust_file: str | PathLike[str] | None = None, ek_ca: str | None = None,
              repin: bool = False, allow_legacy: bool = False) -> ProvisionResult:
    """Create the profile's EK and SRK if missing, persist them and pin them in the trust file.

    Idempotent. *ek_type*: the EK that salts sessions, as the CLI's ``--ek-type``:
    ``"auto"`` (the default, as the CLI's) keeps the type of a pinned or persisted EK, else
    takes the ECC EK (NIST P-256) when the TPM has that curve, else RSA (the eve profile
    stays RSA); ``"rsa"`` or ``"ecc"`` ask for one (another type than the one pinned raises
    :class:`~tpmseal.errors.UsageError` unless *repin*). *trust_file* defaults to
    ``$TPMSEAL_TRUST_FILE`` or /var/lib/tpmseal/trust.json; *ek_ca* (a PEM file or
    directory) verifies the EK certificate first; *repin* accepts an EK other than the
    pinned one (a replaced TPM); *allow_legacy* pins a TPM without AES-128-CFB. The record
    is keyed by the EK's Name and holds the address *tpm* was opened on, next to other TPMs'
    records. Raises :class:`~tpmseal.errors.TrustError` (6) when the EK is not the one
    pinned at that address; nothing is persisted on the TPM when it refuses.
    """
    from tpmseal.recipes.provision import provision as run

    path = _path(trust_file)
    with trust.naming(path):
        return run(tpm, _profile(profile), ek_type=ek_type, trust_file=path, ek_ca=ek_ca,
                   repin=repin, allow_legacy=allow_legacy)


def seal(tpm: Tpm, secret: bytes, *, policy: SealPolicy | None = None,
         pcrs: str | PcrSelectionList | None = None,
         output: str | PathLike[str] | None = None, nv: bool = False, force: bool = False,
         profile: str | Profile = "tcg", trust_file: str | PathLike[str] | None = None,
         pin: bytes | None = None, legacy: bool = False, allow_downgrade: bool = False,
         allow_unmeasured: bool = False) -> SealedBlob:
    """Seal *secret* under *policy* (:func:`pcr_policy`, :func:`any_of_states`,
    :func:`signed_by`; default: the current values of *pcrs*, or of the profile's list).

    With *output*, the blob is written there (atomically, mode 0600; an existing sealed
    secret is replaced only with *force*); with *nv*, into the profile's NV layout;
    with neither, only returned (:meth:`SealedBlob.to_json` serialises it). *pin* adds
    PolicyAuthValue: unseal then needs it. Raises
    :class:`~tpmseal.errors.UsageError` (2) for a refused operation,
    :class:`~tpmseal.errors.NotFoundError` (11) when nothing is pinned.
    """
    prof = _profile(profile)
    with trust.naming(_path(trust_file)):
        rec = _record(tpm, trust_file, prof, required=not legacy)
        lifecycle.refuse_downgrade(legacy, rec, allow_downgrade)
        chosen = (policy or pcr_policy()).with_pcrs(_pcrs(pcrs))
        if output is not None and nv:
            raise UsageError("seal got both output and nv", "give one of them")
        if output is None and not nv:
            from tpmseal.recipes import sealing

            with lifecycle.shared_session(tpm, rec, legacy) as session:
                return sealing.seal(tpm, secret, chosen, profile=prof, trust=rec,
                                    legacy=legacy, allow_unmeasured=allow_unmeasured, pin=pin,
                                    session=session)
        store: Store = (NvStore.for_profile(prof, chosen.pcrs, rec, pin is not None) if nv
                        else FileStore(Path(output or "")))
        return lifecycle.seal_into(tpm, store, secret, chosen, prof, rec, force=force,
                                   legacy=legacy, allow_unmeasured=allow_unmeasured, pin=pin)


def _source(source: str | PathLike[str] | SealedBlob, profile: Profile,
            rec: TrustRecord | None, pcrs: PcrSelectionList | None, pin: bool,
            pcrs_option: str = "--pcrs") -> Store:
    if isinstance(source, SealedBlob):
        return _Given(source)
    if isinstance(source, str) and source == "nv":
        return NvStore.for_profile(profile, pcrs, rec, pin, pcrs_option=pcrs_option)
    return FileStore(Path(source))


class _Given:
    """A blob held in memory, offered as a store (nothing is written back)."""

    def __init__(self, blob: SealedBlob):
        self.blob = blob

    def describe(self) -> str:
        return "the given blob"

    def candidates(self, tpm: Tpm) -> Iterator[SealedBlob]:
        yield self.blob

    def save(self, tpm: Tpm, blob: SealedBlob, keep: SealedBlob | None = None, *,
             exclusive: bool = False) -> None:
        raise UsageError("reseal needs a blob file or nv, not an in-memory blob",
                         "pass the blob's path")

    def unsealed(self, blob: SealedBlob) -> None:
        """Like a blob file, an in-memory blob pins nothing."""


def unseal(tpm: Tpm, source: str | PathLike[str] | SealedBlob, *,
           profile: str | Profile = "tcg", trust_file: str | PathLike[str] | None = None,
           pcrs: str | PcrSelectionList | None = None, pin: bytes | None = None,
           legacy: bool = False, allow_downgrade: bool = False, recover: bool = True,
           policies: Sequence[str | PathLike[str]] = ()) -> bytes:
    """Unseal the secret in *source*: a blob file path, a :class:`SealedBlob`, or ``"nv"``
    (the string: the profile's NV layout; a file named nv is ``Path("nv")`` or ``"./nv"``).

    *pcrs* applies to ``"nv"`` only (a blob records its PCRs; so does the trust file for an
    object tpmseal stored in NV, and *pcrs* other than the record's raise
    :class:`~tpmseal.errors.UsageError`, 2, before any session starts). With *recover*,
    a policy failure of a blob without recorded values searches for the PCR list it
    covers. *policies*: signed policy files or directories, for a secret sealed
    :func:`signed_by` a key.
    Raises :class:`~tpmseal.errors.PolicyMismatchError` (5) naming the changed PCRs,
    :class:`~tpmseal.errors.AuthFailedError` (9) for a wrong PIN,
    :class:`~tpmseal.errors.IntegrityError` (6) when a response fails its checks.
    """
    prof = _profile(profile)
    with trust.naming(_path(trust_file)):
        rec = _record(tpm, trust_file, prof, required=False, source=source)
        store = _source(source, prof, rec, _pcrs(pcrs), pin is not None)
        return lifecycle.unseal_stored(tpm, store, UnsealOptions(
            legacy=legacy, allow_downgrade=allow_downgrade, pin=pin, trust=rec,
            recover=recover, policies=_signed(policies)))


def _signed(paths: Sequence[str | PathLike[str]]) -> tuple[SignedPolicy, ...]:
    if not paths:
        return ()
    from tpmseal.recipes import signed

    return tuple(signed.load_policies([str(p) for p in paths]))


def reseal(tpm: Tpm, source: str | PathLike[str], *, policy: SealPolicy | None = None,
           pcrs: str | PcrSelectionList | None = None,
           output: str | PathLike[str] | None = None, profile: str | Profile = "tcg",
           trust_file: str | PathLike[str] | None = None,
           old_pcrs: str | PcrSelectionList | None = None, pin: bytes | None = None,
           legacy: bool = False, allow_downgrade: bool = False,
           allow_unmeasured: bool = False,
           policies: Sequence[str | PathLike[str]] = ()) -> SealedBlob:
    """Move the secret in *source* (a blob path or ``"nv"``) under *policy*, or to the
    current values of *pcrs* (default: the same signer or states, else the current values
    of the PCRs it is sealed to now), crash-safely: at every moment one copy unseals.

    *output* writes the new blob elsewhere instead of replacing *source*. *old_pcrs*: with
    ``"nv"``, the PCRs an object with no record is sealed to now (other ones than a record's
    raise :class:`~tpmseal.errors.UsageError`). *policies*: signed
    policies, for a secret sealed to a signer.
    """
    prof = _profile(profile)
    with trust.naming(_path(trust_file)):
        rec = _record(tpm, trust_file, prof, required=not legacy, source=source)
        lifecycle.refuse_downgrade(legacy, rec, allow_downgrade)
        store = _source(source, prof, rec, _pcrs(old_pcrs), pin is not None, "--old-pcrs")
        target = FileStore(Path(output)) if output is not None else None
        sel = _pcrs(pcrs)
        new: lifecycle.NewPolicy = policy.with_pcrs(sel) if policy is not None else (
            lambda old: old.renewed(sel))
        return lifecycle.reseal(tpm, store, new, UnsealOptions(
            legacy=legacy, allow_downgrade=allow_downgrade, pin=pin, trust=rec,
            policies=_signed(policies)), prof, allow_unmeasured=allow_unmeasured,
            target=target)


def vault_key(tpm: Tpm, *, pcrs: str | PcrSelectionList | None = None,
              profile: str | Profile = "eve", trust_file: str | PathLike[str] | None = None,
              pin: bytes | None = None, legacy: bool = False, allow_downgrade: bool = False,
              allow_unmeasured: bool = False) -> VaultResult:
    """EVE's FetchSealedVaultKey: generate and seal a key into NV, migrate a legacy
    plaintext key, or unseal the sealed one. ``result.key`` is the key, ``result.action``
    says which (``"generated"``, ``"migrated"``, ``"unsealed"``). *pcrs*: what a new key is
    sealed to; for a sealed one, PCRs other than its trust file record's raise
    :class:`~tpmseal.errors.UsageError`."""
    prof = _profile(profile)
    lifecycle.require_nv(prof)
    with trust.naming(_path(trust_file)):
        rec = _record(tpm, trust_file, prof, required=not legacy)
        store = NvStore.for_profile(prof, _pcrs(pcrs), rec, pin is not None)
        return lifecycle.vault_key(tpm, prof, store, UnsealOptions(
            legacy=legacy, allow_downgrade=allow_downgrade, pin=pin, trust=rec),
            allow_unmeasured=allow_unmeasured)
