#!/usr/bin/env python3
"""tpmseal against its peers on one swtpm: seal and unseal a 32-byte key.

Starts two private swtpm simulators (one provisioned by tpmseal for the ``tcg``
profile, one for ``eve``) and extends PCRs 0-7 as a measured boot would. Every
tool then seals its own key on the encrypted path (an EK-salted session with
AES-128-CFB parameter encryption, so the key never crosses the bus in clear)
and unseals it, in two passes over the same TPM:

1. *direct*: each tool talks to swtpm's socket itself; this gives the wall
   times, and the ratios between them;
2. *counted*: each tool talks to tpmseal's recording proxy
   (:class:`tpmseal.sniff.capture.proxy.Proxy`) in front of the same swtpm, which
   records every command and how long swtpm took to answer it. The proxy costs
   each new connection about a millisecond, and tss2's swtpm TCTI (tpm2-tools,
   tpm2-pytss) opens one per command, so wall times are not taken here.

Columns (medians):

* wall  - one operation as its user sees it: in-process for the Python APIs
          (tpmseal, tpm2-pytss ESAPI), the whole process for command-line tools
          (``tpmseal`` CLI, tpm2-tools via tests/peers/tpm2_tools_flow.sh);
* cmds  - TPM commands per operation;
* TPM   - time inside swtpm per operation (sum of the proxy's upstream round trips);
* ratio - peer wall / tpmseal wall of the same kind: in-process peers against
          the tpmseal API, processes against the tpmseal CLI.

tpm2-pytss (Debian ``python3-tpm2-pytss``, built for the system python) runs in
a ``/usr/bin/python3`` subprocess that times itself; in the counted pass its
commands are matched to its runs by the time windows it reports. EVE's command
sequences are replayed and timed by bench/bench_chip.py; nothing here is a
figure this script did not measure.

Usage: python bench/bench_unseal.py [--runs N] [--json] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tpmseal.client.tpm import Tpm
from tpmseal.recipes import sealing, signed, signer
from tpmseal.recipes.blob import SealedBlob
from tpmseal.recipes.lifecycle import UnsealOptions, unseal_stored
from tpmseal.recipes.pcrspec import format_pcrs
from tpmseal.recipes.policies import signed_by
from tpmseal.recipes.profiles import EVE, TCG, Profile
from tpmseal.recipes.provision import provision
from tpmseal.recipes.stores import FileStore, NvStore
from tpmseal.recipes.trust import TrustRecord
from tpmseal.recipes.trust import load as load_trust
from tpmseal.session.policy import pcr_digest
from tpmseal.sniff.capture.proxy import Proxy
from tpmseal.transport.simulator import Simulator
from tpmseal.wire import commands as cmds
from tpmseal.wire.constants import TPM_ALG, TPM_CAP
from tpmseal.wire.structures import DigestValues, digest

TOOLS_FLOW = Path(__file__).resolve().parents[1] / "tests" / "peers" / "tpm2_tools_flow.sh"
SYSTEM_PYTHON = "/usr/bin/python3"
PYTSS_MISSING = "not installed: apt-get install python3-tpm2-pytss"
TOOLS_MISSING = "not installed: apt-get install tpm2-tools"

#: GetCapability(HANDLES) ranges a tool without a resource manager may leave behind:
#: transient objects, loaded sessions, saved sessions (sessions come back as 0x02/0x03).
LEFTOVER_RANGES = (0x80000000, 0x02000000, 0x03000000)
SESSION_TYPES = (0x02, 0x03)

KEY_BYTES = 32
COUNTED_RUNS = 5  # runs through the proxy (counts are the same every run)
TOOL_RUNS = 10  # tpm2-tools runs at most this often (each run is ~8 processes)


# ------------------------------------------------------------------------------ records


@dataclass(frozen=True)
class Sample:
    """One operation: wall seconds, and what the proxy saw inside its time window."""

    wall: float
    commands: tuple[str, ...] = ()
    tpm: float = 0.0


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


@dataclass
class Row:
    group: str
    tool: str
    how: str  # "in-process" | "process"
    direct: list[Sample] = field(default_factory=list)
    counted: list[Sample] = field(default_factory=list)
    note: str = ""
    base: Row | None = None

    @property
    def wall_ms(self) -> float | None:
        m = _median([s.wall for s in self.direct])
        return None if m is None else m * 1000

    @property
    def proxied_wall_ms(self) -> float | None:
        m = _median([s.wall for s in self.counted])
        return None if m is None else m * 1000

    @property
    def tpm_ms(self) -> float | None:
        m = _median([s.tpm for s in self.counted])
        return None if m is None else m * 1000

    @property
    def commands(self) -> float | None:
        return _median([float(len(s.commands)) for s in self.counted])

    @property
    def sequence(self) -> list[str]:
        """The commands of the last counted run (every run sends the same here)."""
        return list(self.counted[-1].commands) if self.counted else []

    def ratio(self) -> tuple[float, str] | None:
        """(peer/ours, "wall" or "cmds"), or None for a base row or without data."""
        if self.base is None:
            return None
        mine, ours = self.wall_ms, self.base.wall_ms
        if mine is not None and ours:
            return mine / ours, "wall"
        n, base_n = self.commands, self.base.commands
        if n is not None and base_n:
            return n / base_n, "cmds"
        return None

    def to_json(self) -> dict[str, Any]:
        r = self.ratio()
        return {
            "group": self.group, "tool": self.tool, "how": self.how,
            "runs": len(self.direct), "counted_runs": len(self.counted),
            "wall_ms": self.wall_ms, "wall_via_proxy_ms": self.proxied_wall_ms,
            "tpm_ms": self.tpm_ms, "tpm_commands": self.commands, "commands": self.sequence,
            "ratio": r[0] if r else None, "ratio_of": r[1] if r else None,
            "ratio_base": self.base.tool if self.base else None, "note": self.note,
        }


# ------------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    """Where the tools connect in one pass: swtpm itself, or the recording proxy."""

    uri: str  # tpmseal's --tpm
    tcti: str  # tss2's TCTI (TPM2TOOLS_TCTI, ESAPI)
    proxy: Proxy | None = None

    def window(self, w0: float, w1: float) -> tuple[tuple[str, ...], float]:
        """The commands the proxy received between wall-clock times w0 and w1."""
        if self.proxy is None:
            return (), 0.0
        inside = [e for e in self.proxy.exchanges if w0 <= e.started <= w1]
        return tuple(e.name for e in inside), sum(e.tpm_seconds or 0.0 for e in inside)

    def run(self, runs: int, op: Callable[[], object],
            after: Callable[[], object] | None = None) -> list[Sample]:
        """Time *op* runs+1 times (the first warms up); *after* runs outside the window."""
        samples: list[Sample] = []
        for i in range(runs + 1):
            if self.proxy is not None:
                self.proxy.clear()
            w0 = time.time()
            t0 = time.perf_counter()
            op()
            wall = time.perf_counter() - t0
            w1 = time.time()
            if i:
                names, tpm = self.window(w0, w1)
                samples.append(Sample(wall, names, tpm))
            if after is not None:
                after()
        return samples


@contextlib.contextmanager
def targets(sim: Simulator, base: Path) -> Iterator[Iterator[Target]]:
    """The direct target, then (the simulator's one connection handed over) a proxy."""
    def gen() -> Generator[Target, None, None]:
        yield Target(sim.uri, sim.tools_tcti)
        listen = f"unix:{base / (sim.state.name + '-proxy.sock')}"
        with Proxy(listen, sim.uri) as proxy:
            yield Target(proxy.uri, proxy.tools_tcti, proxy)

    g = gen()
    try:
        yield g
    finally:
        g.close()  # stops the proxy if a pass failed inside it


def flush_leftovers(uri: str) -> int:
    """Flush every transient object and session in the TPM; return how many there were."""
    n = 0
    with Tpm.open(uri) as tpm:
        for first in LEFTOVER_RANGES:
            for (h,) in tpm.capability(TPM_CAP.HANDLES, first):
                if h >> 24 == first >> 24 or (first >> 24 in SESSION_TYPES
                                              and h >> 24 in SESSION_TYPES):
                    tpm.run(cmds.FlushContext(h))
                    n += 1
    return n


def measure_boot(tpm: Tpm) -> None:
    """Extend PCRs 0-7 of every allocated bank, as firmware and boot loader would."""
    banks = [s.hash_alg for s in tpm.pcr_banks().selections if s.pcrs]
    for pcr in range(8):
        event = f"boot component {pcr}".encode()
        tpm.run(cmds.PCR_Extend(pcr, DigestValues(tuple(
            (alg, digest(alg, event)) for alg in banks))))


@dataclass
class Machine:
    """A provisioned, measured simulator for one profile."""

    profile: Profile
    sim: Simulator
    trust_file: Path
    trust: TrustRecord

    @property
    def pcrs(self) -> str:
        return format_pcrs(self.profile.default_pcrs)


@contextlib.contextmanager
def simulator(base: Path, profile: Profile) -> Iterator[Machine]:
    sim = Simulator(base / profile.name)
    try:
        sim.start()
        trust_file = sim.state / "trust.json"
        with Tpm.open(sim.uri) as tpm:
            # RSA: bench/floor_unseal.py speaks only RSA-OAEP salts, and the rows compared
            # with it (bench_cli.py) and the chip model's RSA rows (bench_chip.py) need it
            provision(tpm, profile, ek_type="rsa", trust_file=trust_file)
            measure_boot(tpm)
        yield Machine(profile, sim, trust_file, load_trust(trust_file, profile.name))
    finally:
        sim.stop()


# ---------------------------------------------------------------------------- the peers


def _check(out: bytes, key: bytes, who: str) -> None:
    if out != key:
        raise SystemExit(f"{who}: the unsealed key differs from the sealed one")


def _run(argv: list[str], env: dict[str, str] | None = None, *, who: str) -> bytes:
    done = subprocess.run(argv, capture_output=True, env=env, check=False, timeout=120)
    if done.returncode != 0:
        raise SystemExit(f"{who} failed (exit {done.returncode}): "
                         f"{done.stderr.decode(errors='replace').strip()[-600:]}")
    return done.stdout


def tpmseal_cli() -> list[str]:
    """The ``tpmseal`` console script of this interpreter's environment."""
    here = Path(sys.executable).parent / "tpmseal"
    if here.exists():
        return [str(here)]
    found = shutil.which("tpmseal")
    return [found] if found else [sys.executable, "-m", "tpmseal.cli.main"]


def tools_version() -> str | None:
    exe = shutil.which("tpm2_unseal")
    if exe is None:
        return None
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False).stdout
    m = re.search(r'version="?([^"\s]+)', out)
    return m.group(1) if m else out.strip() or "?"


