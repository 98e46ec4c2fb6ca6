"""The long fuzz run (``make fuzz``): 10^6+ mutated inputs over every untrusted-input parser.

Starts a private swtpm, provisions it, records real seeds (tests/fuzzing.py),
then feeds each target mutants of its seeds, round robin, from a seeded PRNG
(reproducible: ``--seed``). Reports per target the inputs run, untyped
exceptions (anything but a TpmsealError) grouped by type and raising line,
hangs (an input taking longer than ``--hang`` seconds is interrupted) and the
slowest input; overall the peak memory (ru_maxrss) under an address-space limit.
Inputs that failed are written to ``--findings``. Exit status 1 if any failed.
"""

from __future__ import annotations

import argparse
import random
import resource
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).parent))

from fuzzing import collect_seeds, mutate_for, targets
from tpmseal.client.tpm import Tpm
from tpmseal.errors import TpmsealError
from tpmseal.recipes.profiles import get_profile
from tpmseal.recipes.provision import provision
from tpmseal.transport.simulator import Simulator


class Hang(BaseException):
    pass


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise Hang


def _where(e: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(e.__traceback__) if "/tpmseal/" in f.filename]
    f = frames[-1] if frames else traceback.extract_tb(e.__traceback__)[-1]
    return f"{type(e).__name__} at {f.filename.split('/src/')[-1]}:{f.lineno}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--inputs", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--hang", type=float, default=2.0, help="seconds before an input hangs")
    ap.add_argument("--memory-limit-mb", type=int, default=2048)
    ap.add_argument("--findings", type=Path, default=Path("fuzz-findings"))
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="tpmseal-fuzz-", dir="/tmp"))
    sim = Simulator(work / "tpm")
    try:
        sim.start()
        with Tpm.open(sim.uri) as t:
            provision(t, get_profile("tcg"), ek_type="rsa", trust_file=work / "trust.json")
        seeds = collect_seeds(sim.uri, work / "trust.json", work)
    finally:
        sim.stop()
    all_targets = targets(seeds)
    print(f"seeds: {len(seeds.exchanges)} exchanges, {len(all_targets)} targets", flush=True)

    limit = args.memory_limit_mb << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    signal.signal(signal.SIGALRM, _alarm)
    rng = random.Random(args.seed)
    names = sorted(all_targets)
    runs: Counter[str] = Counter()
    typed: Counter[str] = Counter()
    untyped: dict[str, Counter[str]] = {}
    hangs: Counter[str] = Counter()
    slowest: dict[str, float] = {}
    findings: list[tuple[str, str, bytes]] = []
    start = time.monotonic()
    for i in range(args.inputs):
        name = names[i % len(names)]
        fn, pool = all_targets[name]
        data = mutate_for(name, rng, rng.choice(pool), pool)
        t0 = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, args.hang)
        try:
            fn(data)
        except TpmsealError:
            typed[name] += 1
        except Hang:
            hangs[name] += 1
            findings.append((name, "hang", data))
        except Exception as e:
            where = _where(e)
            untyped.setdefault(name, Counter())[where] += 1
            if sum(untyped[name].values()) <= 3:
                findings.append((name, where, data))
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        dt = time.perf_counter() - t0
        slowest[name] = max(slowest.get(name, 0.0), dt)
        runs[name] += 1
        if (i + 1) % 100_000 == 0:
            print(f"{i + 1} inputs, {time.monotonic() - start:.0f} s", flush=True)
    elapsed = time.monotonic() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"\n{'target':<34} {'inputs':>8} {'typed err':>9} {'untyped':>7} {'hangs':>5} "
          f"{'slowest':>9}")
    for name in names:
        n_untyped = sum(untyped.get(name, Counter()).values())
        print(f"{name:<34} {runs[name]:>8} {typed[name]:>9} {n_untyped:>7} {hangs[name]:>5} "
              f"{slowest.get(name, 0) * 1000:>7.1f}ms")
    causes = Counter[str]()
    for c in untyped.values():
        causes.update(c)
    total_untyped = sum(causes.values())
    print(f"\ntotal: {sum(runs.values())} inputs in {elapsed:.0f} s "
          f"({sum(runs.values()) / elapsed:.0f}/s), {sum(typed.values())} typed errors, "
          f"{total_untyped} untyped exceptions ({len(causes)} distinct causes), "
          f"{sum(hangs.values())} hangs (> {args.hang:g} s), peak memory {peak_mb:.0f} MB "
          f"(limit {args.memory_limit_mb} MB)")
    for where, n in causes.most_common():
        print(f"  {n:>7}  {where}")
    if findings:
        args.findings.mkdir(parents=True, exist_ok=True)
        for k, (name, why, data) in enumerate(findings):
            safe = name.replace(":", "_")
            (args.findings / f"{k:03d}-{safe}.bin").write_bytes(data)
            print(f"  finding {k:03d}: {name}: {why}")
    shutil.rmtree(work, ignore_errors=True)
    return 1 if total_untyped or hangs else 0


if __name__ == "__main__":
    raise SystemExit(main())
