"""Attack 33: a forged error for a FlushContext left for later (/dev/tpmrmN).

Through the kernel resource manager the client sends the FlushContext of a block's
last handle before its *next* command (client/tpm.py, ``Tpm.scoped``), so an API user
keeping a :class:`Tpm` open for a second unseal sends it just before that unseal's
salted StartAuthSession. FlushContext has no sessions: its error is the interposer's
to write. Raised from the next command, it was read by that command's error mapping
as its own: TPM_RC_VALUE for parameter 2 became "the TPM's endorsement key does not
match the trusted one: possible interposer or replaced TPM" (the salt did not
decrypt) on a TPM whose EK is the pinned one. A deferred flush that fails now leaves
the handle to the kernel, as one never sent would; the next command is unaffected.
"""

from __future__ import annotations

from pathlib import Path

from attacks.bus import interposer, names
from test_seal_support import cli, secret_bytes
from tpmseal import api
from tpmseal.sniff.capture.hooks import HookContext, Respond, Verdict, error_response
from tpmseal.transport.simulator import Simulator
from tpmseal.wire.constants import TPM_CC

RC_VALUE_P2 = 0x2C4  # TPM_RC_VALUE, parameter 2: what StartAuthSession says of a bad salt


def test_a_forged_deferred_flush_error_is_not_the_next_commands_error(
        tcg_sim: Simulator, tmp_path: Path) -> None:
    secret = secret_bytes()
    blob = tmp_path / "blob.json"
    r = cli(["seal", "--pcrs", "sha256:0,7", "--output", str(blob)], stdin=secret)
    assert r.rc == 0, r.err
    forging: list[bool] = []

    def forge(ctx: HookContext) -> Verdict:
        if forging and ctx.code == TPM_CC.FlushContext:
            return Respond(error_response(RC_VALUE_P2))
        return None

    with interposer(tcg_sim) as p, p.interpose(on_command=forge), api.open_tpm(p.uri) as tpm:
        tpm.transport.flushes_on_close = True  # type: ignore[attr-defined]  # as /dev/tpmrm0
        assert api.unseal(tpm, blob) == secret  # its object's FlushContext left for later
        forging.append(True)
        assert api.unseal(tpm, blob) == secret  # before: TrustError, "endorsement key"
        tpm.transport.flushes_on_close = False  # type: ignore[attr-defined]  # tidy swtpm
        forging.clear()
    seen = names(p.exchanges)
    assert seen.count("StartAuthSession") == 2 and seen.count("Unseal") == 2, seen
