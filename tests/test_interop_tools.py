"""Interoperability with tpm2-tools 5.4, an independent TPM 2.0 stack, on the same swtpm.

* An object tpmseal sealed through an encrypted salted session under PolicyPCR
  is unsealed by tpm2_load + tpm2_startauthsession --policy-session +
  tpm2_policypcr + tpm2_unseal (plain and salted-with-encryption variants).
* An object tpm2-tools sealed with its salted HMAC session and
  ``tpm2_sessionconfig --enable-decrypt`` (tests/peers/tpm2_tools_flow.sh) is
  unsealed by tpmseal over a salted policy session with encrypt.
* tpmseal's EK templates give the same keys as ``tpm2_createek``; Names from
  ReadPublic equal the Names tpm2_readpublic writes and ``Public.name()``.

swtpm serves one connection at a time, so tpmseal's client is closed before any
tool runs. Without a resource manager the tools leave transient objects and
sessions loaded: each tool step is followed by the flush the tools flow uses.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from test_session_support import (
    CONT,
    DEC,
    ENC,
    PCRS_TOOLS,
    RSA_EK,
    SRK_HANDLE,
    Sealed,
    absent,
    load,
    new_secret,
    pcr_step,
    policy_for,
    salted,
    same,
    seal,
    srk,
)
from tpmseal.client.tpm import Tpm
from tpmseal.recipes.templates import EK_ECC_TEMPLATE, EK_RSA_TEMPLATE, sealed_template
from tpmseal.sniff.capture.tap import CapturingTransport
from tpmseal.transport.base import open_transport
from tpmseal.transport.simulator import Simulator
from tpmseal.wire import commands as c
from tpmseal.wire.constants import TPM_CC, TPM_RH, TPM_SE
from tpmseal.wire.marshal import Reader, tpm2b
from tpmseal.wire.structures import Public, SensitiveCreate

TOOLS_FLOW = Path(__file__).resolve().parent / "peers" / "tpm2_tools_flow.sh"

pytestmark = pytest.mark.skipif(shutil.which("tpm2_unseal") is None,
                                reason="tpm2-tools is not installed (apt-get install tpm2-tools)")


def tools(sim: Simulator, cwd: Path, *argv: str) -> str:
    """Run one tpm2-tools command against *sim*; fail with its stderr (never a secret)."""
    env = dict(os.environ, TPM2TOOLS_TCTI=sim.tools_tcti)
    done = subprocess.run(list(argv), cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({done.returncode}): "
                             f"{done.stderr.strip()[-800:]}")
    return done.stdout


def _file_same(path: Path, secret: bytes) -> None:
    same(path.read_bytes(), secret)


@pytest.mark.parametrize("tools_session", ["plain", "salted-encrypt"])
def test_tools_unseal_what_tpmseal_sealed(sim: Simulator, tmp_path: Path,
                                          tools_session: str) -> None:
    secret = new_secret()
    bus = CapturingTransport(open_transport(sim.uri))
    with Tpm(bus) as tpm:
        parent = srk(tpm)  # persisted at 0x81000001, where tpm2-tools can name it
        step = pcr_step(tpm)
        s = salted(tpm, TPM_SE.HMAC, "rsa2048", attributes=CONT | DEC | ENC)
        obj = seal(tpm, parent, secret, sealed_template(policy_for(step)), s)
    for e in bus.exchanges:
        absent(secret, e.command)
    (tmp_path / "seal.pub").write_bytes(obj.public.sized())       # TPM2B_PUBLIC
    (tmp_path / "seal.priv").write_bytes(tpm2b(obj.private))      # TPM2B_PRIVATE
    w = tmp_path
    tools(sim, w, "tpm2_load", "-C", hex(SRK_HANDLE), "-u", "seal.pub", "-r", "seal.priv",
          "-c", "seal.ctx")
    start = ["tpm2_startauthsession", "--policy-session", "-S", "pol.ctx"]
    if tools_session == "salted-encrypt":
        start += ["--tpmkey-context", hex(RSA_EK), "-g", "sha256", "-G", "aes"]
    tools(sim, w, *start)
    tools(sim, w, "tpm2_policypcr", "-S", "pol.ctx", "-l", PCRS_TOOLS)
    if tools_session == "salted-encrypt":
        tools(sim, w, "tpm2_sessionconfig", "--enable-encrypt", "pol.ctx")
    tools(sim, w, "tpm2_unseal", "-c", "seal.ctx", "-p", "session:pol.ctx", "-o", "out.bin")
    tools(sim, w, "tpm2_flushcontext", "pol.ctx")
    tools(sim, w, "tpm2_flushcontext", "-t")
    _file_same(w / "out.bin", secret)


def test_tpmseal_unseals_what_tools_sealed(sim: Simulator, tmp_path: Path) -> None:
    """tpm2_tools_flow.sh provision + seal (salted HMAC session, --enable-decrypt Create)."""
    with Tpm(open_transport(sim.uri)) as tpm:
        srk(tpm)
    env = dict(os.environ, TPM2TOOLS_TCTI=sim.tools_tcti, EK_HANDLE=hex(RSA_EK),
               SRK_HANDLE=hex(SRK_HANDLE), WORKDIR=str(tmp_path))
    done = subprocess.run(["bash", str(TOOLS_FLOW), "provision", "seal"], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-800:]
    secret = (tmp_path / "secret.bin").read_bytes()
    public = Public.from_sized((tmp_path / "seal.pub").read_bytes())
    private = Reader((tmp_path / "seal.priv").read_bytes()).tpm2b("TPM2B_PRIVATE")
    bus = CapturingTransport(open_transport(sim.uri))
    with Tpm(bus) as tpm:
        step = pcr_step(tpm)
        assert public.auth_policy == policy_for(step)  # tools' trial session = our calculator
        hmac_s = salted(tpm, TPM_SE.HMAC, "p256", attributes=CONT | DEC | ENC)
        handle = tpm.run(c.Load(SRK_HANDLE, private, public), hmac_s).object_handle
        pol = salted(tpm, TPM_SE.POLICY, "rsa2048", attributes=ENC)
        tpm.run_policy(pol, [step])
        same(tpm.run(c.Unseal(handle), pol).out_data, secret)
    unseal = [e for e in bus.exchanges if e.code == TPM_CC.Unseal]
    assert unseal
    absent(secret, unseal[-1].response or b"")
    # and the tools' own unseal step still works on the same blob (sanity of the fixture)
    done = subprocess.run(["bash", str(TOOLS_FLOW), "unseal"], env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-800:]


def test_tpmseal_loads_tools_blob_through_own_helpers(sim: Simulator, tmp_path: Path) -> None:
    """A tpm2_create'd object (no PCR policy, userWithAuth + password) unsealed by tpmseal."""
    with Tpm(open_transport(sim.uri)) as tpm:
        srk(tpm)
    secret = new_secret()
    (tmp_path / "secret.bin").write_bytes(secret)
    tools(sim, tmp_path, "tpm2_create", "-C", hex(SRK_HANDLE), "-g", "sha256",
          "-a", "fixedtpm|fixedparent|userwithauth|noda", "-p", "pin123",
          "-i", "secret.bin", "-u", "o.pub", "-r", "o.priv")
    tools(sim, tmp_path, "tpm2_flushcontext", "-t")
    public = Public.from_sized((tmp_path / "o.pub").read_bytes())
    private = Reader((tmp_path / "o.priv").read_bytes()).tpm2b("TPM2B_PRIVATE")
    with Tpm(open_transport(sim.uri)) as tpm:
        obj = Sealed(private, public)
        load(tpm, SRK_HANDLE, obj)
        s = salted(tpm, TPM_SE.HMAC, "p384", attributes=ENC)
        s.auth_value = b"pin123"
        same(tpm.run(c.Unseal(obj.handle), s).out_data, secret)


