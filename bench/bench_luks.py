#!/usr/bin/env python3
"""Unlocking LUKS2 volumes: tpmseal against systemd 252 and clevis 19 on one swtpm.

Makes six LUKS2 images (cryptsetup 2.6, PBKDF2 at minimum cost): one with a
tpmseal token (``tpmseal luks enroll``), one enrolled by ``systemd-cryptenroll
--tpm2-pcrs=7``, one by ``systemd-cryptenroll --tpm2-public-key
--tpm2-public-key-pcrs=11`` (signed PCR 11, PCR 7 fixed; the signature from
``tpmseal policy sign --format systemd``), one with a systemd 254 ``tpm2_srk``
token (sealed under the SRK with tpm2-tools, as systemd 254+ does; 252 cannot),
one with a systemd 255 ``tpm2_pcrlock`` token (an NV index, its fold of PCR 7 and of
two allowed PCR 11 values, and ``pcrlock.json``, as systemd-pcrlock makes them, with
tpm2-tools), one bound by ``clevis luks bind … tpm2``. Each volume's TPM secret is then
unsealed by tpmseal (in-process, ``unlockers.unseal_with``) and by the
stack that made it where it runs here (``systemd-cryptsetup attach``, which
stops after unsealing without device-mapper; ``clevis luks pass``), through
tpmseal's recording proxy, which counts the TPM commands and runs the leak
scanner for the keyslot passphrase and the secret it derives from.

Columns: ``cmds`` TPM commands of one unlock (retries excluded), ``wall`` median
wall time (in-process for tpmseal, the whole process for the peers, both behind
the proxy), ``key on bus`` what the leak scanner found. swtpm's own time is in
every figure; nothing is taken from elsewhere.

Usage: python bench/bench_luks.py [--runs N] [--json]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_unseal import flush_leftovers, simulator, tpmseal_cli

from tpmseal.client.tpm import Tpm
from tpmseal.recipes import clevis, cryptsetup, unlockers
from tpmseal.recipes.owner_primary import SealedUnderPrimary, unseal_under_primary
from tpmseal.recipes.profiles import get_profile
from tpmseal.sniff.analysis.leaks import scan
from tpmseal.sniff.capture.proxy import Proxy

SYSTEMD_CRYPTSETUP = "/lib/systemd/systemd-cryptsetup"
RC_RETRY = (0x922).to_bytes(4, "big")


def _run(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, capture_output=True, env={**os.environ, **(env or {})},
                          timeout=120, check=False)


def make_image(path: Path, pw: Path) -> None:
    with open(path, "wb") as f:
        f.truncate(20 << 20)
    done = _run([cryptsetup.binary(), "luksFormat", "--batch-mode", "--type", "luks2",
                 "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file",
                 str(pw), str(path)])
    if done.returncode != 0:
        raise SystemExit(f"luksFormat failed: {done.stderr.decode()}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--runs", type=int, default=10, metavar="N")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    missing = [t for t in ("systemd-cryptenroll", "clevis", "tpm2_create")
               if shutil.which(t) is None]
    if missing or not os.access(SYSTEMD_CRYPTSETUP, os.X_OK):
        raise SystemExit(f"missing: {', '.join(missing) or SYSTEMD_CRYPTSETUP} "
                         "(apt-get install systemd clevis clevis-luks clevis-tpm2)")
    base = Path(tempfile.mkdtemp(prefix="tpmseal-bench-luks-", dir="/tmp"))
    try:
        with simulator(base, get_profile("tcg")) as m:
            rows = measure(m.sim.uri, m.sim.tools_tcti, m.trust_file, m.trust, base,
                           args.runs)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'volume':<15} {'unlocked by':<26} {'cmds':>5} {'wall ms':>8}  key on bus")
    for r in rows:
        print(f"{r['volume']:<15} {r['by']:<26} {r['cmds']:>5} {r['wall_ms']:>8.1f}  "
              f"{r['leak'] or 'no'}")
    return 0


def measure(uri: str, tcti: str, trust_file: Path, trust: Any, base: Path,
            runs: int) -> list[dict[str, Any]]:
    pw = base / "pw"
    pw.write_bytes(b"bench passphrase")
    pw.chmod(0o600)
    images = {k: base / f"{k}.img" for k in ("tpmseal", "systemd-tpm2", "systemd-signed",
                                             "systemd-srk", "systemd-pcrlock", "clevis")}
    for img in images.values():
        make_image(img, pw)
    env = {"TPMSEAL_TPM": uri, "TPMSEAL_TRUST_FILE": str(trust_file)}
    signer, sig = base / "signer.pem", base / "signature.json"
    for cmd in ([*tpmseal_cli(), "luks", "enroll", str(images["tpmseal"]), "--pcrs",
                 "sha256:7", "--unlock-key-file", str(pw)],
                ["systemd-cryptenroll", f"--tpm2-device={tcti}", "--tpm2-pcrs=7",
                 f"--unlock-key-file={pw}", str(images["systemd-tpm2"])],
                [*tpmseal_cli(), "policy", "keygen", "--type", "rsa", "--output", str(signer)],
                ["systemd-cryptenroll", f"--tpm2-device={tcti}", f"--unlock-key-file={pw}",
                 f"--tpm2-public-key={signer.with_suffix('.pub')}",
                 "--tpm2-public-key-pcrs=11", str(images["systemd-signed"])],
                [*tpmseal_cli(), "policy", "sign", "--key", str(signer), "--pcrs", "sha256:11",
                 "--current", "--format", "systemd", "--output", str(sig)],
                ["clevis", "luks", "bind", "-y", "-k", str(pw), "-d", str(images["clevis"]),
                 "tpm2", '{"pcr_ids":"7","pcr_bank":"sha256"}']):
        done = _run(cmd, {**env, "TPM2TOOLS_TCTI": tcti})
        flush_leftovers(uri)
        if done.returncode != 0:
            raise SystemExit(f"{cmd[0]} failed: {done.stderr.decode()[-400:]}")
    srk_volume(images["systemd-srk"], pw, base / "srk", tcti)
    flush_leftovers(uri)
    lock = pcrlock_volume(images["systemd-pcrlock"], pw, base / "pcrlock", uri, tcti)
    flush_leftovers(uri)
    tokens = {k: cryptsetup.header(str(img)).tokens[0] for k, img in images.items()}
    from tpmseal.recipes import signed

    offered = {"systemd-signed": tuple(signed.load_policies([str(sig)]))}
    locks = {"systemd-pcrlock": str(lock)}
    secrets = _secrets(uri, tokens, trust, offered, locks)
    for kind, img in images.items():  # every passphrase checked by cryptsetup itself
        cryptsetup.test_key(str(img), secrets[kind][0], 1)
    rows = []
    with Proxy(f"unix:{base / 'bus.sock'}", uri) as proxy:
        for volume, token in tokens.items():
            def ours(volume: str = volume, token: dict[str, Any] = token) -> None:
                with Tpm.open(proxy.uri) as tpm:
                    unlockers.unseal_with(tpm, token, 0, trust, None, offered.get(volume, ()),
                                          locks.get(volume))
            rows.append(row(proxy, volume, "tpmseal", ours, runs, secrets[volume]))
        for volume, extra in (("systemd-tpm2", ""), ("systemd-signed", f",tpm2-signature={sig}")):
            def theirs(volume: str = volume, extra: str = extra) -> None:
                _peer([SYSTEMD_CRYPTSETUP, "attach", "bench", str(images[volume]), "-",
                       f"tpm2-device={proxy.tools_tcti},headless{extra}"],
                      {"SYSTEMD_LOG_LEVEL": "debug"}, b"Completed TPM2 key unsealing")
            rows.append(row(proxy, volume, "systemd-cryptsetup attach", theirs, runs,
                            secrets[volume]))
        rows.append(row(proxy, "clevis", "clevis luks pass", lambda: _peer(
            ["clevis", "luks", "pass", "-d", str(images["clevis"]), "-s", "1"],
            {"TPM2TOOLS_TCTI": proxy.tools_tcti}), runs, secrets["clevis"]))
    return rows


def _secrets(uri: str, tokens: dict[str, dict[str, Any]], trust: Any,
             offered: dict[str, tuple[Any, ...]], locks: dict[str, str],
             ) -> dict[str, list[bytes]]:
    """Per volume: the keyslot passphrase, then what it derives from (the TPM secret)."""
    with Tpm.open(uri) as tpm:
        got = {k: unlockers.unseal_with(tpm, t, 0, trust, None, offered.get(k, ()),
                                        locks.get(k))
               for k, t in tokens.items()}
        b = clevis.ClevisBinding.parse(tokens["clevis"], 0)
        jwk = unseal_under_primary(tpm, SealedUnderPrimary(b.public, b.private, b.pcrs,
                                                           b.primary_alg, "clevis"), trust, None)
    out = {k: [v, base64.b64decode(v)] for k, v in got.items() if k.startswith("systemd")}
    return {**out, "tpmseal": [got["tpmseal"]], "clevis": [got["clevis"], clevis.jwk_key(jwk)]}


def _tools(work: Path, tcti: str, *cmds: list[str]) -> None:
    for cmd in cmds:
        done = subprocess.run(cmd, cwd=work, capture_output=True,
                              env={**os.environ, "TPM2TOOLS_TCTI": tcti}, timeout=120,
                              check=False)
        if done.returncode != 0:
            raise SystemExit(f"{cmd[0]} failed: {done.stderr.decode()[-400:]}")


def _add_token(img: Path, pw: Path, work: Path, secret: bytes, token: dict[str, Any]) -> None:
    """Keyslot 1 with systemd's passphrase (base64 of *secret*), then *token* as token 0."""
    (work / "new").write_bytes(base64.b64encode(secret))
    (work / "token.json").write_text(json.dumps(token))
    for cmd in ([cryptsetup.binary(), "luksAddKey", "--batch-mode", "--key-file", str(pw),
                 "--key-slot", "1", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000",
                 str(img), str(work / "new")],
                [cryptsetup.binary(), "token", "import", "--json-file", str(work / "token.json"),
                 "--token-id", "0", str(img)]):
        done = _run(cmd)
        if done.returncode != 0:
            raise SystemExit(f"{cmd[1]} failed: {done.stderr.decode()[-400:]}")


