"""Which hierarchy a primary key belongs to, from ReadPublic's qualified Name.

Kept apart from :mod:`tpmseal.recipes.ekcert` so that provisioning can explain a
key's hierarchy without loading X.509 support (start-up time, README: Performance).
"""

from __future__ import annotations

from tpmseal.client.tpm import Tpm
from tpmseal.wire import commands as cmds
from tpmseal.wire.constants import TPM_RH
from tpmseal.wire.rc import TpmResponseError
from tpmseal.wire.structures import digest

HIERARCHY_NAMES: dict[int, str] = {TPM_RH.OWNER: "owner", TPM_RH.ENDORSEMENT: "endorsement",
                                   TPM_RH.PLATFORM: "platform", TPM_RH.NULL: "null"}


def primary_hierarchy(name: bytes, qualified_name: bytes) -> int | None:
    """The hierarchy a primary key with this Name was created under, from its
    qualified Name (Part 1 §16: QN = nameAlg || H(QN(parent) || Name), a
    hierarchy's QN being its handle); None if none fits (not a primary key).

    ReadPublic's qualifiedName carries no HMAC: use the answer to explain, never
    to decide what to trust.
    """
    if len(qualified_name) < 2:
        return None
    alg = int.from_bytes(qualified_name[:2], "big")
    for h in HIERARCHY_NAMES:
        try:
            if qualified_name[2:] == digest(alg, h.to_bytes(4, "big") + name):
                return h
        except ValueError:
            return None
    return None


def hierarchy_of(tpm: Tpm, handle: int) -> int | None:
    """The hierarchy of the primary key at *handle* (None if unknown); see above."""
    try:
        r = tpm.run(cmds.ReadPublic(handle))
    except TpmResponseError:
        return None
    return primary_hierarchy(r.name, r.qualified_name)
