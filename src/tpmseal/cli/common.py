"""Helpers shared by the sub-commands: opening the TPM, common options, output."""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Any, Literal, overload

from tpmseal.client.tpm import Tpm
from tpmseal.errors import UsageError
from tpmseal.log import INFO, get_logger
from tpmseal.recipes import trust
from tpmseal.recipes.profiles import PROFILES, Profile, get_profile
from tpmseal.recipes.trust import TrustRecord, trust_path
from tpmseal.transport.base import Transport, default_uri, parse_uri

if TYPE_CHECKING:  # argparse loads only when parsing needs it (cli/quick.py)
    import argparse
    from collections.abc import Callable

log = get_logger("tpmseal.cli")


class LoggedTransport:
    """Logs each exchange (command name, sizes, response code, time) and a summary on close.

    Only the 10-byte headers are looked at: nothing of a parameter is ever logged.
    """

    def __init__(self, inner: Transport):
        self.inner = inner
        self.uri = inner.uri
        self.count = 0
        self.busy = 0.0
        self._opened = time.monotonic()

    def send(self, command: bytes) -> bytes:
        from tpmseal.wire.constants import TPM_CC, enum_name
        from tpmseal.wire.rc import rc_name

        code = int.from_bytes(command[6:10], "big")
        name = enum_name(TPM_CC, code)
        start = time.monotonic()
        response = self.inner.send(command)
        took = time.monotonic() - start
        self.count += 1
        self.busy += took
        rc = int.from_bytes(response[6:10], "big")
        log.info("TPM %s: %d bytes -> %d bytes, %s, %.2f ms", name, len(command),
                 len(response), "success" if rc == 0 else rc_name(rc), took * 1000)
        return response

    def close(self) -> None:
        log.info("%d TPM command(s), %.2f ms at the TPM, %.1f ms connected to %s",
                 self.count, self.busy * 1000, (time.monotonic() - self._opened) * 1000,
                 self.uri)
        self.inner.close()


def open_tpm(args: argparse.Namespace) -> Tpm:
    """The TPM named by --tpm / $TPMSEAL_TPM / $TPM2TOOLS_TCTI / $TCTI / the default device.

    A ``sim:DIR`` simulator started here keeps running; the user is told so, and how to stop
    it. With ``-v`` every exchange is logged (see :class:`LoggedTransport`).
    """
    uri = args.tpm or default_uri()
    sim_dir = _sim_dir(uri)
    was_running = sim_dir is None or _sim_running(sim_dir)
    tpm = Tpm.open(uri)
    if not was_running:
        from tpmseal.transport.simulator import Simulator

        pid = Simulator(sim_dir or "").pid()
        sys.stderr.write(f"tpmseal: started swtpm (pid {pid}) for {uri}; it keeps running: "
                         f"stop it with `tpmseal sim stop --state {sim_dir}`\n")
    if _verbose():
        tpm.transport = LoggedTransport(tpm.transport)
    return tpm


def _verbose() -> bool:
    """Whether info records of ``tpmseal.cli`` are shown (-v, --debug, or a library user's
    logging set-up); never imports :mod:`logging` itself (start-up time)."""
    logging = sys.modules.get("logging")
    return logging is not None and bool(logging.getLogger("tpmseal.cli").isEnabledFor(INFO))


def _sim_dir(uri: str) -> str | None:
    try:
        parsed = parse_uri(uri)
    except UsageError:
        return None  # reported when the TPM is opened
    return parsed.path if parsed.scheme == "sim" else None


def _sim_running(state: str) -> bool:
    from tpmseal.transport.simulator import Simulator

    return Simulator(state).pid() is not None


def add_profile(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", choices=sorted(PROFILES), default="tcg",
                   help="handle layout: tcg (TCG conventions, default) or eve (LF Edge EVE)")


def add_json(p: argparse.ArgumentParser, help: str | None = None) -> None:
    """``--json``; *help* names the command's keys (default: see README.md)."""
    p.add_argument("--json", action="store_true",
                   help=help or "print one JSON object with the keys documented in README.md "
                                "(never the secret)")


def json_needs_file(args: argparse.Namespace) -> None:
    """With --json, stdout carries the report: the secret must go to a file."""
    if args.json and (args.output is None or args.output == "-"):
        raise UsageError("--json prints a report on stdout, so the secret cannot go there",
                         "pass --output FILE as well")


def profile_of(args: argparse.Namespace) -> Profile:
    return get_profile(args.profile)


def trust_of(args: argparse.Namespace) -> str:
    return trust_path(args.trust_file)


@overload
def record_of(args: argparse.Namespace, profile: Profile, *, required: Literal[True],
              salt_of: Callable[[], bytes | None] | None = None) -> TrustRecord: ...


@overload
def record_of(args: argparse.Namespace, profile: Profile, *, required: bool,
              salt_of: Callable[[], bytes | None] | None = None) -> TrustRecord | None: ...


def record_of(args: argparse.Namespace, profile: Profile, *, required: bool,
              salt_of: Callable[[], bytes | None] | None = None) -> TrustRecord | None:
    """The trust record of *profile* for the TPM --tpm names (recipes/trust.py, select):
    the one pinning the salt key a blob file records (*salt_of*, called once the trust
    file read), else the one provisioned at that address, else the profile's only one.
    *required*: :class:`NotFoundError` if there is none."""
    path = trust_of(args)
    records = trust.load_all(path)
    where = trust.address(args.tpm or default_uri())
    rec = trust.select(records, profile.name, path, address=where,
                       salt_name=salt_of() if salt_of is not None else None)
    return trust.required(rec, path, profile.name) if required else rec


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def add_accept_sealed_object(p: argparse.ArgumentParser) -> None:
    """--accept-sealed-object: re-pin the object in EVE's NV layout (recipes/stores.py)."""
    p.add_argument("--accept-sealed-object", action="store_true",
                   help="with --nv / vault-key: accept the sealed object now in NV although "
                        "the trust file pins another one (after other software such as EVE "
                        "re-sealed it), and pin it")
