"""What a secret is sealed to, as one value: PCR states, or a signer, and a PIN.

:class:`SealPolicy` is the recipe-level description that ``seal``, ``reseal``
and the stores pass around instead of a growing list of keyword flags, built
with a few constructors (the "recipes over hazmat" shape)::

    pcr_policy("sha256:0,7")                       # PolicyPCR, the current values
    any_of_states([now, next_boot], "sha256:0,7")  # PolicyOR over PolicyPCR branches
    signed_by(vendor_pub, "sha256:11", min_version_nv=0x01500020)  # PolicyAuthorize
    pcr_policy(pin=True)                           # ... then PolicyAuthValue

Once its PCR values are known (given, or read in the seal's audited session:
:meth:`SealPolicy.at`) it becomes a :class:`~tpmseal.session.policy.Policy`,
the object that both computes the authPolicy offline and runs itself in a
policy session (Part 3 §23). A blob file and the NV record (recipes/stores.py)
record exactly these fields.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from typing import Any

from tpmseal.errors import UsageError
from tpmseal.recipes.pcrspec import bank_name, parse_pcrs
from tpmseal.records import record, replace
from tpmseal.session.policy import MAX_BRANCHES, Authorizer, PcrStep, Policy, pcr_digest
from tpmseal.wire.constants import TPM_ALG
from tpmseal.wire.structures import PcrSelectionList

PcrValues = dict[tuple[int, int], bytes]


@record
class SealPolicy:
    """A sealing policy before it meets a TPM.

    * *pcrs*: the PCR selection (None: the profile's default list).
    * *states*: the allowed PCR states; empty means "the values the PCRs hold
      when sealing". One state is a plain PolicyPCR, 2 to 8 a PolicyOR.
    * *authorizer*: any state this signer signs (PolicyAuthorize); *pcrs* is then
      the selection its signed policies use. Excludes *states*.
    * *revocation_nv*: with an authorizer, the NV counter its signed policies must
      be gated by (recipes/revocation.py); the authorizer's policyRef names it.
    * *pin*: PolicyAuthValue last; sealing then needs the PIN itself.
    """

    pcrs: PcrSelectionList | None = None
    states: tuple[PcrValues, ...] = ()
    authorizer: Authorizer | None = None
    revocation_nv: int | None = None
    pin: bool = False

    def __post_init__(self) -> None:
        if self.states and self.authorizer is not None:
            raise UsageError("PCR states and a policy signer exclude each other",
                             "a signed policy names its PCR values itself: drop one")
        if len(self.states) > MAX_BRANCHES:
            raise UsageError(f"{len(self.states)} PCR states given; PolicyOR allows at most "
                             f"{MAX_BRANCHES}", "seal to fewer states, or use a signer")
        if self.revocation_nv is not None:
            from tpmseal.recipes.revocation import revocation_ref  # signed policies only

            if self.authorizer is None:
                raise UsageError("--min-version-nv needs --authorized-by",
                                 "add --authorized-by SIGNER.pub, or drop --min-version-nv")
            if self.authorizer.policy_ref != revocation_ref(self.revocation_nv):
                raise UsageError("the signer's policyRef does not name the revocation counter",
                                 "build the policy with signed_by(key, min_version_nv=INDEX)")

    @property
    def reads_pcrs(self) -> bool:
        """Whether sealing reads the current PCR values (no states, no signer)."""
        return not self.states and self.authorizer is None

    def with_pcrs(self, pcrs: PcrSelectionList | None) -> SealPolicy:
        """This policy over *pcrs* (when it names none yet); states are cut to them and
        must give every selected PCR."""
        if pcrs is None:
            return self
        if self.pcrs is not None and pcrs != self.pcrs:
            raise UsageError("the policy names other PCRs than the ones given",
                             "give the PCRs in one place: the policy or --pcrs")
        return replace(self, pcrs=pcrs, states=_cut_states(pcrs, self.states))

    def at(self, values: PcrValues) -> SealPolicy:
        """The policy pinned to *values* (read when sealing): one PolicyPCR state."""
        assert self.pcrs is not None and self.reads_pcrs
        return replace(self, states=_cut_states(self.pcrs, (values,)))

    def session_policy(self) -> Policy:
        """The authPolicy as steps (session/policy.py): computes offline, runs on the TPM."""
        if self.authorizer is not None:
            return Policy((), self.authorizer, self.pin)
        if self.pcrs is None or not self.states:
            raise UsageError("the policy has no PCR values yet",
                             "seal it (which reads them), or give states")
        pairs = self.pcrs.pairs()
        # pcrDigest uses the policy session's hash (SHA-256), whatever the PCR bank
        return Policy(tuple(PcrStep(self.pcrs, pcr_digest(TPM_ALG.SHA256, [v[k] for k in pairs]))
                            for v in self.states), pin=self.pin)

    def digest(self) -> bytes:
        """The sealed object's authPolicy, computed offline (no trial session)."""
        return self.session_policy().digest()

    def renewed(self, pcrs: PcrSelectionList | None = None) -> SealPolicy:
        """What ``reseal`` seals to by default: the same signer, or the same PolicyOR
        states while the PCR list stays; else the current values of *pcrs*."""
        new = pcrs or self.pcrs
        if self.authorizer is not None or (len(self.states) > 1 and new == self.pcrs):
            return replace(self, pcrs=new)
        return SealPolicy(new, pin=self.pin)

    def change_states(self, add: Sequence[PcrValues], drop: Sequence[PcrValues],
                      pcrs: PcrSelectionList | None = None) -> SealPolicy:
        """The allowed states restricted to *pcrs* (default: these), minus *drop*, plus
        *add* — for ``reseal --add-state/--drop-state``."""
        if self.authorizer is not None:
            raise UsageError("this secret is sealed to a policy signer: its states are "
                             "whatever the signer signs", "drop --add-state/--drop-state")
        new = pcrs or self.pcrs
        assert new is not None
        if any(set(new.pairs()) - set(v) for v in self.states):
            raise UsageError("the old states do not cover the new --pcrs",
                             "give every state with --add-state, or keep the PCR list")

        def cut(v: PcrValues) -> PcrValues:
            return {k: v[k] for k in new.pairs() if k in v}

        base = [cut(v) for v in self.states]
        gone = [cut(v) for v in drop]
        missing = [n for n, v in enumerate(gone, 1) if v not in base]
        if missing:
            raise UsageError(f"--drop-state {missing[0]} is not one of the sealed states",
                             "give a file with the values of a sealed state (see the blob's "
                             "states)")
        kept = [v for v in base if v not in gone] + [dict(v) for v in add]
        if not kept:
            raise UsageError("dropping every allowed state would leave nothing to unseal in",
                             "keep at least one state, or --add-state another")
        return SealPolicy(new, _cut_states(new, kept), pin=self.pin)


def _cut_states(pcrs: PcrSelectionList, states: Sequence[PcrValues]) -> tuple[PcrValues, ...]:
    """*states* restricted to *pcrs*, duplicates dropped; each must give every selected PCR."""
    unique: dict[tuple[tuple[tuple[int, int], bytes], ...], PcrValues] = {}
    for n, v in enumerate(states, 1):
        missing = [f"{bank_name(b)}:{i}" for b, i in pcrs.pairs() if (b, i) not in v]
        if missing:
            raise UsageError(f"PCR state {n} has no value for {', '.join(missing)}",
                             "give `pcrs show --json` output that covers --pcrs")
        cut = {k: v[k] for k in pcrs.pairs()}
        unique.setdefault(tuple(sorted(cut.items())), cut)
    return tuple(unique.values())


def _selection(pcrs: str | PcrSelectionList | None) -> PcrSelectionList | None:
    if isinstance(pcrs, str):
        return parse_pcrs(pcrs)
    return pcrs


def pcr_policy(pcrs: str | PcrSelectionList | None = None, *, pin: bool = False) -> SealPolicy:
    """PolicyPCR over the values *pcrs* (default: the profile's list) hold when sealing."""
    return SealPolicy(_selection(pcrs), pin=pin)


def any_of_states(states: Sequence[PcrValues], pcrs: str | PcrSelectionList | None = None, *,
                  pin: bool = False) -> SealPolicy:
    """Any one of 1 to 8 PCR states (each a map like ``pcrs show --json`` gives, e.g. from
    :func:`tpmseal.recipes.blob.read_values_file`): PolicyOR over one PolicyPCR each."""
    if not states:
        raise UsageError("no PCR states given", "give 1 to 8 states, or use pcr_policy()")
    sel = _selection(pcrs)
    return SealPolicy(sel, _cut_states(sel, states) if sel is not None else tuple(states),
                      pin=pin)


def signed_by(key: Any, pcrs: str | PcrSelectionList | None = None, *,
              min_version_nv: int | None = None, pin: bool = False) -> SealPolicy:
    """Any state *key* signs (``tpmseal policy sign``, systemd-measure): PolicyAuthorize.

    *key*: a path to a PEM public key, a ``cryptography`` RSA-2048 or P-256 public key,
    or an :class:`~tpmseal.session.policy.Authorizer`. *min_version_nv*: only policies
    gated by this NV counter count, so ``policy revoke-below`` can void old ones.
    """
    from tpmseal.recipes.revocation import revocation_ref

    ref = b"" if min_version_nv is None else revocation_ref(min_version_nv)
    if isinstance(key, Authorizer):
        authorizer = replace(key, policy_ref=ref)
    else:
        from tpmseal.recipes import signer  # cryptography: only when a signer is used

        public = signer.load_public(str(key)) if isinstance(key, (str, PathLike)) else key
        authorizer = signer.authorizer_for(public, ref)
    return SealPolicy(_selection(pcrs), authorizer=authorizer, revocation_nv=min_version_nv,
                      pin=pin)
