"""Interop with systemd 252: systemd-measure's PCR 11 signature JSON unseals what tpmseal
sealed ``--authorized-by`` the same RSA key, and systemd-cryptsetup unlocks a token
systemd-cryptenroll bound to a tpmseal key with ``tpmseal policy sign --format systemd``.

systemd-measure signs SHA-256(pol) with an empty policyRef, where pol is the
PolicyPCR digest of PCR 11 after each boot phase; tpmseal's signer template
(RSA-2048, attributes 0x00060040, exponent 65537 written out) gives the key the
Name systemd uses, so the sealed authPolicy is systemd's ``tpm2-policy-hash``.
PCR 11 is reproduced on swtpm by extending, per UKI section, SHA-256 of the name
with its NUL and SHA-256 of the contents, then the phase word.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from attacks.bus import direct, expect_error, expect_ok
from tpmseal.client.tpm import Tpm
from tpmseal.errors import ExitCode
from tpmseal.transport.simulator import Simulator
from tpmseal.wire import commands as cmds
from tpmseal.wire.constants import TPM_ALG
from tpmseal.wire.structures import DigestValues

MEASURE = next((p for p in ("/lib/systemd/systemd-measure", "/usr/lib/systemd/systemd-measure")
                if os.access(p, os.X_OK)), None)
pytestmark = pytest.mark.skipif(MEASURE is None, reason="systemd-measure (package systemd) "
                                                       "is not installed")
SECTIONS = {"linux": b"a kernel", "osrel": b"ID=tpmseal-test\n", "cmdline": b"quiet",
            "initrd": b"an initrd"}


def _sections(d: Path) -> list[str]:
    args = []
    for name, data in SECTIONS.items():
        (d / name).write_bytes(data)
        args.append(f"--{name}={d / name}")
    return args


def _boot_to(sim: Simulator, phases: list[str], *, stub: bool = True) -> None:
    """Extend PCR 11 as systemd-stub (the UKI sections) and systemd-pcrphase would."""
    events = []
    for name, data in SECTIONS.items() if stub else ():
        events += [hashlib.sha256(f".{name}\0".encode()).digest(), hashlib.sha256(data).digest()]
    events += [hashlib.sha256(p.encode()).digest() for p in phases]
    with Tpm.open(sim.uri) as t:
        for e in events:
            t.run(cmds.PCR_Extend(11, DigestValues(((TPM_ALG.SHA256, e),))))


def _measure(sim: Simulator, d: Path, key: Path, *extra: str) -> Path:
    assert MEASURE is not None
    out = d / "tpm2-pcr-signature.json"
    sock = sim.uri.removeprefix("unix:")
    r = subprocess.run([MEASURE, "sign", *_sections(d), "--bank=sha256",
                        f"--private-key={key}", f"--public-key={key.with_suffix('.pub')}",
                        f"--tpm2-device=swtpm:path={sock}", *extra],
                       capture_output=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr.decode()
    out.write_bytes(r.stdout)
    return out


def test_systemd_measure_signature_unseals(tcg_sim: Simulator, tmp_path: Path) -> None:
    key = tmp_path / "signer.pem"
    assert direct(tcg_sim, "policy", "keygen", "--type", "rsa", "--output", str(key)).rc == 0
    secret = os.urandom(32)
    (tmp_path / "key").write_bytes(secret)
    blob = tmp_path / "blob.json"
    r = direct(tcg_sim, "seal", "--input", str(tmp_path / "key"), "--output", str(blob),
               "--authorized-by", str(key.with_suffix(".pub")), "--pcrs", "sha256:11")
    assert r.rc == 0, r.err
    sig = _measure(tcg_sim, tmp_path, key)  # all four phases, as systemd-measure does
    _boot_to(tcg_sim, ["enter-initrd"])
    expect_ok(direct(tcg_sim, "unseal", "--input", str(blob), "--policy", str(sig)), secret)
    _boot_to(tcg_sim, ["leave-initrd"], stub=False)  # the next phase: signed too
    expect_ok(direct(tcg_sim, "unseal", "--input", str(blob), "--policy", str(sig)), secret)
    _boot_to(tcg_sim, ["not-a-phase"], stub=False)
    expect_error(direct(tcg_sim, "unseal", "--input", str(blob), "--policy", str(sig)),
                 ExitCode.PCR_MISMATCH, "no signed policy covers")


def test_systemd_signature_by_another_key_is_refused(tcg_sim: Simulator,
                                                    tmp_path: Path) -> None:
    mine, theirs = tmp_path / "mine.pem", tmp_path / "theirs.pem"
    for k in (mine, theirs):
        assert direct(tcg_sim, "policy", "keygen", "--type", "rsa", "--output", str(k)).rc == 0
    (tmp_path / "key").write_bytes(os.urandom(32))
    blob = tmp_path / "blob.json"
    assert direct(tcg_sim, "seal", "--input", str(tmp_path / "key"), "--output", str(blob),
                  "--authorized-by", str(mine.with_suffix(".pub")), "--pcrs",
                  "sha256:11").rc == 0
    sig = _measure(tcg_sim, tmp_path, theirs, "--phase=enter-initrd")
    _boot_to(tcg_sim, ["enter-initrd"])
    expect_error(direct(tcg_sim, "unseal", "--input", str(blob), "--policy", str(sig)),
                 ExitCode.BAD_INPUT, "no signed policy is by the key")


CRYPTSETUP = shutil.which("cryptsetup")
CRYPTENROLL = shutil.which("systemd-cryptenroll")
SD_CRYPTSETUP = next((p for p in ("/lib/systemd/systemd-cryptsetup",
                                  "/usr/lib/systemd/systemd-cryptsetup") if os.access(p, os.X_OK)),
                     None)


@pytest.mark.skipif(not (CRYPTSETUP and CRYPTENROLL and SD_CRYPTSETUP),
                    reason="cryptsetup (cryptsetup-bin) or systemd-cryptenroll/-cryptsetup "
                           "(systemd) is not installed")
def test_systemd_cryptsetup_accepts_a_tpmseal_signed_policy(tcg_sim: Simulator,
                                                            tmp_path: Path) -> None:
    """The reverse direction: a LUKS2 token systemd-cryptenroll bound to a tpmseal key
    unlocks with `tpmseal policy sign --format systemd` (up to device-mapper, which a
    container may lack); a policy for another PCR 11 value does not."""
    assert CRYPTSETUP and CRYPTENROLL and SD_CRYPTSETUP
    key = tmp_path / "signer.pem"
    assert direct(tcg_sim, "policy", "keygen", "--type", "rsa", "--output", str(key)).rc == 0
    img, kf = tmp_path / "luks.img", tmp_path / "kf"
    img.write_bytes(bytes(20 << 20))
    kf.write_bytes(os.urandom(32))
    kf.chmod(0o600)
    subprocess.run([CRYPTSETUP, "luksFormat", "--type", "luks2", "--batch-mode", "--pbkdf",
                    "pbkdf2", "--pbkdf-force-iterations", "1000", str(img), str(kf)],
                   check=True, capture_output=True, timeout=60)
    sock = tcg_sim.uri.removeprefix("unix:")
    subprocess.run([CRYPTENROLL, str(img), f"--unlock-key-file={kf}",
                    f"--tpm2-device=swtpm:path={sock}",
                    f"--tpm2-public-key={key.with_suffix('.pub')}",
                    "--tpm2-public-key-pcrs=11", "--tpm2-pcrs="],
                   check=True, capture_output=True, timeout=60)
    _boot_to(tcg_sim, ["enter-initrd"])
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    (tmp_path / "other.json").write_text('{"sha256": {"11": "' + "11" * 32 + '"}}')
    for out, src in ((good, ["--current"]), (bad, ["--pcr-values", str(tmp_path / "other.json")])):
        r = direct(tcg_sim, "policy", "sign", "--key", str(key), "--pcrs", "sha256:11", *src,
                   "--format", "systemd", "--output", str(out))
        assert r.rc == 0, r.err
    name = f"tpmseal-{os.getpid()}"

    def attach(sig: Path) -> str:
        assert SD_CRYPTSETUP is not None
        r = subprocess.run([SD_CRYPTSETUP, "attach", name, str(img), "-",
                            f"tpm2-device=swtpm:path={sock},tpm2-signature={sig},headless=1"],
                           capture_output=True, text=True, timeout=60, check=False)
        if r.returncode == 0:  # device-mapper was available: the volume is open
            subprocess.run([SD_CRYPTSETUP, "detach", name], check=False, timeout=60)
            return "opened"
        return r.stderr

    said = attach(good)
    assert said == "opened" or "TPM2 acquired key" in said or "unlocks volume" in said, said
    said = attach(bad)
    assert said != "opened" and "Couldn't find signature" in said, said
