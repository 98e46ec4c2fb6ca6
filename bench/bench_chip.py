#!/usr/bin/env python3
"""Seal and unseal on modelled SPI TPMs: tpmseal vs tpm2-tools vs EVE, as /dev/tpm0 or tpmrm0.

Each operation runs against swtpm through tpmseal's recording proxy with the
chip model of bench/chip_model.py as its response hook (per-command costs of an
SLB9672, SLB9670 or NPCT75x from wolfTPM's published benchmarks; with or without
the context swaps of Linux's /dev/tpmrm0 resource manager). Rows:

* tpmseal: the ``tpmseal`` CLI as a process (``unseal``, ``seal``, ``unseal
  --profile eve --nv``, ``vault-key --profile eve``), plus ``unseal`` on a TPM
  provisioned with the ECC EK (``--ek-type auto`` on a fresh TPM). Under the
  /dev/tpmrm0 model, as root with ``unshare``, the CLI really opens a
  /dev/tpmrm0: the pty of tests/ptyrelay.py bound there in a private mount
  namespace (tests/tpmrm_relay.py), relaying to the proxy, so it leaves its last
  flushes to the resource manager as it does on a device. What the relay flushes
  when the CLI has closed is not modelled for objects (the kernel holds only
  their saved contexts by then) and costs one FlushContext per session;
* tpm2-tools: tests/peers/tpm2_tools_flow.sh ``unseal`` / ``seal``;
* EVE: its command sequences replayed with tpmseal's client (bench/eve_replay.py,
  read from EVE's evetpm code), checked against what crossed the proxy.

Per row: TPM commands, the modelled chip time (deterministic: the sum of the
delays), the context swaps the resource manager added, the wall time (median;
host time plus the modelled delays) and ratios to EVE's row of the same
operation; under a row that ECC-salts, a line with its chip time had each ECC
salt cost the ECDHE upper bound instead of the charged one-multiplication figure
(chip_model.py). Only what this run measured is printed.

Usage: python bench/bench_chip.py [--runs N] [--chips SLB9672,SLB9670,NPCT75x]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import eve_replay

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the pty relay
from bench_unseal import TOOLS_FLOW, Machine, flush_leftovers, simulator, tools_version
from bench_unseal import tpmseal_cli as _cli
from chip_model import CHIPS, ChipModel, table_lines

from ptyrelay import PtyRelay
from tpmrm_relay import run_with_tpmrm
from tpmseal.client.tpm import Tpm
from tpmseal.recipes.profiles import EVE, TCG
from tpmseal.recipes.provision import provision
from tpmseal.sniff.capture.proxy import Proxy
from tpmseal.transport.base import parse_uri

#: tpmseal can open a real /dev/tpmrm0 (the relay's pty, in a mount namespace)
TPMRM = os.geteuid() == 0 and shutil.which("unshare") is not None


@dataclass
class Result:
    op: str
    who: str
    config: str
    commands: list[str] = field(default_factory=list)
    modelled: list[float] = field(default_factory=list)
    swaps: list[int] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    ecc_salts: int = 0  # ECC-salted StartAuthSessions of the last run


@dataclass
class Op:
    op: str
    who: str
    machine: str  # "tcg", "ecc" or "eve"
    run: Callable[[str, str], object]  # (tpmseal URI, tools TCTI)
    expected: Callable[[], list[str]] | None = None
    #: run through /dev/tpmrm0 under the resource-manager model (the tpmseal CLI)
    device: bool = False


class Relay(PtyRelay):
    """The pty relay, noting what the proxy and the model saw when the client closed,
    before its own clean-up (which the kernel does without commands for objects)."""

    def __init__(self, proxy: Proxy, model: ChipModel) -> None:
        self.proxy, self.model = proxy, model
        self.at_close: tuple[list[str], float, int] | None = None
        super().__init__(parse_uri(proxy.uri))

    def _client_closed(self) -> None:
        if self._dirty and self.at_close is None:
            self.at_close = ([e.name for e in self.proxy.exchanges], self.model.modelled_ms,
                             self.model.swaps)
        super()._client_closed()


class Bench:
    def __init__(self, base: Path, machines: dict[str, Machine]) -> None:
        self.base, self.m = base, machines
        self.env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        self.env["PYTHONPYCACHEPREFIX"] = str(base / "pycache")
        self.cli = _cli()
        self.key = os.urandom(32)
        (base / "key.bin").write_bytes(self.key)
        self.tools_dir = base / "tools"
        self.tools_dir.mkdir()
        (self.tools_dir / "secret.bin").write_bytes(os.urandom(32))
        self.tools = TOOLS_FLOW.exists() and tools_version() is not None
        self.eve_seq: list[str] = []
        self.vault_key = b""
        self.relay: Relay | None = None  # set while a tpmseal row runs on /dev/tpmrm0

    def tpmseal(self, machine: str, *args: str, check: bytes | None = None
                ) -> Callable[[str, str], object]:
        m = self.m[machine]

        def run(uri: str, _tcti: str) -> None:
            argv = [*self.cli, "--tpm", uri, "--trust-file", str(m.trust_file), *args]
            if self.relay is not None:
                argv[argv.index(uri)] = "device:/dev/tpmrm0"
                done = run_with_tpmrm(self.relay, argv, self.base, env=self.env)
            else:
                done = subprocess.run(argv, env=self.env, capture_output=True, check=False,
                                      timeout=300)
            if done.returncode:
                raise SystemExit(f"tpmseal {' '.join(args)} failed: {done.stderr.decode()}")
            if check is not None and done.stdout != check:
                raise SystemExit(f"tpmseal {' '.join(args)}: wrong secret")
        return run

    def tools_flow(self, step: str) -> Callable[[str, str], object]:
        m = self.m["tcg"]

        def run(uri: str, tcti: str) -> None:
            env = {**self.env, "TPM2TOOLS_TCTI": tcti, "WORKDIR": str(self.tools_dir),
                   "EK_HANDLE": f"{m.trust.ek_handle:#x}",
                   "SRK_HANDLE": f"{m.trust.srk_handle:#x}", "PCRS": m.pcrs}
            subprocess.run(["bash", str(TOOLS_FLOW), step], env=env, check=True,
                           capture_output=True, timeout=300)
        return run

    def ops(self) -> list[Op]:
        blob, eve_trust = str(self.base / "blob.json"), self.m["eve"].trust
        vault = self.vault_key

        def eve_unseal(uri: str, _t: str) -> None:
            key, self.eve_seq = eve_replay.unseal_disk_key(uri, eve_trust)
            if key != vault:
                raise SystemExit("EVE replay: wrong key")

        def eve_fetch(uri: str, _t: str) -> None:
            key, self.eve_seq = eve_replay.fetch_sealed_vault_key(uri, eve_trust)
            if key != vault:
                raise SystemExit("EVE replay: wrong key")

        def eve_seal(uri: str, _t: str) -> None:
            self.eve_seq = eve_replay.seal_disk_key(uri, eve_trust, vault)

        seq = lambda: self.eve_seq  # noqa: E731
        ops = [
            Op("unseal a blob", "tpmseal CLI", "tcg",
               self.tpmseal("tcg", "unseal", "--input", blob, "--output", "-", check=self.key),
               device=True),
            Op("unseal a blob", "tpmseal CLI, ECC EK", "ecc",
               self.tpmseal("ecc", "unseal", "--input", str(self.base / "blob-ecc.json"),
                            "--output", "-", check=self.key), device=True),
            Op("seal a blob", "tpmseal CLI", "tcg",
               self.tpmseal("tcg", "seal", "--input", str(self.base / "key.bin"), "--output",
                            str(self.base / "blob2.json"), "--force"), device=True),
            # renewed in place: the same PCRs' current values (an audited PCR_Read, so a
            # second salted session), the same two PolicyOR states (no PCR read: one)
            Op("reseal, current PCRs", "tpmseal CLI", "tcg",
               self.tpmseal("tcg", "reseal", "--input", str(self.base / "blob-r.json")),
               device=True),
            Op("reseal, PolicyOR states", "tpmseal CLI", "tcg",
               self.tpmseal("tcg", "reseal", "--input", str(self.base / "blob-or.json")),
               device=True),
            Op("NV unseal (EVE layout)", "tpmseal CLI", "eve",
               # EVE's SealDiskKey below re-seals the pair: accepted, as on a device
               self.tpmseal("eve", "unseal", "--profile", "eve", "--nv", "--output", "-",
                            "--accept-sealed-object", check=vault), device=True),
            Op("NV unseal (EVE layout)", "EVE UnsealDiskKey", "eve", eve_unseal, seq),
            Op("vault key, every boot", "tpmseal CLI", "eve",
               self.tpmseal("eve", "vault-key", "--profile", "eve", "--accept-sealed-object",
                            check=vault), device=True),
            Op("vault key, every boot", "EVE FetchSealedVaultKey", "eve", eve_fetch, seq),
            Op("NV seal (EVE layout)", "EVE SealDiskKey", "eve", eve_seal, seq),
        ]
        if self.tools:
            ops.insert(2, Op("unseal a blob", "tpm2-tools", "tcg", self.tools_flow("unseal")))
            ops.insert(4, Op("seal a blob", "tpm2-tools", "tcg", self.tools_flow("seal")))
        return ops

    def prepare(self) -> None:
        tcg, ecc, eve = self.m["tcg"], self.m["ecc"], self.m["eve"]
        for m, out in ((tcg, "blob.json"), (ecc, "blob-ecc.json")):
            self.tpmseal("tcg" if m is tcg else "ecc", "seal", "--input",
                         str(self.base / "key.bin"), "--output", str(self.base / out))(
                m.sim.uri, "")
        states = [self.base / "now.json", self.base / "other.json"]
        shown = subprocess.run([*self.cli, "--tpm", tcg.sim.uri, "--trust-file",
                                str(tcg.trust_file), "pcrs", "show", "--json"],
                               env=self.env, check=True, capture_output=True).stdout
        states[0].write_bytes(shown)
        states[1].write_bytes(_other_state(shown))
        self.tpmseal("tcg", "seal", "--input", str(self.base / "key.bin"), "--output",
                     str(self.base / "blob-r.json"))(tcg.sim.uri, "")
        self.tpmseal("tcg", "seal", "--input", str(self.base / "key.bin"), "--output",
                     str(self.base / "blob-or.json"), "--pcr-values", str(states[0]),
                     "--pcr-values", str(states[1]))(tcg.sim.uri, "")
        argv = [*self.cli, "--tpm", eve.sim.uri, "--trust-file", str(eve.trust_file),
                "vault-key", "--profile", "eve"]
        self.vault_key = subprocess.run(argv, env=self.env, check=True,
                                        capture_output=True).stdout
        if self.tools:
            self.tools_flow("seal")(tcg.sim.uri, tcg.sim.tools_tcti)
            flush_leftovers(tcg.sim.uri)


def _other_state(shown: bytes) -> bytes:
    """`pcrs show --json` output with its last PCR of each bank set to another value."""
    doc = json.loads(shown)
    for bank in (v for v in doc.values() if isinstance(v, dict)):
        last = max(bank, key=int)
        bank[last] = "33" * (len(bank[last]) // 2)
    return json.dumps(doc).encode()


@contextlib.contextmanager
def proxies(bench: Bench, model: ChipModel) -> Iterator[dict[str, Proxy]]:
    with contextlib.ExitStack() as stack:
        out = {}
        for name, m in bench.m.items():
            out[name] = stack.enter_context(Proxy(
                f"unix:{bench.base / (name + '-chip.sock')}", m.sim.uri, on_response=model,
                keep=200))
        yield out


def _on_tpmrm(bench: Bench, op: Op, proxy: Proxy, model: ChipModel
              ) -> tuple[list[str], float, int]:
    """Run a tpmseal row through /dev/tpmrm0: commands, chip ms and swaps until it closed,
    plus a FlushContext for each session it left (the kernel flushes those on the TPM)."""
    relay = Relay(proxy, model)
    with relay:
        bench.relay = relay
        try:
            op.run(proxy.uri, "")
        finally:
            bench.relay = None
        relay.wait_idle()
    assert relay.at_close is not None
    names, ms, swaps = relay.at_close
    sessions = [h for h in relay.flushed if h >> 24 in (0x02, 0x03)]
    return names + ["FlushContext"] * len(sessions), ms + len(sessions) * model.chip.base, swaps


def run(runs: int, chips: list[str], base: Path) -> list[Result]:
    with simulator(base, TCG) as tcg, simulator(base, EVE) as eve, \
            simulator(base / "ecc", TCG) as ecc0:
        ecc_trust = ecc0.sim.state / "trust-ecc.json"
        with Tpm.open(ecc0.sim.uri) as tpm:
            provision(tpm, TCG, ek_type="ecc", trust_file=ecc_trust, repin=True)
        from tpmseal.recipes.trust import load as load_trust
        ecc = Machine(TCG, ecc0.sim, ecc_trust, load_trust(ecc_trust, "tcg"))
        bench = Bench(base, {"tcg": tcg, "ecc": ecc, "eve": eve})
        bench.prepare()
        ops = bench.ops()
        results: dict[tuple[str, str, str], Result] = {}
        salt = {tcg.trust.ek_handle: "rsa", eve.trust.ek_handle: "rsa"}
        salt[ecc.trust.ek_handle] = "ecc"
        for chip in chips:
            for rm in (False, True):
                config = f"{chip} {'/dev/tpmrm0' if rm else '/dev/tpm0'}"
                model = ChipModel(CHIPS[chip], rm, salt)
                with proxies(bench, model) as px:
                    for _ in range(runs):
                        for op in ops:
                            p = px[op.machine]
                            res = results.setdefault((op.op, op.who, config),
                                                     Result(op.op, op.who, config))
                            p.clear()
                            model.reset()
                            t0 = time.perf_counter()
                            if rm and op.device and TPMRM:
                                res.commands, ms, swaps = _on_tpmrm(bench, op, p, model)
                            else:
                                op.run(p.uri, p.tools_tcti)
                                res.commands = [e.name for e in p.exchanges]
                                ms, swaps = model.modelled_ms, model.swaps
                            res.wall.append((time.perf_counter() - t0) * 1000)
                            res.modelled.append(ms)
                            res.swaps.append(swaps)
                            res.ecc_salts = model.ecc_salts
                            if op.expected is not None and op.expected() != res.commands:
                                raise SystemExit(f"{op.who}: the bus carried {res.commands}, "
                                                 f"the replay meant {op.expected()}")
                            if op.who == "tpm2-tools":
                                flush_leftovers(p.uri)
    return list(results.values())


def table(results: list[Result], runs: int) -> str:
    via = ("the tpmseal CLI opens /dev/tpmrm0 (a relay in a mount namespace)" if TPMRM else
           "the tpmseal CLI connects to the proxy's socket (not root or no unshare: "
           "it flushes as on /dev/tpm0)")
    out = ["tpmseal vs tpm2-tools vs EVE on modelled SPI TPMs (bench/bench_chip.py)",
           f"under the /dev/tpmrm0 model {via}",
           f"{runs} run(s) per row; chip ms = modelled TPM time (sum of delays, no host "
           "time); swaps = ContextLoad/Save/Flush added by /dev/tpmrm0; wall = host + chip, "
           "median; ratio = chip ms / EVE's chip ms for the same operation (for the blob "
           "rows, EVE's NV unseal and NV seal: EVE has no blob format); an ECC salt "
           "costs the table's ecc_salt, and an 'ECDHE upper bound' line under a row that "
           "ECC-salts gives its chip ms with ecdhe_agree instead (not measured: the same "
           "delays with that one figure swapped)", ""]
    configs = list(dict.fromkeys(r.config for r in results))
    for config in configs:
        out.append(config)
        out.append(f"  {'operation':<24} {'who':<26} {'cmds':>4} {'swaps':>5} "
                   f"{'chip ms':>8} {'wall ms':>8} {'/EVE':>6}")
        rows = [r for r in results if r.config == config]
        for r in rows:
            eve = next((e for e in rows if e.op == r.op and e.who.startswith("EVE")), None)
            if eve is None and r.op == "unseal a blob":  # no EVE blob format: its NV unseal
                eve = next((e for e in rows if e.op.startswith("NV unseal")
                            and e.who.startswith("EVE")), None)
            if eve is None and r.op == "seal a blob":
                eve = next((e for e in rows if e.op.startswith("NV seal")), None)
            chip = statistics.median(r.modelled)
            ratio = f"{chip / statistics.median(eve.modelled):5.2f}x" if eve else "-"
            out.append(f"  {r.op:<24} {r.who:<26} {len(r.commands):4d} "
                       f"{int(statistics.median(r.swaps)):5d} {chip:8.1f} "
                       f"{statistics.median(r.wall):8.1f} {ratio:>6}")
            model = CHIPS[config.split()[0]]
            if r.ecc_salts and model.ecc_salt < model.ecdhe_agree:
                bound = chip + r.ecc_salts * (model.ecdhe_agree - model.ecc_salt)
                ratio = f"{bound / statistics.median(eve.modelled):5.2f}x" if eve else "-"
                out.append(f"  {'':<24} {'  ECDHE upper bound':<26} {'':4} {'':5} "
                           f"{bound:8.1f} {'':8} {ratio:>6}")
        out.append("")
    out.append("commands per operation (the last run):")
    seen: set[tuple[str, str]] = set()
    for r in results:
        if (r.op, r.who) not in seen:
            seen.add((r.op, r.who))
            out.append(f"  {r.op} / {r.who}: {' '.join(r.commands)}")
    out.append("")
    out += table_lines()
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--runs", type=int, default=3, metavar="N", help="runs per row (default 3)")
    ap.add_argument("--chips", default=",".join(CHIPS), help="comma-separated chip models")
    args = ap.parse_args(argv)
    chips = [c for c in args.chips.split(",") if c]
    unknown = [c for c in chips if c not in CHIPS]
    if unknown:
        ap.error(f"unknown chip(s) {', '.join(unknown)}; known: {', '.join(CHIPS)}")
    base = Path(tempfile.mkdtemp(prefix="tpmseal-ch-", dir="/tmp"))
    try:
        results = run(max(1, args.runs), chips, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(table(results, max(1, args.runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
