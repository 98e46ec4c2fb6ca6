"""Helpers shared by the session, client, transport and interop tests (no tests here).

Everything runs against the real swtpm of the ``sim`` fixture. Its state has
swtpm_setup's RSA-2048 EK at 0x81010001 and ECC P-384 EK at 0x81010016; a
P-256 EK from the TCG L-2 template is created on demand and persisted at
0x81010002, the SRK (TCG provisioning guidance template) at 0x81000001, so a
test only spends transient slots (swtpm has three) on what it loads itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from tpmseal.client.tpm import Tpm
from tpmseal.recipes.templates import (
    EK_ECC_TEMPLATE,
    SRK_RSA_TEMPLATE,
    sealed_template,
)
from tpmseal.records import replace
from tpmseal.session.auth import AuthSession, Session
from tpmseal.session.policy import PcrStep, compute_policy, pcr_digest
from tpmseal.transport.base import Transport
from tpmseal.wire import commands as c
from tpmseal.wire.constants import TPM_ALG, TPM_RH, TPM_SE, TPMA_OBJECT, TPMA_SESSION
from tpmseal.wire.rc import TpmResponseError
from tpmseal.wire.structures import (
    AES_128_CFB,
    PcrSelection,
    PcrSelectionList,
    Public,
    SensitiveCreate,
    SymDef,
)

SRK_HANDLE = 0x81000001
RSA_EK = 0x81010001
P256_EK = 0x81010002
P384_EK = 0x81010016

#: The PCRs the seed seals to (sha256 0-4, 6, 7, as in the tpm2-tools flow).
PCRS = PcrSelectionList((PcrSelection(TPM_ALG.SHA256, (0, 1, 2, 3, 4, 6, 7)),))
PCRS_TOOLS = "sha256:0,1,2,3,4,6,7"

DEC = TPMA_SESSION.decrypt
ENC = TPMA_SESSION.encrypt
CONT = TPMA_SESSION.continueSession

SALTS = ("rsa2048", "p256", "p384")


def ensure_persistent(tpm: Tpm, handle: int, hierarchy: int, template: Public) -> Public:
    """The public area at persistent *handle*, creating and persisting it if absent."""
    try:
        return tpm.read_public(handle)
    except TpmResponseError as e:
        if e.name != "HANDLE":
            raise
    made = tpm.run(c.CreatePrimary(hierarchy, SensitiveCreate(), template))
    tpm.run(c.EvictControl(TPM_RH.OWNER, made.object_handle, handle))
    tpm.flush(made.object_handle)
    return tpm.read_public(handle)


def srk(tpm: Tpm) -> int:
    """The SRK's persistent handle (created from SRK_RSA_TEMPLATE when missing)."""
    ensure_persistent(tpm, SRK_HANDLE, TPM_RH.OWNER, SRK_RSA_TEMPLATE)
    return SRK_HANDLE


def salt_key(tpm: Tpm, which: str) -> tuple[int, Public]:
    """(handle, public area) of the EK that salts a session: rsa2048, p256 or p384."""
    if which == "rsa2048":
        return RSA_EK, tpm.read_public(RSA_EK)
    if which == "p384":
        return P384_EK, tpm.read_public(P384_EK)
    if which == "p256":
        return P256_EK, ensure_persistent(tpm, P256_EK, TPM_RH.ENDORSEMENT, EK_ECC_TEMPLATE)
    raise AssertionError(which)


def salted(tpm: Tpm, kind: int = TPM_SE.HMAC, which: str = "rsa2048", attributes: int = CONT,
           symmetric: SymDef = AES_128_CFB, auth_hash: int = TPM_ALG.SHA256,
           confirm: bool = True) -> AuthSession:
    """A session salted with one of the EKs, confirmed (one StirRandom) unless *confirm* is
    false, so that it may encrypt responses."""
    h, pub = salt_key(tpm, which)
    s = tpm.start_session(kind, salt_key=pub, salt_handle=h, attributes=attributes,
                          symmetric=symmetric, auth_hash=auth_hash)
    if confirm and symmetric.algorithm != TPM_ALG.NULL:
        tpm.confirm(s)
    return s


def pcr_step(tpm: Tpm) -> PcrStep:
    """PolicyPCR over the current values of :data:`PCRS`."""
    values = tpm.pcr_read(PCRS)
    return PcrStep(PCRS, pcr_digest(TPM_ALG.SHA256, [values[p] for p in PCRS.pairs()]))


def user_sealed_template(auth_policy: bytes = b"") -> Public:
    """A sealed data object that also allows authValue (userWithAuth) authorization."""
    return replace(sealed_template(auth_policy),
                   object_attributes=TPMA_OBJECT.fixedTPM | TPMA_OBJECT.fixedParent
                   | TPMA_OBJECT.userWithAuth)


@dataclass
class Sealed:
    """A sealed object: its blobs and, once loaded, its handle."""

    private: bytes
    public: Public
    handle: int = 0
    secret: bytes = field(default=b"", repr=False)


def seal(tpm: Tpm, parent: int, secret: bytes, public: Public, *sessions: Session,
         auth: bytes = b"") -> Sealed:
    r = tpm.run(c.Create(parent, SensitiveCreate(auth, secret), public), *sessions)
    return Sealed(r.out_private, r.out_public, secret=secret)


def load(tpm: Tpm, parent: int, obj: Sealed, *sessions: Session) -> int:
    obj.handle = tpm.run(c.Load(parent, obj.private, obj.public), *sessions).object_handle
    return obj.handle


def new_secret() -> bytes:
    return os.urandom(32)


class FaultyTransport:
    """Forwards to a real transport; *tamper* may rewrite (code, response) pairs."""

    def __init__(self, inner: Transport,
                 tamper: Callable[[int, bytes, bytes], bytes] | None = None) -> None:
        self.inner = inner
        self.tamper = tamper
        self.codes: list[int] = []

    @property
    def uri(self) -> str:
        return self.inner.uri

    def send(self, command: bytes) -> bytes:
        code = int.from_bytes(command[6:10], "big")
        self.codes.append(code)
        response = self.inner.send(command)
        if self.tamper is not None:
            response = self.tamper(code, command, response)
        return response

    def close(self) -> None:
        self.inner.close()


# Assertions on secrets that never put the secret into the test output (a failing
# ``assert a == b`` would print both byte strings).


def same(got: bytes, want: bytes) -> None:
    """*got* equals the secret *want*."""
    __tracebackhide__ = True  # pytest would print the arguments of this frame
    if got != want:
        raise AssertionError(f"got {len(got)} bytes that differ from the expected "
                             f"{len(want)}-byte secret")


def absent(secret: bytes, data: bytes) -> None:
    """*secret* does not occur in captured *data*."""
    __tracebackhide__ = True
    if secret in data:
        raise AssertionError(f"the {len(secret)}-byte secret is in the clear at offset "
                             f"{data.find(secret)} of a {len(data)}-byte frame")


def present(secret: bytes, data: bytes, expected: bool = True) -> None:
    """*secret* occurs in *data* (or, with expected False, does not)."""
    __tracebackhide__ = True
    if not expected:
        absent(secret, data)
    elif secret not in data:
        raise AssertionError(f"the {len(secret)}-byte value is not in the {len(data)}-byte "
                             "frame")


def flip(data: bytes, offset: int, mask: int = 0xFF) -> bytes:
    out = bytearray(data)
    out[offset] ^= mask
    return bytes(out)


def policy_for(step: PcrStep) -> bytes:
    return compute_policy([step])