def _blob(work: Path) -> str:
    return base64.b64encode((work / "obj.priv").read_bytes()
                            + (work / "obj.pub").read_bytes()).decode()


def pcrlock_volume(img: Path, pw: Path, work: Path, uri: str, tcti: str) -> Path:
    """Keyslot 1 and a systemd 255 ``tpm2_pcrlock`` token on *img*; returns pcrlock.json.
    The NV index has systemd-pcrlock's attributes (written here through
    PolicyCommandCode instead of its recovery PIN's PolicySigned)."""
    from tpmseal.recipes import systemd_pcrlock
    from tpmseal.wire.constants import TPM_ALG, TPMA_NV
    from tpmseal.wire.marshal import tpm2b, u32
    from tpmseal.wire.structures import NvPublic, PcrSelection, PcrSelectionList

    work.mkdir()
    index = 0x01C1A5E0
    with Tpm.open(uri) as tpm:
        now = tpm.pcr_read(PcrSelectionList((PcrSelection(TPM_ALG.SHA256, (7, 11)),)))
    _tools(work, tcti, ["tpm2_startauthsession", "-S", "t.ctx"],
           ["tpm2_policycommandcode", "-S", "t.ctx", "-L", "write.policy", "TPM2_CC_NV_Write"],
           ["tpm2_flushcontext", "t.ctx"])
    nv = NvPublic(index, TPM_ALG.SHA256, TPMA_NV.WRITEALL | TPMA_NV.POLICYWRITE
                  | TPMA_NV.OWNERREAD, (work / "write.policy").read_bytes(), 34)
    handle = u32(index) + tpm2b(nv.name()) + u32(2) + tpm2b(nv.marshal())  # ESYS_TR
    doc = {"pcrBank": "sha256", "nvIndex": index,
           "pcrValues": [{"pcr": 7, "values": [now[(TPM_ALG.SHA256, 7)].hex()]},
                         {"pcr": 11, "values": ["11" * 32, now[(TPM_ALG.SHA256, 11)].hex()]}],
           "nvHandle": base64.b64encode(handle).decode(),
           "nvPublic": base64.b64encode(tpm2b(nv.marshal())).decode(),
           "srkHandle": "", "pinPublic": "", "pinPrivate": ""}
    lock = work.parent / "pcrlock.json"
    lock.write_text(json.dumps(doc))
    (work / "nv.data").write_bytes(b"\x00\x0b"
                                   + systemd_pcrlock.parse(lock.read_bytes(), "b").digest())
    secret = os.urandom(32)
    (work / "secret").write_bytes(secret)
    _tools(work, tcti,
           ["tpm2_nvdefine", "-C", "o", "-s", "34", "-a", "ownerread|policywrite|writeall",
            "-L", "write.policy", hex(index)],
           ["tpm2_startauthsession", "--policy-session", "-S", "w.ctx"],
           ["tpm2_policycommandcode", "-S", "w.ctx", "TPM2_CC_NV_Write"],
           ["tpm2_nvwrite", "-C", hex(index), "-P", "session:w.ctx", "-i", "nv.data",
            hex(index)],
           ["tpm2_flushcontext", "w.ctx"],
           ["tpm2_readpublic", "-c", "0x81000001", "-t", "srk.tr"],
           ["tpm2_startauthsession", "-S", "t.ctx"],
           ["tpm2_policyauthorizenv", "-S", "t.ctx", "-C", "o", "-L", "policy", hex(index)],
           ["tpm2_flushcontext", "t.ctx"],
           ["tpm2_create", "-C", "0x81000001", "-g", "sha256", "-a", "fixedtpm|fixedparent",
            "-L", "policy", "-i", "secret", "-u", "obj.pub", "-r", "obj.priv"])
    _add_token(img, pw, work, secret, {
        "type": "systemd-tpm2", "keyslots": ["1"], "tpm2-pcrs": [], "tpm2-pcr-bank": "sha256",
        "tpm2-primary-alg": "ecc", "tpm2-pin": False, "tpm2-blob": _blob(work),
        "tpm2-policy-hash": (work / "policy").read_bytes().hex(), "tpm2_pcrlock": True,
        "tpm2_srk": base64.b64encode((work / "srk.tr").read_bytes()).decode(),
        "tpm2_pcrlock_nv": doc["nvHandle"]})
    shutil.rmtree(work)
    return lock


