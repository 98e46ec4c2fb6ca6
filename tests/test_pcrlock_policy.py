"""systemd-pcrlock's policy file, offline: the fold by hand, and the parser's error contract.

(The fold is also checked against tpm2-tools trial sessions, and the whole unlock on
swtpm, in tests/test_luks_systemd_pcrlock.py.)
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from tpmseal.errors import TpmsealError
from tpmseal.recipes import systemd_pcrlock
from tpmseal.session.policy import AuthorizeNvStep
from tpmseal.wire.constants import TPM_ALG, TPMA_NV
from tpmseal.wire.marshal import tpm2b
from tpmseal.wire.structures import NvPublic

INDEX = 0x01C1A5E0
NV = NvPublic(INDEX, TPM_ALG.SHA256, TPMA_NV.WRITEALL | TPMA_NV.POLICYWRITE | TPMA_NV.OWNERREAD,
              b"\x07" * 32, 34)
A, B, C = b"\xaa" * 32, b"\xbb" * 32, b"\xcc" * 32


def _doc(**change: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "pcrBank": "sha256",
        "pcrValues": [{"pcr": 7, "values": [A.hex()]}, {"pcr": 11, "values": [B.hex(), C.hex(),
                                                                            B.hex()]}],
        "nvIndex": INDEX, "nvHandle": "",
        "nvPublic": base64.b64encode(tpm2b(NV.marshal())).decode(),
        "srkHandle": "", "pinPublic": "", "pinPrivate": ""}
    doc.update(change)
    return doc


def _h(*parts: bytes) -> bytes:
    return hashlib.sha256(b"".join(parts)).digest()


def _pcr(old: bytes, bitmap: bytes, value: bytes) -> bytes:
    sel = struct.pack(">IHB", 1, TPM_ALG.SHA256, 3) + bitmap
    return _h(old, struct.pack(">I", 0x17F), sel, _h(value))


def test_fold_by_hand() -> None:
    """PolicyPCR(7) over the single value, then PolicyOR over PolicyPCR(11) with each of
    the (deduplicated) values extended from it; then PolicyAuthorizeNV's own digest."""
    pol = systemd_pcrlock.parse(json.dumps(_doc()).encode(), "x")
    first = _pcr(bytes(32), b"\x80\x00\x00", A)
    branches = [_pcr(first, b"\x00\x08\x00", v) for v in (B, C)]
    assert pol.digest() == _h(bytes(32), struct.pack(">I", 0x171), *branches)
    steps = pol.steps()
    assert [type(s).__name__ for s in steps] == ["PcrStep", "PcrStep", "OrStep",
                                                 "AuthorizeNvStep"]
    assert all(s.pcr_digest == b"" for s in steps[:2])  # type: ignore[attr-defined]
    assert steps[-1] == AuthorizeNvStep(INDEX, NV.written().name())


_JSON = st.recursive(st.none() | st.booleans() | st.integers(-2, 2**33) | st.text(max_size=8),
                     lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c,
                                                                          max_size=3),
                     max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(edits=st.dictionaries(st.sampled_from(sorted(_doc())), _JSON | st.binary(max_size=40).map(
           lambda b: base64.b64encode(b).decode()), max_size=3),
       raw=st.binary(max_size=60))
def test_parser_raises_only_typed_errors(edits: dict[str, object], raw: bytes) -> None:
    """pcrlock.json is a file anyone with root on the disk edits: any field of any type,
    or arbitrary bytes, gives a policy or a typed error."""
    for text in (json.dumps(_doc(**edits)).encode(), raw):
        with contextlib.suppress(TpmsealError):
            systemd_pcrlock.parse(text, "x")