PYTSS_PEER = textwrap.dedent('''\
    """tpm2-pytss ESAPI peer of bench_unseal.py: seal or unseal RUNS+1 times, time each."""
    import hashlib, json, sys, time
    from tpm2_pytss import ESAPI
    from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_SE, TPMA_OBJECT, TPMA_SESSION
    from tpm2_pytss.types import (TPM2B_PRIVATE, TPM2B_PUBLIC, TPM2B_SENSITIVE_CREATE,
                                  TPM2B_SENSITIVE_DATA, TPML_PCR_SELECTION,
                                  TPMS_SENSITIVE_CREATE, TPMT_PUBLIC, TPMT_SYM_DEF)

    mode, tcti, ek_h, srk_h, pcrs, workdir, runs = sys.argv[1:8]
    AES = TPMT_SYM_DEF(algorithm=TPM2_ALG.AES)
    AES.keyBits.aes = 128
    AES.mode.aes = TPM2_ALG.CFB
    sel = TPML_PCR_SELECTION.parse(pcrs)
    esys = ESAPI(tcti)
    ek = esys.tr_from_tpmpublic(int(ek_h, 16))  # ReadPublic: once, outside the timing
    srk = esys.tr_from_tpmpublic(int(srk_h, 16))
    key = open(workdir + "/secret.bin", "rb").read()

    def salted(kind, attrs):
        s = esys.start_auth_session(tpm_key=ek, bind=ESYS_TR.NONE, session_type=kind,
                                    symmetric=AES, auth_hash=TPM2_ALG.SHA256)
        esys.trsess_set_attributes(s, attrs)  # continueSession clear: Create/Unseal ends it
        return s

    def seal():
        s = salted(TPM2_SE.HMAC, TPMA_SESSION.DECRYPT)
        _, _, values = esys.pcr_read(sel)
        pcr_digest = hashlib.sha256(b"".join(bytes(values[i]) for i in range(len(values))))
        policy = hashlib.sha256(bytes(32) + (0x17F).to_bytes(4, "big") + sel.marshal()
                                + pcr_digest.digest()).digest()
        public = TPM2B_PUBLIC(publicArea=TPMT_PUBLIC(
            type=TPM2_ALG.KEYEDHASH, nameAlg=TPM2_ALG.SHA256, authPolicy=policy,
            objectAttributes=(TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT
                              | TPMA_OBJECT.ADMINWITHPOLICY)))
        public.publicArea.parameters.keyedHashDetail.scheme.scheme = TPM2_ALG.NULL
        sensitive = TPM2B_SENSITIVE_CREATE(TPMS_SENSITIVE_CREATE(
            data=TPM2B_SENSITIVE_DATA(key)))
        priv, pub, _, _, _ = esys.create(srk, sensitive, public, session1=s)
        return priv, pub

    def unseal():
        with open(workdir + "/seal.priv", "rb") as f:
            priv = TPM2B_PRIVATE.unmarshal(f.read())[0]
        with open(workdir + "/seal.pub", "rb") as f:
            pub = TPM2B_PUBLIC.unmarshal(f.read())[0]
        obj = esys.load(srk, priv, pub)
        s = salted(TPM2_SE.POLICY, TPMA_SESSION.ENCRYPT)
        esys.policy_pcr(s, b"", sel)
        out = bytes(esys.unseal(obj, session1=s))
        esys.flush_context(obj)
        if out != key:
            raise SystemExit("tpm2-pytss: the unsealed key differs from the sealed one")

    times = []
    for _ in range(int(runs) + 1):
        w0 = time.time()
        t0 = time.perf_counter()
        result = seal() if mode == "seal" else unseal()
        dt = time.perf_counter() - t0
        times.append([w0, time.time(), dt])
    if mode == "seal":
        with open(workdir + "/seal.priv", "wb") as f:
            f.write(result[0].marshal())
        with open(workdir + "/seal.pub", "wb") as f:
            f.write(result[1].marshal())
    esys.close()
    json.dump({"times": times[1:]}, sys.stdout)
''')


