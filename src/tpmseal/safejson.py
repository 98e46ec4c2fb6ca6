"""JSON from files tpmseal did not necessarily write: UTF-8, depth and number guards.

``json.loads`` alone accepts ``NaN``, ``Infinity`` and ``1e400`` (a float
infinity), integers of thousands of digits, and nesting deep enough to raise
RecursionError. Blob, trust and capture files hold none of these, so
:func:`loads` turns each into a one-line :class:`BadInputError`.
"""

from __future__ import annotations

import json
import math
from typing import Any

from tpmseal.errors import BadInputError

#: deeper than any file tpmseal writes (a blob is 3 levels, a capture record 4)
MAX_DEPTH = 16
#: digits in an integer: every integer tpmseal writes fits in 64 bits
MAX_INT_DIGITS = 20


class _Rejected(ValueError):
    pass


def _constant(text: str) -> Any:
    raise _Rejected(f"non-finite number {text}")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Rejected(f"number {text[:20]} is out of range")
    return value


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _Rejected(f"integer of {len(text)} digits")
    return int(text)


def _depth_ok(doc: Any) -> bool:
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children = list(node.values())
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > MAX_DEPTH:
            return False
        stack.extend((c, depth + 1) for c in children)
    return True


def loads(text: str | bytes, where: str, hint: str) -> Any:
    """Parse *text* (UTF-8 if bytes) or raise :class:`BadInputError`.

    Messages start with *where* (e.g. "trust file X is malformed") and end with *hint*.
    """
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        doc = json.loads(text, parse_constant=_constant, parse_float=_float, parse_int=_int)
    except UnicodeDecodeError as e:
        raise BadInputError(f"{where}: not UTF-8 text (byte {e.start})", hint) from None
    except json.JSONDecodeError as e:
        raise BadInputError(f"{where}: not JSON ({e.msg} at line {e.lineno} column {e.colno})",
                            hint) from None
    except _Rejected as e:
        raise BadInputError(f"{where}: it holds a {e}", hint) from None
    except RecursionError:
        raise BadInputError(_nested(where), hint) from None
    if not _depth_ok(doc):
        raise BadInputError(_nested(where), hint)
    return doc


def _nested(where: str) -> str:
    return f"{where}: JSON nested deeper than {MAX_DEPTH} levels"
