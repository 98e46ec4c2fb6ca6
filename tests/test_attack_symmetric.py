"""Attack 19: rewrite the symmetric algorithm of a salted StartAuthSession.

StartAuthSession carries no HMAC, and the session's symmetric definition joins
neither the session key nor any HMAC (Part 1 §19.6.8, §19.6.12-17): response
HMACs cover the *encrypted* parameters, so a session whose key is confirmed may
still encrypt with another cipher than the client thinks. An interposer that
turns AES-128-CFB into AES-256-CFB makes the TPM en/decipher under a key derived
from the same (secret) session key: it learns nothing, but the client would
decipher a response wrongly while every HMAC verifies.

What stops it is that every tpmseal flow makes the TPM *decrypt a structured
parameter* in each encrypting session before (unseal: Load's inPrivate) or after
(seal, vault-key: Create's inSensitive; a legacy key read only ever retires the
legacy index when it equals the key that unsealed) using what it deciphered:
the TPM rejects the garbage (TPM_RC_SIZE). These tests pin that down: on every
path the rewrite fails closed, never returns or stores wrong data, and destroys
nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from attacks.bus import direct, expect_ok, interposer, tpm
from tpmseal.client.tpm import Tpm
from tpmseal.recipes.stores import nv_define_write, nv_public
from tpmseal.records import replace
from tpmseal.sniff.capture.hooks import HookContext, Verdict, build_command
from tpmseal.transport.simulator import Simulator
from tpmseal.wire import commands as cmds
from tpmseal.wire.constants import TPM_CC, TPM_RH, TPM_SE
from tpmseal.wire.structures import AES_256_CFB

LEGACY_NV = 0x01700000
PASSPHRASE = b"correct horse battery staple"  # not key-like: its blob has no check value


def _widen(kinds: tuple[int, ...]) -> Callable[[HookContext], Verdict]:
    """Rewrite AES-128-CFB to AES-256-CFB in every salted StartAuthSession of *kinds*."""
    def hook(ctx: HookContext) -> Verdict:
        if ctx.code != TPM_CC.StartAuthSession:
            return None
        cmd, auths = ctx.parse()
        assert isinstance(cmd, cmds.StartAuthSession)
        if cmd.tpm_key == TPM_RH.NULL or cmd.session_type not in kinds:
            return None
        return build_command(replace(cmd, symmetric=AES_256_CFB), auths)
    return hook


Setup = Callable[[Simulator, Path], tuple[list[str], list[str], bytes]]


def _blob(sim: Simulator, d: Path) -> tuple[list[str], list[str], bytes]:
    (d / "key").write_bytes(PASSPHRASE)
    assert direct(sim, "seal", "--input", str(d / "key"), "--output", str(d / "b.json")).rc == 0
    return ["unseal", "--input", str(d / "b.json")], ["unseal", "--input", str(d / "b.json")], \
        PASSPHRASE


def _reseal(sim: Simulator, d: Path) -> tuple[list[str], list[str], bytes]:
    _, check, secret = _blob(sim, d)
    return ["reseal", "--input", str(d / "b.json"), "--pcrs", "sha256:0,4,7"], check, secret


def _nv(sim: Simulator, d: Path) -> tuple[list[str], list[str], bytes]:
    secret = os.urandom(32)  # EVE's layout has no check value
    (d / "key").write_bytes(secret)
    assert direct(sim, "seal", "--profile", "eve", "--nv", "--input", str(d / "key")).rc == 0
    nv = ["--profile", "eve", "--nv"]
    return ["unseal", *nv], ["unseal", *nv], secret


def _reseal_nv(sim: Simulator, d: Path) -> tuple[list[str], list[str], bytes]:
    _, check, secret = _nv(sim, d)
    return ["reseal", "--profile", "eve", "--nv", "--pcrs", "sha256:0,4,7"], check, secret


def _seal_nv(sim: Simulator, d: Path) -> tuple[list[str], list[str], bytes]:
    secret = os.urandom(32)
    (d / "key").write_bytes(secret)
    nv = ["--profile", "eve", "--nv"]
    return ["seal", *nv, "--input", str(d / "key")], ["unseal", *nv], secret


def _migration(sim: Simulator, d: Path) -> tuple[list[str], list[str], bytes]:
    legacy = os.urandom(32)
    with Tpm.open(sim.uri) as t:
        nv_define_write(t, LEGACY_NV, legacy)
    return ["vault-key", "--profile", "eve"], ["vault-key", "--profile", "eve"], legacy


def _legacy_left_over(sim: Simulator, d: Path) -> tuple[list[str], list[str], bytes]:
    """Every boot, with a legacy index still present: it is read, encrypted."""
    first = direct(sim, "vault-key", "--profile", "eve")
    assert first.rc == 0
    with Tpm.open(sim.uri) as t:
        nv_define_write(t, LEGACY_NV, first.out)
    return ["vault-key", "--profile", "eve"], ["vault-key", "--profile", "eve"], first.out


PATHS: dict[str, tuple[str, Setup]] = {
    "unseal-passphrase": ("tcg", _blob), "reseal-passphrase": ("tcg", _reseal),
    "unseal-nv": ("eve", _nv), "reseal-nv": ("eve", _reseal_nv), "seal-nv": ("eve", _seal_nv),
    "vault-migration": ("eve", _migration), "vault-legacy-left-over": ("eve", _legacy_left_over),
}
KINDS = {"all": (TPM_SE.HMAC, TPM_SE.POLICY), "hmac-only": (TPM_SE.HMAC,)}


@pytest.mark.parametrize("kinds", list(KINDS))
@pytest.mark.parametrize("path", list(PATHS))
def test_rewritten_symmetric_fails_closed(request: pytest.FixtureRequest, tmp_path: Path,
                                          path: str, kinds: str) -> None:
    """*hmac-only* spares unseal's policy session, so that vault-key reaches its
    encrypted read of a legacy key (and reseal its seal half)."""
    profile, setup = PATHS[path]
    sim: Simulator = request.getfixturevalue(f"{profile}_sim")
    argv, check, secret = setup(sim, tmp_path)
    legacy_before = path.startswith("vault") and _has_legacy(sim)
    with interposer(sim, on_command=_widen(KINDS[kinds])) as p:
        r = tpm(p, *argv)
    if r.rc == 0 and argv[0] in ("unseal", "vault-key"):
        expect_ok(r, secret, what=f"{path} under the rewrite")  # never wrong data
    if legacy_before and r.rc != 0:
        assert _has_legacy(sim), "the legacy key was removed by a failed run"
    # whatever happened, the secret is still sealed and unseals without the interposer
    if argv[0] != "seal" or r.rc == 0:
        expect_ok(direct(sim, *check), secret, what=f"{path} afterwards")


def _has_legacy(sim: Simulator) -> bool:
    with Tpm.open(sim.uri) as t:
        return nv_public(t, LEGACY_NV) is not None
