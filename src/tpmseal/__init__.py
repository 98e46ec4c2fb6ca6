"""tpmseal: seal secrets into a TPM 2.0 without them crossing the bus in plaintext.

The library API (docs/API.md) is reachable from here: ``tpmseal.open_tpm``,
``tpmseal.provision``, ``tpmseal.seal``, ``tpmseal.unseal``, ``tpmseal.reseal``,
``tpmseal.vault_key``, ``tpmseal.SealedBlob``, the policy constructors
(``tpmseal.pcr_policy``, ``any_of_states``, ``signed_by``) and the error classes. Each is imported
on first use (module ``__getattr__``, PEP 562), so ``import tpmseal`` — which every
``tpmseal`` command does — costs nothing.

``__version__`` is the single source of the package version (pyproject.toml reads it).
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)

__version__ = "0.1.0"

_ERRORS = ("ExitCode", "TpmsealError", "UsageError", "DecodeError", "TransportError",
           "IntegrityError", "ResponseIntegrityError", "TrustError", "PolicyMismatchError",
           "AuthFailedError", "BadInputError", "MissingToolError", "NotFoundError",
           "LeakFoundError")
_API = ("open_tpm", "provision", "seal", "unseal", "reseal", "vault_key", "SealedBlob",
        "VaultResult", "Tpm", "SealPolicy", "pcr_policy", "any_of_states", "signed_by")
_LAZY = {**dict.fromkeys(_ERRORS, "tpmseal.errors"), **dict.fromkeys(_API, "tpmseal.api")}

__all__ = [  # noqa: RUF022 - grouped as above
    "__version__",
    "open_tpm", "provision", "seal", "unseal", "reseal", "vault_key", "SealedBlob",
    "VaultResult", "Tpm", "SealPolicy", "pcr_policy", "any_of_states", "signed_by",
    "ExitCode", "TpmsealError", "UsageError", "DecodeError", "TransportError",
    "IntegrityError", "ResponseIntegrityError", "TrustError", "PolicyMismatchError",
    "AuthFailedError", "BadInputError", "MissingToolError", "NotFoundError",
    "LeakFoundError",
]

if TYPE_CHECKING:
    from tpmseal.api import (
        SealedBlob,
        SealPolicy,
        Tpm,
        VaultResult,
        any_of_states,
        open_tpm,
        pcr_policy,
        provision,
        reseal,
        seal,
        signed_by,
        unseal,
        vault_key,
    )
    from tpmseal.errors import (
        AuthFailedError,
        BadInputError,
        DecodeError,
        ExitCode,
        IntegrityError,
        LeakFoundError,
        MissingToolError,
        NotFoundError,
        PolicyMismatchError,
        ResponseIntegrityError,
        TpmsealError,
        TransportError,
        TrustError,
        UsageError,
    )


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tpmseal' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
