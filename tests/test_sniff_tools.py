"""tpm2-tools (an independent TSS) through the sniffer, over the swtpm TCTI."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tpmseal.sniff.analysis.render import render_exchange
from tpmseal.sniff.capture.proxy import Proxy
from tpmseal.wire.constants import TPM_CC

pytestmark = pytest.mark.skipif(shutil.which("tpm2_createprimary") is None,
                                reason="tpm2-tools is not installed (Debian `tpm2-tools`)")


def tools(proxy: Proxy, *argv: str) -> str:
    env = {**os.environ, "TPM2TOOLS_TCTI": proxy.tools_tcti}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_tpm2_getrandom(sniffed: Proxy) -> None:
    got = bytes.fromhex(tools(sniffed, "tpm2_getrandom", "16", "--hex"))
    ex = [e for e in sniffed.exchanges if e.code == TPM_CC.GetRandom][-1]
    assert ex.response is not None and ex.response.endswith(got) and len(got) == 16
    assert len({e.client for e in sniffed.exchanges}) >= 1


def test_tpm2_createprimary(sniffed: Proxy, tmp_path: Path) -> None:
    tools(sniffed, "tpm2_createprimary", "-C", "o", "-c", str(tmp_path / "primary.ctx"))
    tools(sniffed, "tpm2_flushcontext", "-t")
    names = [e.name for e in sniffed.exchanges]
    assert "CreatePrimary" in names and "FlushContext" in names
    create = next(e for e in sniffed.exchanges if e.code == TPM_CC.CreatePrimary)
    assert create.rc == 0
    text = render_exchange(create)
    assert "primary_handle: 0x40000001 (OWNER)" in text
    assert "object_handle: 0x80" in text and "(transient)" in text
    assert "decode error" not in text
