"""Error classes shared by every layer, and the CLI exit code each one maps to.

Principle: errors are types (docs/ARCHITECTURE.md, principle 4). Each class carries the exit
code the CLI uses and an optional *hint* telling the user what to do. Messages
never contain key material.
"""

from __future__ import annotations

#: what to do after a response failed a check: it may be noise, or an interposer
BUS_HINT = "retry; if it persists, suspect an interposer on the TPM bus"


class ExitCode:
    """Exit codes of the ``tpmseal`` command (documented in README.md).

    A plain class of ``int`` attributes, like the tables of wire/constants.py: an
    ``IntEnum`` of 13 members costs ~0.2 ms of every CLI start-up.
    """

    OK = 0
    INTERNAL = 1
    USAGE = 2
    TPM_UNREACHABLE = 3
    TPM_ERROR = 4
    PCR_MISMATCH = 5
    INTEGRITY = 6
    BAD_INPUT = 7
    MISSING_TOOL = 8
    AUTH_FAILED = 9
    LEAK_FOUND = 10
    NOT_FOUND = 11
    TORN_STORE = 12


class TpmsealError(Exception):
    """Base class: a failure with a user-facing sentence and an exit code."""

    exit_code: int = ExitCode.INTERNAL
    #: the hint when the raiser gives none; classes without one require a hint at every
    #: raise (tests/test_error_contract.py checks the source)
    default_hint: str | None = None

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint or self.default_hint

    def one_line(self) -> str:
        """The message and hint on one line, as the CLI prints it."""
        text = self.message
        if self.hint:
            text = f"{text}; {self.hint}"
        return " ".join(text.split())


class UsageError(TpmsealError):
    """The caller asked for something invalid (bad option, bad PCR list...)."""

    exit_code = ExitCode.USAGE


class DecodeError(TpmsealError):
    """Bytes did not parse as the expected TPM structure; *offset* says where."""

    exit_code = ExitCode.BAD_INPUT
    default_hint = "the data is truncated or corrupted: check where it came from"

    def __init__(self, message: str, offset: int, hint: str | None = None):
        super().__init__(f"{message} (at byte offset {offset})", hint)
        self.offset = offset


class TransportError(TpmsealError):
    """The TPM could not be reached, or the connection broke mid-exchange."""

    exit_code = ExitCode.TPM_UNREACHABLE
    default_hint = "check that the TPM or simulator is running and reachable, then retry"


class IntegrityError(TpmsealError):
    """Something the TPM sent failed a security check: possible bus tampering."""

    exit_code = ExitCode.INTEGRITY


class ResponseIntegrityError(IntegrityError):
    """A response HMAC did not verify (TPM 2.0 Part 1 §19.6.16)."""

    default_hint = BUS_HINT

    def __init__(self, message: str | None = None, hint: str | None = None):
        super().__init__(
            message
            or "TPM response failed its HMAC check: modified in transit or session out of sync",
            hint)


class TrustError(IntegrityError):
    """The TPM's keys do not match what was pinned at provisioning."""


#: The sentence for a salt key the TPM cannot use: the key at the pinned handle differs.
EK_MISMATCH = ("the TPM's endorsement key does not match the trusted one: possible interposer "
               "or replaced TPM")


class PolicyMismatchError(TpmsealError):
    """Unseal refused because the PCR policy no longer holds."""

    exit_code = ExitCode.PCR_MISMATCH

    def __init__(self, message: str, changed: dict[str, list[int]] | None = None,
                 hint: str | None = None):
        super().__init__(message, hint)
        self.changed = changed or {}


class AuthFailedError(TpmsealError):
    """The PIN or password was wrong."""

    exit_code = ExitCode.AUTH_FAILED


class BadInputError(TpmsealError):
    """An input file (blob, trust file, capture) is malformed."""

    exit_code = ExitCode.BAD_INPUT


class MissingToolError(TpmsealError):
    """A program tpmseal needs (swtpm, swtpm_setup...) is not installed."""

    exit_code = ExitCode.MISSING_TOOL


class NotFoundError(TpmsealError):
    """Something expected on the TPM (key, NV index, sealed blob) is absent."""

    exit_code = ExitCode.NOT_FOUND


class TornStoreError(TpmsealError):
    """The NV layout holds part of a sealed pair and no complete one (an interrupted
    write): nothing is replaced, the secret has to be restored from its escrow."""

    exit_code = ExitCode.TORN_STORE


class LeakFoundError(TpmsealError):
    """The sniffer saw a secret on the bus."""

    exit_code = ExitCode.LEAK_FOUND
