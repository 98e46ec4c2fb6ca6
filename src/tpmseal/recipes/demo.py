"""The demonstration behind ``tpmseal demo`` (and ``make demo``).

On a simulator it starts itself (swtpm with an EK certificate from a private
CA), with the sniffer proxy in front, it provisions the TPM (verifying the EK
certificate), simulates a measured boot, then seals and unseals one random
32-byte key twice: on the legacy path (password sessions, as a TPM without
AES-128-CFB must) and on the encrypted path. The sniffer's exchanges of each
path are scanned for the key — the seed's sniffer table, as a verdict.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tpmseal.client.tpm import Tpm
from tpmseal.recipes import sealing
from tpmseal.recipes.policies import SealPolicy
from tpmseal.recipes.profiles import TCG
from tpmseal.recipes.provision import ProvisionResult, provision
from tpmseal.recipes.trust import TrustRecord, load
from tpmseal.sniff.analysis.leaks import scan
from tpmseal.sniff.analysis.record import Exchange
from tpmseal.sniff.capture.proxy import Proxy
from tpmseal.transport.simulator import Simulator
from tpmseal.wire import commands as cmds
from tpmseal.wire.constants import HASH_SIZES
from tpmseal.wire.structures import DigestValues, digest


@dataclass(frozen=True)
class PathRun:
    """What crossed the bus while one path sealed and unsealed the key."""

    path: str
    seal: list[Exchange]
    unseal: list[Exchange]
    leaked_in: list[str]  # "Create command", "Unseal response", ...

    def exchange(self, code: int) -> Exchange:
        return next(e for e in self.seal + self.unseal if e.code == code)

    @property
    def verdict(self) -> str:
        if self.leaked_in:
            return f"{self.path}: key visible on the bus in {' and '.join(self.leaked_in)}"
        return f"{self.path}: key never on the bus"


@dataclass(frozen=True)
class DemoRun:
    secret: bytes
    provisioned: ProvisionResult
    runs: list[PathRun]

    def __repr__(self) -> str:
        return f"DemoRun(runs={[r.verdict for r in self.runs]})"


def measured_boot(tpm: Tpm, components: int = 8) -> None:
    """Extend PCRs 0..components-1 in every bank, as firmware and boot loader would."""
    for pcr in range(components):
        event = f"tpmseal demo boot component {pcr}".encode()
        tpm.run(cmds.PCR_Extend(pcr, DigestValues(tuple(
            (alg, digest(alg, event)) for alg in HASH_SIZES))))


def _leaks(exchanges: list[Exchange], secret: bytes) -> list[str]:
    where: list[str] = []
    for leak in scan(exchanges, [secret]):
        label = f"{leak.command} {leak.direction}"
        if label not in where:
            where.append(label)
    return where


def run(state: Path | None = None) -> DemoRun:
    """Run the demo; the simulator lives in *state* (a temporary directory if None)."""
    tmp = Path(tempfile.mkdtemp(prefix="tpmseal-demo-", dir="/tmp")) if state is None else None
    base = state or tmp
    assert base is not None
    sim = Simulator(base / "tpm")
    try:
        sim.start(ek_cert=True)
        with Proxy(f"unix:{base / 'bus.sock'}", sim.uri) as proxy, Tpm.open(proxy.uri) as tpm:
            trust_file = base / "trust.json"
            prov = provision(tpm, TCG, trust_file=trust_file, ek_ca=str(sim.ca_dir))
            rec = load(trust_file, TCG.name)
            measured_boot(tpm)
            secret = os.urandom(32)
            runs = [_run_path(proxy, tpm, secret, rec, legacy) for legacy in (True, False)]
        return DemoRun(secret, prov, runs)
    finally:
        sim.stop()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _run_path(proxy: Proxy, tpm: Tpm, secret: bytes, rec: TrustRecord,
              legacy: bool) -> PathRun:
    proxy.clear()
    start = tpm.commands_sent
    blob = sealing.seal(tpm, secret, SealPolicy(TCG.default_pcrs), trust=rec, legacy=legacy)
    seal_ex = list(proxy.wait_for(tpm.commands_sent - start))
    proxy.clear()
    start = tpm.commands_sent
    out = sealing.unseal(tpm, blob, legacy=legacy, allow_downgrade=legacy, trust=rec)
    unseal_ex = list(proxy.wait_for(tpm.commands_sent - start))
    if out != secret:
        raise AssertionError("demo: unsealed key differs from the sealed one")
    return PathRun("legacy" if legacy else "encrypted", seal_ex, unseal_ex,
                   _leaks(seal_ex + unseal_ex, secret))

