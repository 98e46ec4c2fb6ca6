"""``tpmseal sim start|stop|status``: the swtpm simulator."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tpmseal.errors import ExitCode, NotFoundError
from tpmseal.transport.simulator import Simulator


def register(sub: Any) -> None:
    p = sub.add_parser("sim", help="start, stop or inspect an swtpm simulator",
                       description="Manage an swtpm TPM 2.0 simulator on a state directory.")
    ssub = p.add_subparsers(dest="sim_command", metavar="ACTION", required=True)
    start = ssub.add_parser("start", help="start the simulator and print its TPM URI",
                            description="Start swtpm on DIR (idempotent) and print its TPM URI "
                                        "on stdout; stderr says what was started and how to "
                                        "stop it.")
    start.add_argument("--state", required=True, metavar="DIR", help="state directory")
    start.add_argument("--ek-cert", action="store_true",
                       help="first provision EKs with certificates from a private CA "
                            "(swtpm_setup --create-ek-cert; CA in DIR/ca)")
    add_json(start)
    start.set_defaults(handler=_start)
    stop = ssub.add_parser("stop", help="stop the simulator")
    stop.add_argument("--state", required=True, metavar="DIR")
    add_json(stop)
    stop.set_defaults(handler=_stop)
    status = ssub.add_parser("status", help="is the simulator running?")
    status.add_argument("--state", required=True, metavar="DIR")
    add_json(status)
    status.set_defaults(handler=_status)


def add_json(p: argparse.ArgumentParser) -> None:
    # not cli.common's: that one loads the TPM client, which `sim` does not need
    p.add_argument("--json", action="store_true",
                   help="print one JSON object with the keys documented in README.md")


def print_json(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, indent=2))


def _start(args: argparse.Namespace) -> int:
    sim = Simulator(args.state)
    already = sim.pid()
    uri = sim.start(ek_cert=args.ek_cert)
    st = sim.status()
    if args.json:
        print_json({"uri": uri, "tools_tcti": sim.tools_tcti, "state": st.state_dir,
                    "pid": st.pid, "started": already is None})
        return 0
    print(uri)
    verb = "started" if already is None else "already running:"
    sys.stderr.write(f"tpmseal: {verb} swtpm (pid {st.pid}) on {st.state_dir}; tpm2-tools: "
                     f"TPM2TOOLS_TCTI={sim.tools_tcti}; stop it with "
                     f"`tpmseal sim stop --state {args.state}`\n")
    return 0


def _stop(args: argparse.Namespace) -> int:
    sim = Simulator(args.state)
    pid = sim.pid()
    if not sim.stop():
        raise NotFoundError(f"no simulator is running on {args.state}",
                            hint="start one with `tpmseal sim start --state DIR`")
    if args.json:
        print_json({"stopped": True, "pid": pid, "state": str(sim.state)})
    else:
        print(f"stopped swtpm (pid {pid}) on {sim.state}")
    return 0


def _status(args: argparse.Namespace) -> int:
    st = Simulator(args.state).status()
    info: dict[str, Any] = {"running": st.running, "pid": st.pid, "uri": st.uri,
                            "state": st.state_dir}
    if args.json:
        print_json(info)
    else:
        print(f"running pid {st.pid} at {st.uri}" if st.running else "stopped")
    return 0 if st.running else int(ExitCode.TPM_UNREACHABLE)