@pytest.mark.parametrize(("alg", "template"), [("rsa", EK_RSA_TEMPLATE),
                                               ("ecc", EK_ECC_TEMPLATE)])
def test_ek_matches_tpm2_createek(blank_sim: Simulator, tmp_path: Path, alg: str,
                                  template: Public) -> None:
    with Tpm(open_transport(blank_sim.uri)) as tpm:
        ours = tpm.run(c.CreatePrimary(TPM_RH.ENDORSEMENT, SensitiveCreate(), template))
        assert ours.out_public.name() == ours.name
    tools(blank_sim, tmp_path, "tpm2_createek", "-c", "ek.ctx", "-G", alg, "-u", "ek.pub",
          "-f", "tss")
    tools(blank_sim, tmp_path, "tpm2_flushcontext", "-t")
    theirs = Public.from_sized((tmp_path / "ek.pub").read_bytes())
    assert theirs.unique == ours.out_public.unique  # the same key from the same seed
    assert theirs == ours.out_public
    assert theirs.name() == ours.name


@pytest.mark.parametrize("handle", [0x81010001, 0x81010016])
def test_ek_name_from_read_public(sim: Simulator, tmp_path: Path, handle: int) -> None:
    with Tpm(open_transport(sim.uri)) as tpm:
        r = tpm.run(c.ReadPublic(handle))
        assert r.out_public.name() == r.name
        assert tpm.read_public(handle) == r.out_public
        assert tpm.name_of(handle) == r.name
    tools(sim, tmp_path, "tpm2_readpublic", "-c", hex(handle), "-n", "name.bin", "-o", "pub.bin")
    assert (tmp_path / "name.bin").read_bytes() == r.name
    assert Public.from_sized((tmp_path / "pub.bin").read_bytes()) == r.out_public
