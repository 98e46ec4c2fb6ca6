#!/usr/bin/env python3
"""Per-operation timings of tpmseal's session layer against swtpm.

Starts a private swtpm (with swtpm_setup's RSA-2048 EK at 0x81010001 and ECC
P-384 EK at 0x81010016; a P-256 EK from the TCG L-2 template and the SRK are
created and persisted), then times each operation N times and prints the
median of:

* wall   - the whole client call (marshaling, salt, KDFs, HMACs, AES-CFB, I/O);
* tpm    - the sum of the round trips measured at the transport (send → whole
           response), i.e. what the TPM (plus the socket) spends;
* client - wall minus tpm: tpmseal's own overhead.

Usage: python bench/bench_sessions.py [-n 50] [--state DIR] [--keep]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tpmseal.client.tpm import Tpm
from tpmseal.recipes.templates import EK_ECC_TEMPLATE, SRK_RSA_TEMPLATE, sealed_template
from tpmseal.session.auth import AuthSession, PasswordSession
from tpmseal.session.policy import PcrStep, compute_policy, pcr_digest
from tpmseal.transport.base import Transport, open_transport
from tpmseal.transport.simulator import Simulator
from tpmseal.wire import commands as c
from tpmseal.wire.constants import TPM_ALG, TPM_RH, TPM_SE, TPMA_SESSION
from tpmseal.wire.rc import TpmResponseError
from tpmseal.wire.structures import PcrSelection, PcrSelectionList, Public, SensitiveCreate

SRK = 0x81000001
EKS = {"RSA-2048": 0x81010001, "ECC P-256": 0x81010002, "ECC P-384": 0x81010016}
PCRS = PcrSelectionList((PcrSelection(TPM_ALG.SHA256, (0, 1, 2, 3, 4, 6, 7)),))
DEC, ENC, CONT = TPMA_SESSION.decrypt, TPMA_SESSION.encrypt, TPMA_SESSION.continueSession


@dataclass
class TimingTransport:
    """Adds up the time spent inside ``send`` (one TPM round trip each)."""

    inner: Transport
    spent: float = 0.0
    count: int = 0

    @property
    def uri(self) -> str:
        return self.inner.uri

    def send(self, command: bytes) -> bytes:
        t0 = time.perf_counter()
        response = self.inner.send(command)
        dt = time.perf_counter() - t0
        self.spent += dt
        self.count += 1
        return response

    def close(self) -> None:
        self.inner.close()


@dataclass
class Row:
    name: str
    wall: list[float] = field(default_factory=list)
    tpm: list[float] = field(default_factory=list)
    commands: list[int] = field(default_factory=list)

    def line(self) -> str:
        wall = statistics.median(self.wall) * 1000
        tpm = statistics.median(self.tpm) * 1000
        client = statistics.median(w - t for w, t in zip(self.wall, self.tpm, strict=True))
        cmds = statistics.median(self.commands)
        return (f"{self.name:<44} {wall:8.3f} {tpm:8.3f} {client * 1000:9.3f} "
                f"{cmds:5.0f}")


class Bench:
    def __init__(self, tpm: Tpm, timing: TimingTransport, n: int) -> None:
        self.tpm, self.timing, self.n = tpm, timing, n
        self.rows: list[Row] = []

    def time(self, name: str, op: Callable[[], object],
             setup: Callable[[], object] | None = None,
             teardown: Callable[[], object] | None = None) -> None:
        row = Row(name)
        for i in range(self.n + 1):  # the first run warms up (and meets swtpm's first RETRY)
            if setup is not None:
                setup()
            spent0, count0 = self.timing.spent, self.timing.count
            t0 = time.perf_counter()
            op()
            wall = time.perf_counter() - t0
            if i:
                row.wall.append(wall)
                row.tpm.append(self.timing.spent - spent0)
                row.commands.append(self.timing.count - count0)
            if teardown is not None:
                teardown()
        self.rows.append(row)


def ensure(tpm: Tpm, handle: int, hierarchy: int, template: Public) -> Public:
    try:
        return tpm.read_public(handle)
    except TpmResponseError:
        made = tpm.run(c.CreatePrimary(hierarchy, SensitiveCreate(), template))
        tpm.run(c.EvictControl(TPM_RH.OWNER, made.object_handle, handle))
        tpm.flush(made.object_handle)
        return tpm.read_public(handle)


def run(n: int, state: str) -> list[Row]:
    sim = Simulator(state)
    sim.start(ek_cert=True)
    try:
        timing = TimingTransport(open_transport(sim.uri))
        with Tpm(timing) as tpm:
            ensure(tpm, SRK, TPM_RH.OWNER, SRK_RSA_TEMPLATE)
            ensure(tpm, EKS["ECC P-256"], TPM_RH.ENDORSEMENT, EK_ECC_TEMPLATE)
            eks = {name: (h, tpm.read_public(h)) for name, h in EKS.items()}
            values = tpm.pcr_read(PCRS)
            step = PcrStep(PCRS, pcr_digest(TPM_ALG.SHA256, [values[p] for p in PCRS.pairs()]))
            template = sealed_template(compute_policy([step]))
            return measure(Bench(tpm, timing, n), eks, step, template)
    finally:
        sim.stop()


def measure(b: Bench, eks: dict[str, tuple[int, Public]], step: PcrStep,
            template: Public) -> list[Row]:
    tpm = b.tpm
    holder: dict[str, AuthSession] = {}
    handles: list[int] = []

    def salted(kind: int, ek: str, attributes: int) -> AuthSession:
        h, pub = eks[ek]
        return tpm.start_session(kind, salt_key=pub, salt_handle=h, attributes=attributes)

    for ek in EKS:
        def start(ek: str = ek) -> None:
            holder["s"] = salted(TPM_SE.HMAC, ek, CONT)

        b.time(f"StartAuthSession salted ({ek})", start,
               teardown=lambda: tpm.flush(holder["s"].handle))

    hmac_s = salted(TPM_SE.HMAC, "RSA-2048", CONT | DEC)
    secret = os.urandom(32)
    blobs: list[c.CreateResponse] = []
    b.time("Create sealed object, encrypted inSensitive",
           lambda: blobs.append(tpm.run(c.Create(SRK, SensitiveCreate(b"", secret), template),
                                        hmac_s)))
    tpm.flush(hmac_s.handle)
    blob = blobs[0]

    def load() -> None:
        handles.append(tpm.run(c.Load(SRK, blob.out_private, blob.out_public)).object_handle)

    def flush_loaded() -> None:
        while handles:
            tpm.flush(handles.pop())

    b.time("Load (password session)", load, teardown=flush_loaded)

    def policy_session() -> None:
        holder["p"] = salted(TPM_SE.POLICY, "RSA-2048", ENC)

    def flush_policy() -> None:
        if not holder["p"].ended:
            tpm.flush(holder["p"].handle)

    b.time("PolicyPCR (7 PCRs)", lambda: tpm.run_policy(holder["p"], [step]),
           setup=policy_session, teardown=flush_policy)

    load()

    def policy_ready() -> None:  # confirmed first, as the confirmation rule requires
        policy_session()
        tpm.confirm(holder["p"])
        tpm.run_policy(holder["p"], [step])

    def unseal() -> None:
        out = tpm.run(c.Unseal(handles[0]), holder["p"]).out_data
        if out != secret:
            raise SystemExit("unsealed data differs from the secret")

    b.time("Unseal, encrypted outData", unseal, setup=policy_ready)
    flush_loaded()

    for ek in ("RSA-2048", "ECC P-256", "ECC P-384"):
        def flow(ek: str = ek) -> None:  # tpmseal's order: Load confirms the salted session
            pol = salted(TPM_SE.POLICY, ek, CONT | DEC)
            h = tpm.run(c.Load(SRK, blob.out_private, blob.out_public), PasswordSession(),
                        pol).object_handle
            pol.attributes = ENC
            tpm.run_policy(pol, [step])
            out = tpm.run(c.Unseal(h), pol).out_data
            tpm.flush(h)
            if out != secret:
                raise SystemExit("unsealed data differs from the secret")

        b.time(f"whole unseal flow ({ek} salt)", flow)
    return b.rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("-n", type=int, default=50, help="runs per operation (median; default 50)")
    ap.add_argument("--state", help="simulator state directory (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the state directory")
    args = ap.parse_args(argv)
    state = args.state or tempfile.mkdtemp(prefix="tpmseal-bench-", dir="/tmp")
    try:
        rows = run(args.n, state)
    finally:
        if not args.keep and not args.state:
            shutil.rmtree(state, ignore_errors=True)
    version = subprocess.run(["swtpm", "--version"], capture_output=True, text=True,
                             check=False).stdout.strip()
    print(f"tpmseal session benchmark: median of {args.n} runs against {version}")
    print(f"python {sys.version.split()[0]}; times in ms; tpm = sum of round trips at the "
          "transport; client = wall - tpm")
    print(f"{'operation':<44} {'wall':>8} {'tpm':>8} {'client':>9} {'cmds':>5}")
    for row in rows:
        print(row.line())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