def srk_volume(img: Path, pw: Path, work: Path, tcti: str) -> None:
    """Keyslot 1 and a systemd 254 ``tpm2_srk`` token on *img*: a secret sealed with
    tpm2-tools under the SRK at 0x81000001 to PolicyPCR(sha256:7), as systemd 254+ seals."""
    work.mkdir()
    secret = os.urandom(32)
    (work / "secret").write_bytes(secret)
    _tools(work, tcti, ["tpm2_readpublic", "-c", "0x81000001", "-t", "srk.tr"],
           ["tpm2_startauthsession", "-S", "trial.ctx"],
           ["tpm2_policypcr", "-S", "trial.ctx", "-l", "sha256:7", "-L", "policy"],
           ["tpm2_flushcontext", "trial.ctx"],
           ["tpm2_create", "-C", "0x81000001", "-g", "sha256", "-a", "fixedtpm|fixedparent",
            "-L", "policy", "-i", "secret", "-u", "obj.pub", "-r", "obj.priv"])
    _add_token(img, pw, work, secret, {
        "type": "systemd-tpm2", "keyslots": ["1"], "tpm2-pcrs": [7],
        "tpm2-pcr-bank": "sha256", "tpm2-primary-alg": "ecc", "tpm2-pin": False,
        "tpm2-blob": _blob(work), "tpm2-policy-hash": (work / "policy").read_bytes().hex(),
        "tpm2_srk": base64.b64encode((work / "srk.tr").read_bytes()).decode()})
    shutil.rmtree(work)


def _peer(argv: list[str], env: dict[str, str], ok: bytes | None = None) -> None:
    done = _run(argv, env)
    if (ok is None and done.returncode != 0) or (ok is not None and ok not in done.stderr):
        raise SystemExit(f"{argv[0]} failed: {done.stderr.decode(errors='replace')[-400:]}")


def row(proxy: Proxy, volume: str, by: str, once: Callable[[], None], runs: int,
        secrets: list[bytes]) -> dict[str, Any]:
    walls, counts, leaks = [], [], set()
    for _ in range(runs):
        proxy.clear()
        t0 = time.perf_counter()
        once()
        walls.append((time.perf_counter() - t0) * 1000)
        exchanges = proxy.exchanges
        counts.append(sum(1 for e in exchanges if e.response is not None
                          and e.response[6:10] != RC_RETRY))
        leaks |= {f"{lk.command} {lk.direction}" for lk in scan(exchanges, secrets)}
        flush_leftovers(proxy.uri)  # a peer's leftovers (not counted: after the copy)
    return {"volume": volume, "by": by, "cmds": int(statistics.median(counts)),
            "wall_ms": statistics.median(walls), "leak": ", ".join(sorted(leaks))}


if __name__ == "__main__":
    sys.exit(main())