class Pytss:
    """The tpm2-pytss ESAPI peer, run by the system python in a subprocess."""

    def __init__(self, base: Path) -> None:
        self.dir = base / "pytss"
        self.script = base / "pytss_peer.py"
        self.version = self._version()

    @staticmethod
    def _version() -> str | None:
        if not Path(SYSTEM_PYTHON).exists():
            return None
        done = subprocess.run(
            [SYSTEM_PYTHON, "-c", "import importlib.metadata as m, tpm2_pytss; "
                                  "print(m.version('tpm2-pytss'))"],
            capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else None

    def prepare(self, key: bytes) -> None:
        self.dir.mkdir(exist_ok=True)
        (self.dir / "secret.bin").write_bytes(key)
        self.script.write_text(PYTSS_PEER)

    def run(self, m: Machine, target: Target, mode: str, runs: int) -> list[Sample]:
        argv = [SYSTEM_PYTHON, str(self.script), mode, target.tcti,
                f"{m.trust.ek_handle:#x}", f"{m.trust.srk_handle:#x}", m.pcrs, str(self.dir),
                str(runs)]
        if target.proxy is not None:
            target.proxy.clear()
        out = json.loads(_run(argv, who=f"tpm2-pytss {mode}"))
        samples = []
        for w0, w1, dt in out["times"]:
            names, tpm = target.window(w0, w1)
            samples.append(Sample(dt, names, tpm))
        return samples


# ------------------------------------------------------------------------------- bench


@dataclass
class Bench:
    runs: int
    base: Path
    pytss: Pytss
    tools_flow: str | None
    cli: list[str] = field(default_factory=tpmseal_cli)
    rows: dict[tuple[str, str], Row] = field(default_factory=dict)
    leftovers: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # An installed tool runs from cached bytecode; this environment may forbid writing
        # it (PYTHONDONTWRITEBYTECODE), which would recompile tpmseal in every CLI process.
        self.cli_env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        self.cli_env["PYTHONPYCACHEPREFIX"] = str(self.base / "pycache")

    def row(self, group: str, tool: str, how: str, base: Row | None = None,
            note: str = "") -> Row:
        key = (group, tool)
        if key not in self.rows:
            self.rows[key] = Row(group, tool, how, note=note, base=base)
        return self.rows[key]

    @staticmethod
    def record(row: Row, target: Target, samples: list[Sample]) -> Row:
        (row.direct if target.proxy is None else row.counted).extend(samples)
        return row

    def n(self, target: Target, tool: bool = False) -> int:
        n = self.runs if target.proxy is None else min(self.runs, COUNTED_RUNS)
        return min(n, TOOL_RUNS) if tool else n

    def cli_argv(self, m: Machine, target: Target, *args: str) -> list[str]:
        return [*self.cli, "--tpm", target.uri, "--trust-file", str(m.trust_file), *args]

    def tools_env(self, m: Machine, target: Target, workdir: Path) -> dict[str, str]:
        return {**os.environ, "TPM2TOOLS_TCTI": target.tcti,
                "EK_HANDLE": f"{m.trust.ek_handle:#x}", "SRK_HANDLE": f"{m.trust.srk_handle:#x}",
                "WORKDIR": str(workdir), "PCRS": m.pcrs}

    def flusher(self, target: Target, who: str) -> Callable[[], None]:
        def after() -> None:
            self.leftovers[who] = self.leftovers.get(who, 0) + flush_leftovers(target.uri)
        return after

    # ------------------------------------------------------------------ tcg profile

    def tcg(self, m: Machine) -> None:
        keys = {who: os.urandom(KEY_BYTES) for who in ("api", "cli", "tools", "pytss")}
        files = self.base / "tcg-files"
        files.mkdir()
        (files / "cli-key.bin").write_bytes(keys["cli"])
        (files / "tools").mkdir()
        (files / "tools" / "secret.bin").write_bytes(keys["tools"])
        if self.pytss.version is not None:
            self.pytss.prepare(keys["pytss"])
        with targets(m.sim, self.base) as passes:
            for target in passes:
                self.tcg_seal(m, target, keys, files)
                self.tcg_unseal(m, target, keys, files)
                self.tcg_signed(m, target, files)

    def tcg_seal(self, m: Machine, target: Target, keys: dict[str, bytes], files: Path) -> None:
        group = f"seal (encrypted, {m.pcrs})"
        blobs: list[SealedBlob] = []
        with Tpm.open(target.uri) as tpm:
            def api() -> None:
                blobs.append(sealing.seal(tpm, keys["api"], profile=m.profile, trust=m.trust))

            api_row = self.record(self.row(group, "tpmseal API  sealing.seal()", "in-process"),
                                  target, target.run(self.n(target), api))
            FileStore(files / "api-blob.json").save(tpm, blobs[-1])
        self.pytss_row(m, target, group, "seal", api_row)
        argv = self.cli_argv(m, target, "seal", "--input", str(files / "cli-key.bin"),
                             "--output", str(files / "cli-blob.json"), "--force")
        cli_row = self.record(
            self.row(group, "tpmseal CLI  `tpmseal seal`", "process"), target,
            target.run(self.n(target), lambda: _run(argv, self.cli_env, who="tpmseal seal")))
        self.tools_row(m, target, group, "seal", cli_row, files / "tools")

    def tcg_unseal(self, m: Machine, target: Target, keys: dict[str, bytes],
                   files: Path) -> None:
        group = "unseal from a blob"
        opts = UnsealOptions(trust=m.trust)
        store = FileStore(files / "api-blob.json")
        with Tpm.open(target.uri) as tpm:
            def api() -> None:
                _check(unseal_stored(tpm, store, opts), keys["api"], "tpmseal API")

            api_row = self.record(self.row(group, "tpmseal API  unseal_stored()", "in-process"),
                                  target, target.run(self.n(target), api))
        self.pytss_row(m, target, group, "unseal", api_row)
        argv = self.cli_argv(m, target, "unseal", "--input", str(files / "cli-blob.json"),
                             "--output", "-")

        def cli() -> None:
            _check(_run(argv, self.cli_env, who="tpmseal unseal"), keys["cli"], "tpmseal CLI")

        cli_row = self.record(self.row(group, "tpmseal CLI  `tpmseal unseal`", "process"),
                              target, target.run(self.n(target), cli))
        self.tools_row(m, target, group, "unseal", cli_row, files / "tools")

    def tcg_signed(self, m: Machine, target: Target, files: Path) -> None:
        """Unseal a secret sealed to a signer with the policy signed for this state."""
        group = "unseal with a signed policy (PolicyAuthorize)"
        key, secret = signer.generate_key("ecc"), os.urandom(KEY_BYTES)
        sel = m.profile.default_pcrs
        store = FileStore(files / f"signed-{target.proxy is not None}.json")
        with Tpm.open(target.uri) as tpm:
            blob = sealing.seal(tpm, secret, signed_by(key.public_key(), sel),
                                profile=m.profile, trust=m.trust)
            store.save(tpm, blob)
            values = tpm.pcr_read(sel)
            pol = signed.sign(key, sel, pcr_digest(TPM_ALG.SHA256,
                                                   [values[k] for k in sel.pairs()]))
            opts = UnsealOptions(trust=m.trust, policies=(pol,))

            def api() -> None:
                _check(unseal_stored(tpm, store, opts), secret, "tpmseal API (signed)")

            self.record(self.row(group, "tpmseal API  unseal_stored()", "in-process"),
                        target, target.run(self.n(target), api))

    def pytss_row(self, m: Machine, target: Target, group: str, mode: str, base: Row) -> None:
        version = self.pytss.version
        label = f"tpm2-pytss {version} ESAPI" if version else "tpm2-pytss ESAPI"
        note = "reads PCRs outside the session (unaudited)" if mode == "seal" else ""
        row = self.row(group, label, "in-process", base, note if version else PYTSS_MISSING)
        if version is not None:
            self.record(row, target, self.pytss.run(m, target, mode, self.n(target)))
            self.flusher(target, f"tpm2-pytss {mode}")()

    def tools_row(self, m: Machine, target: Target, group: str, step: str, base: Row,
                  workdir: Path) -> None:
        row = self.row(group, f"tpm2-tools  `tpm2_tools_flow.sh {step}`", "process", base,
                       "" if self.tools_flow else tools_missing())
        if self.tools_flow is None:
            return
        argv, env = ["bash", self.tools_flow, step], self.tools_env(m, target, workdir)
        self.record(row, target, target.run(
            self.n(target, tool=True), lambda: _run(argv, env, who=f"tpm2_tools_flow.sh {step}"),
            self.flusher(target, f"tpm2-tools {step}")))

    # ------------------------------------------------------------------ eve profile

    def eve(self, m: Machine) -> None:
        group = f"unseal from EVE's NV layout ({m.pcrs})"
        key = os.urandom(KEY_BYTES)
        store = NvStore.for_profile(m.profile, None, m.trust)
        opts = UnsealOptions(trust=m.trust)
        with Tpm.open(m.sim.uri) as tpm:
            store.save(tpm, sealing.seal(tpm, key, profile=m.profile, trust=m.trust))
        with targets(m.sim, self.base) as passes:
            for target in passes:
                with Tpm.open(target.uri) as tpm:
                    def api(tpm: Tpm = tpm) -> None:
                        _check(unseal_stored(tpm, store, opts), key, "tpmseal API (eve)")

                    self.record(
                        self.row(group, "tpmseal API  unseal_stored(NvStore)", "in-process"),
                        target, target.run(self.n(target), api))
                argv = self.cli_argv(m, target, "unseal", "--profile", "eve", "--nv",
                                     "--output", "-")

                def cli(argv: list[str] = argv) -> None:
                    _check(_run(argv, self.cli_env, who="tpmseal unseal --nv"), key,
                           "tpmseal CLI (eve)")

                self.record(self.row(group, "tpmseal CLI  `unseal --profile eve --nv`",
                                     "process"), target, target.run(self.n(target), cli))


def tools_missing() -> str:
    if not TOOLS_FLOW.exists():
        return f"{TOOLS_FLOW} not found"
    return TOOLS_MISSING


# ------------------------------------------------------------------------------- output


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(runs: int, pytss: str | None, tools: str | None) -> dict[str, Any]:
    swtpm = subprocess.run(["swtpm", "--version"], capture_output=True, text=True,
                           check=False).stdout.strip().splitlines()
    m = re.search(r"version ([\w.]+)", swtpm[0] if swtpm else "")
    return {
        "platform": platform.platform(), "cpu": cpu_model(), "cpus": os.cpu_count(),
        "python": platform.python_version(), "tpmseal": importlib.metadata.version("tpmseal"),
        "swtpm": m.group(1) if m else (swtpm[0] if swtpm else "?"),
        "tpm2_tools": tools, "tpm2_pytss": pytss, "runs": runs,
        "tool_runs": min(runs, TOOL_RUNS), "counted_runs": min(runs, COUNTED_RUNS),
    }


def _num(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def table(info: dict[str, Any], rows: list[Row], leftovers: dict[str, int]) -> str:
    out = [
        "tpmseal vs peers on one swtpm: seal/unseal a 32-byte key (EK-salted session, "
        "AES-128-CFB)",
        f"machine: {info['platform']}; {info['cpus']} CPUs ({info['cpu']}); "
        f"python {info['python']}",
        f"tpmseal {info['tpmseal']}; swtpm {info['swtpm']}; "
        f"tpm2-tools {info['tpm2_tools'] or 'not installed'}; "
        f"tpm2-pytss {info['tpm2_pytss'] or 'not installed'} (system python)",
        f"N={info['runs']} runs per row (tpm2-tools {info['tool_runs']}), medians; "
        f"wall = one operation (in-process, or the whole process), direct to swtpm;",
        f"cmds, TPM = commands and time inside swtpm per operation, from "
        f"{info['counted_runs']} more runs through the recording proxy;",
        "ratio = peer/ours (x: wall time, c: commands): in-process vs tpmseal API, "
        "processes vs tpmseal CLI",
        "",
        f"{'':2}{'tool':<42} {'how':<10} {'runs':>4} {'wall ms':>8} {'cmds':>5} "
        f"{'TPM ms':>7} {'ratio':>6}  note",
    ]
    group = None
    for r in rows:
        if r.group != group:
            group = r.group
            out.append(group)
        ratio = r.ratio()
        if r.base is None and r.direct:
            rtext = "base"
        else:
            rtext = f"{ratio[0]:.2f}{'x' if ratio[1] == 'wall' else 'c'}" if ratio else "-"
        out.append(f"{'':2}{r.tool:<42} {r.how:<10} {len(r.direct) or '-':>4} "
                   f"{_num(r.wall_ms, '8.2f'):>8} {_num(r.commands, '5.0f'):>5} "
                   f"{_num(r.tpm_ms, '7.2f'):>7} {rtext:>6}  {r.note}".rstrip())
    out += ["", "commands per operation:"]
    for r in rows:
        if r.counted:
            out.append(f"  {r.group.split(' (')[0]} / {r.tool.split('  ')[0]}: "
                       f"{' '.join(r.sequence)}")
    if leftovers:
        left = ", ".join(f"{k} {v}" for k, v in leftovers.items())
        out.append(f"handles found loaded after the runs and flushed (total): {left}")
    return "\n".join(out)


# ------------------------------------------------------------------------------- main


def run(runs: int, base: Path) -> tuple[dict[str, Any], list[Row], dict[str, int]]:
    tools = tools_version()
    tools_flow = str(TOOLS_FLOW) if TOOLS_FLOW.exists() and tools else None
    bench = Bench(runs, base, Pytss(base), tools_flow)
    info = machine_info(runs, bench.pytss.version, tools)
    with simulator(base, TCG) as m:
        bench.tcg(m)
    with simulator(base, EVE) as m:
        bench.eve(m)
    return info, list(bench.rows.values()), bench.leftovers


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--runs", type=int, default=20, metavar="N",
                    help=f"runs per row (median; default 20; tpm2-tools: min(N, {TOOL_RUNS}))")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args(argv)
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    base = Path(tempfile.mkdtemp(prefix="tpmseal-bu-", dir="/tmp"))  # short: unix socket paths
    try:
        info, rows, leftovers = run(args.runs, base)
    finally:
        if args.keep:
            print(f"kept {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)
    if args.json:
        json.dump({"machine": info, "rows": [r.to_json() for r in rows],
                   "leftovers_flushed": leftovers}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(table(info, rows, leftovers))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
