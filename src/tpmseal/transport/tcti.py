"""tpm2-tss TCTI configuration strings, as tpm2-tools' ``-T``/``TPM2TOOLS_TCTI`` take them.

A TCTI string is ``NAME`` or ``NAME:CONF`` (tpm2-tss doc/tcti.md, "tcti Loader"); NAME may
also be spelled as the library, ``libtss2-tcti-NAME.so.0``. The names tpmseal speaks:

=====================================  ==================================================
``device:/dev/tpmrm0``                 a character device; bare ``device`` is /dev/tpm0
``swtpm:path=/run/tpm.sock``           swtpm's unix data socket (control at PATH.ctrl)
``swtpm:host=H,port=P``                swtpm's TCP data socket (control at P+1); the
                                       defaults, as tpm2-tss': host=localhost, port=2321
``mssim:host=H,port=P``                the Microsoft/IBM simulator protocol (the data
                                       channel wraps each command in TPM_SEND_COMMAND);
                                       same defaults; swtpm's data port speaks it too
=====================================  ==================================================

The swtpm and mssim configurations are ``key=value`` pairs separated by commas; an
unknown key, a repeated key or a port outside 1-65535 is refused, as tpm2-tss does.
"""

from __future__ import annotations

import re

from tpmseal.errors import UsageError
from tpmseal.transport.base import TpmUri

DEFAULT_HOST = "localhost"
DEFAULT_PORT = 2321
DEVICE_DEFAULT = "/dev/tpm0"  # tcti-device's default when no path is given
NAMES = ("device", "swtpm", "mssim")
_LIBRARY = re.compile(r"^libtss2-tcti-(?P<name>[a-z0-9-]+)\.so(?:\.\d+)*$")
_UNSUPPORTED = {
    "tabrmd": "tpmseal does not talk to tpm2-abrmd; use the kernel resource manager, "
              "device:/dev/tpmrm0",
    "abrmd": "tpmseal does not talk to tpm2-abrmd; use the kernel resource manager, "
             "device:/dev/tpmrm0",
}


def tcti_name(text: str) -> str:
    """The TCTI name in *text* (``libtss2-tcti-swtpm.so.0`` -> ``swtpm``)."""
    m = _LIBRARY.match(text)
    return m.group("name") if m else text


def unsupported_hint(name: str) -> str | None:
    """Why a known TCTI name that tpmseal does not speak is refused (None if not known)."""
    return _UNSUPPORTED.get(tcti_name(name))


def key_values(conf: str, allowed: tuple[str, ...], what: str) -> dict[str, str]:
    """Parse ``k=v,k=v``; refuse unknown or repeated keys and empty values."""
    pairs: dict[str, str] = {}
    if not conf:
        return pairs
    for item in conf.split(","):
        key, sep, value = item.partition("=")
        if not sep or not value or key not in allowed:
            raise UsageError(f"bad {what} TCTI option {item!r}",
                             f"use {', '.join(f'{k}=...' for k in allowed)} separated by commas, "
                             "or a tpmseal URI such as tcp:HOST:PORT")
        if key in pairs:
            raise UsageError(f"{what} TCTI option {key!r} given twice", "give it once")
        pairs[key] = value
    return pairs


def port_of(text: str, what: str) -> int:
    if not (text.isascii() and text.isdigit() and len(text) <= 5) or not 0 < int(text) < 65536:
        raise UsageError(f"bad {what} TCTI port {text!r}", "give a port between 1 and 65535")
    return int(text)


def parse(name: str, conf: str) -> TpmUri:
    """The TCTI *name* with configuration *conf* as a :class:`TpmUri`."""
    if name == "device":
        return TpmUri("device", path=conf or DEVICE_DEFAULT)
    keys = ("host", "port", "path") if name == "swtpm" else ("host", "port")
    kv = key_values(conf, keys, name)
    port = port_of(kv["port"], name) if "port" in kv else DEFAULT_PORT
    if "path" in kv:
        if "host" in kv or "port" in kv:
            raise UsageError(f"swtpm TCTI {name}:{conf} names both a path and a host/port",
                             "give path=SOCKET or host=H,port=P")
        return TpmUri("unix", path=kv["path"])
    host = kv.get("host", DEFAULT_HOST)
    return TpmUri("tcp" if name == "swtpm" else "mssim", host=host.strip("[]"), port=port)
