"""Launch and manage an swtpm TPM 2.0 simulator on a private state directory.

Used by ``tpmseal sim``, ``tpmseal demo``, the ``sim:`` URI scheme and the test
fixtures. The simulator is the real ``swtpm`` (Debian package ``swtpm``) serving
its data channel on ``STATE/tpm.sock`` and its control channel on
``STATE/tpm.sock.ctrl`` — the layout tpm2-tools' ``swtpm:path=`` TCTI expects.

With ``ek_cert=True`` the state is first provisioned by ``swtpm_setup
--create-ek-cert`` (package ``swtpm-tools``) with a private local CA in
``STATE/ca``, giving a real EK certificate chain: root
``ca/swtpm-localca-rootca-cert.pem`` → intermediate ``ca/issuercert.pem`` → EK
certificates in NV 0x01C00002 (RSA-2048) and 0x01C00016 (ECC P-384), with the
EKs persisted at 0x81010001 and 0x81010016.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tpmseal.errors import MissingToolError, TransportError, UsageError

_SUN_PATH_MAX = 107
_PTM_INIT = 2  # swtpm control channel: power-cycle the TPM (swtpm_ioctl -i)


@dataclass(frozen=True)
class SimStatus:
    running: bool
    pid: int | None
    uri: str
    state_dir: str


def _require(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise MissingToolError(f"{tool} is not installed",
                               f"install it with `apt-get install {package}`")
    return path


class Simulator:
    """An swtpm process bound to one state directory."""

    def __init__(self, state_dir: str | os.PathLike[str]):
        self.state = Path(state_dir).absolute()
        self.sock = self.state / "tpm.sock"
        self.ctrl = self.state / "tpm.sock.ctrl"
        self.pidfile = self.state / "swtpm.pid"
        self.ca_dir = self.state / "ca"

    @property
    def uri(self) -> str:
        return f"unix:{self.sock}"

    @property
    def tools_tcti(self) -> str:
        """The TCTI string for tpm2-tools (``TPM2TOOLS_TCTI``)."""
        return f"swtpm:path={self.sock}"

    # ------------------------------------------------------------------ state

    def pid(self) -> int | None:
        """The simulator's pid if its pid file names a live swtpm process.

        Liveness is judged by the process, not by the data socket: swtpm serves
        one data connection at a time, so a simulator busy with another client
        (a sniffer, a long test) would look dead — and must never be restarted
        over, which would orphan it.
        """
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            return None
        except OSError:
            return pid  # cannot inspect it (other user): trust the pid file
        return pid if b"swtpm" in cmdline else None

    def status(self) -> SimStatus:
        pid = self.pid()
        return SimStatus(pid is not None, pid, self.uri, str(self.state))

    def _answers(self) -> bool:
        """True if the data socket completes a TPM2_GetRandom exchange."""
        get_random = bytes.fromhex("80010000000c0000017b0001")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(2)
                s.connect(str(self.sock))
                s.sendall(get_random)
                return len(s.recv(64)) >= 10
        except OSError:
            return False

    # --------------------------------------------------------------- start/stop

    def start(self, *, ek_cert: bool = False, timeout: float = 10.0) -> str:
        """Start swtpm (idempotent) and return its URI once the TPM answers."""
        if self.pid() is not None:
            return self.uri
        swtpm = _require("swtpm", "swtpm")
        if len(str(self.ctrl)) > _SUN_PATH_MAX:
            raise UsageError(f"state directory path too long for a unix socket: {self.state}",
                             "choose a shorter --state path")
        try:
            self.state.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as e:
            raise UsageError(f"cannot use {self.state} as a simulator state directory: "
                             f"{e.strerror}", "pass a directory path to --state") from None
        if not self.state.is_dir():
            raise UsageError(f"{self.state} is not a directory",
                             "pass a directory path to --state")
        if ek_cert and not (self.state / "tpm2-00.permall").exists():
            self._setup_ek_cert()
        for p in (self.sock, self.ctrl, self.pidfile):
            p.unlink(missing_ok=True)
        cmd = [swtpm, "socket", "--tpm2",
               "--server", f"type=unixio,path={self.sock}",
               "--ctrl", f"type=unixio,path={self.ctrl}",
               "--tpmstate", f"dir={self.state}",
               "--flags", "not-need-init,startup-clear",
               "--pid", f"file={self.pidfile}",
               "--log", f"file={self.state / 'swtpm.log'},level=1",
               "-d"]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            why = (done.stderr.strip() or done.stdout.strip() or self._log_tail()
                   or f"exit status {done.returncode}")
            raise TransportError(f"swtpm failed to start: {why}",
                                 f"see {self.state / 'swtpm.log'}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.sock.exists() and self._answers():
                return self.uri
            time.sleep(0.01)
        raise TransportError(f"swtpm started but did not answer within {timeout:g}s",
                             f"see {self.state / 'swtpm.log'}")

    def _log_tail(self) -> str:
        try:
            lines = (self.state / "swtpm.log").read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return lines[-1].strip() if lines else ""

    def ensure_running(self) -> str:
        """Start the simulator unless it already runs (used by ``sim:`` URIs)."""
        return self.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the simulator; returns False if it was not running."""
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.pid() is not None:
            time.sleep(0.01)
        if self.pid() is not None:
            os.kill(pid, signal.SIGKILL)
        self.pidfile.unlink(missing_ok=True)
        return True

    def power_cycle(self) -> None:
        """Reset the TPM as a reboot would (PCRs cleared; TPM2_Startup follows)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(self.ctrl))
            s.sendall(struct.pack(">II", _PTM_INIT, 0))
            result = s.recv(4)
        if len(result) != 4 or int.from_bytes(result, "big") != 0:
            raise TransportError("swtpm refused the power-cycle request")

    # ------------------------------------------------------------- provisioning

    def _setup_ek_cert(self) -> None:
        """Provision EKs and EK certificates with swtpm_setup and a private CA."""
        setup = _require("swtpm_setup", "swtpm-tools")
        localca = _require("swtpm_localca", "swtpm-tools")
        cfg = self.state / "ca-config"
        cfg.mkdir(exist_ok=True, mode=0o700)
        (cfg / "swtpm-localca.conf").write_text(
            f"statedir = {self.ca_dir}\n"
            f"signingkey = {self.ca_dir}/signkey.pem\n"
            f"issuercert = {self.ca_dir}/issuercert.pem\n"
            f"certserial = {self.ca_dir}/certserial\n")
        (cfg / "swtpm-localca.options").write_text(
            "--platform-manufacturer tpmseal\n--platform-version 2.1\n--platform-model sim\n")
        (cfg / "swtpm_setup.conf").write_text(
            f"create_certs_tool = {localca}\n"
            f"create_certs_tool_config = {cfg}/swtpm-localca.conf\n"
            f"create_certs_tool_options = {cfg}/swtpm-localca.options\n"
            "active_pcr_banks = sha256\n")
        done = subprocess.run(
            [setup, "--tpm2", "--tpmstate", str(self.state), "--config",
             str(cfg / "swtpm_setup.conf"), "--create-ek-cert", "--overwrite"],
            capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise TransportError(f"swtpm_setup failed: {done.stderr.strip()[-300:]}")
