"""``tpmseal sim start|stop|status``: the swtpm simulator."""

from __future__ import annotations

import argparse
import json
from typing import Any

from tpmseal.errors import ExitCode, NotFoundError
from tpmseal.transport.simulator import Simulator


def register(sub: Any) -> None:
    p = sub.add_parser("sim", help="start, stop or inspect an swtpm simulator",
                       description="Manage an swtpm TPM 2.0 simulator on a state directory.")
    ssub = p.add_subparsers(dest="sim_command", metavar="ACTION", required=True)
    start = ssub.add_parser("start", help="start the simulator and print its TPM URI")
    start.add_argument("--state", required=True, metavar="DIR", help="state directory")
    start.add_argument("--ek-cert", action="store_true",
                       help="first provision EKs with certificates from a private CA "
                            "(swtpm_setup --create-ek-cert; CA in DIR/ca)")
    start.set_defaults(handler=_start)
    stop = ssub.add_parser("stop", help="stop the simulator")
    stop.add_argument("--state", required=True, metavar="DIR")
    stop.set_defaults(handler=_stop)
    status = ssub.add_parser("status", help="is the simulator running?")
    status.add_argument("--state", required=True, metavar="DIR")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=_status)


def _start(args: argparse.Namespace) -> int:
    print(Simulator(args.state).start(ek_cert=args.ek_cert))
    return 0


def _stop(args: argparse.Namespace) -> int:
    if not Simulator(args.state).stop():
        raise NotFoundError(f"no simulator is running on {args.state}",
                            hint="start one with `tpmseal sim start --state DIR`")
    return 0


def _status(args: argparse.Namespace) -> int:
    st = Simulator(args.state).status()
    info: dict[str, Any] = {"running": st.running, "pid": st.pid, "uri": st.uri,
                            "state": st.state_dir}
    if args.json:
        print(json.dumps(info))
    else:
        print(f"running pid {st.pid} at {st.uri}" if st.running else "stopped")
    return 0 if st.running else int(ExitCode.TPM_UNREACHABLE)
