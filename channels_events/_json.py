"""JSON: what can go on the wire, made JSON-safe once, encoded and parsed one way.

Every envelope and frame is encoded by :func:`encode` (ASCII only, no NaN)
and every client frame parsed by :func:`parse`. :func:`wire_payload` is the
one step that turns an event's payload into what travels, and refuses a
payload that cannot travel: JSON to browsers, msgpack through the channel
layer and the history, so only what both carry.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import json
import math
import re
import uuid
from typing import Any

from .exceptions import InvalidPayload

__all__ = [
    "INT_MAX",
    "INT_MIN",
    "MAX_DEPTH",
    "PRIMITIVE_TYPES",
    "VERBATIM_TYPES",
    "encode",
    "json_safe",
    "parse",
    "wire_payload",
]

_PRIMITIVES = (str, int, float, bool, type(None))
#: Types json.dumps takes as they are (floats included, NaN and infinities too).
PRIMITIVE_TYPES = frozenset(_PRIMITIVES)
#: Types whose values are JSON as they are. Not float: NaN and infinities are not JSON.
VERBATIM_TYPES = frozenset({str, int, bool, type(None)})

#: The integers msgpack, the channel layer's encoding, carries: 64-bit, signed or not.
INT_MIN = -(2**63)
INT_MAX = 2**64 - 1
#: How deeply lists and objects may nest inside a payload (msgpack stops at 512
#: levels, the envelope and message around the payload included).
MAX_DEPTH = 100
# UTF-8, which msgpack and browsers use for text, has no lone surrogates.
_SURROGATE = re.compile("[\ud800-\udfff]")

# ASCII-only output is valid UTF-8 whatever the strings hold (even lone
# surrogates a client sent as escapes); NaN and infinities are not JSON.
_ENCODER = json.JSONEncoder(ensure_ascii=True, allow_nan=False, separators=(",", ":"))
#: Encode a value as compact JSON text (ASCII only, no NaN).
encode = _ENCODER.encode


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse(text: str) -> Any:
    """Parse JSON text from a client; NaN and infinities are refused, as JSON has none."""
    return json.loads(text, parse_constant=_reject_constant)


class _NoText:
    """Stands in a converted payload for a value whose ``str()`` raised: it cannot travel."""

    __slots__ = ("error", "value")

    def __init__(self, value: Any, error: Exception) -> None:
        self.value = value
        self.error = error


def json_safe(value: Any) -> Any:
    """Return ``value`` as something ``json.dumps`` accepts without a custom encoder.

    Datetimes, dates and times become ISO 8601 strings; decimals and UUIDs
    become strings; timedeltas seconds; bytes base64; lists, tuples and sets
    lists; a model instance its primary key; NaN and infinities ``None``;
    subclasses of str, int and float (enums) their plain value; anything
    else ``str(value)``. Whether the result can travel is for
    :func:`wire_payload` to say.
    """
    if type(value) is float:
        return value if math.isfinite(value) else None
    if type(value) in PRIMITIVE_TYPES:
        return value
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return str(value)
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    meta = getattr(type(value), "_meta", None)
    if meta is not None and hasattr(meta, "pk"):  # a Django model instance
        return json_safe(value.pk)
    try:
        return str(value)
    except Exception as exc:
        return _NoText(value, exc)


class _Misfit:
    """A value that cannot travel as it is: where it is, and why.

    ``reason`` None means the value only needs converting by :func:`json_safe`
    (a datetime, a tuple, NaN); otherwise no conversion helps.
    """

    __slots__ = ("path", "reason", "value")

    def __init__(self, value: Any, reason: str | None = None) -> None:
        self.value = value
        self.reason = reason
        #: The keys and indexes leading to the value, innermost first.
        self.path: list[Any] = []

    def describe(self) -> str:
        steps = [f"[{_short(key)}]" for key in reversed(self.path)]
        if len(steps) > 10:
            steps = [*steps[:6], "[...]", *steps[-3:]]
        where = "payload" + "".join(steps)
        reason = self.reason
        if reason is None:
            value = self.value
            if isinstance(value, _NoText):
                reason = (
                    f"is a {type(value.value).__qualname__} with no text form "
                    f"(str() raised {value.error!r}); pass plain data"
                )
            else:
                reason = f"is a {type(value).__qualname__}, which JSON has no form for"
        return f"{where} {reason}"


def _short(key: Any) -> str:
    """Return the repr of a key, cut short when long (a client's key may be 60 KiB)."""
    if isinstance(key, str) and len(key) > 40:
        return repr(key[:32]) + "..."
    return repr(key)


def _surrogate(text: str) -> str | None:
    """Return what is wrong with ``text`` if it holds a lone surrogate, else None."""
    if text.isascii():
        return None
    found = _SURROGATE.search(text)
    if found is None:
        return None
    return (
        f"holds a lone surrogate {found.group()!r} at index {found.start()}, which UTF-8 "
        "cannot encode; pass valid Unicode text"
    )


def _out_of_range(number: int) -> str:
    bits = number.bit_length()
    # Huge ints have no repr in Python 3.11+ (over 4300 digits): say their size.
    shown = repr(number) if bits <= 256 else f"an integer of {bits} bits"
    return (
        f"is {shown}, outside the integers the channel layer carries (-2**63 to 2**64 - 1); "
        "send it as a string"
    )


def _misfit_in(value: Any, depth: int) -> _Misfit | None:
    """Return the first value in dict or list ``value`` that cannot travel as it is, or None.

    One loop judges every value, without a call per value: the check is
    most of what it costs to make an event (bench/dispatch.py).
    """
    keyed = type(value) is dict
    pairs = value.items() if keyed else enumerate(value)
    for key, item in pairs:
        if keyed and (type(key) is not str or not key.isascii()):
            if type(key) is not str:
                return _Misfit(key)
            reason = _surrogate(key)
            if reason is not None:
                return _Misfit(key, f"has a key that {reason}")
        kind = type(item)
        if kind is str:
            if item.isascii():
                continue
            reason = _surrogate(item)
            if reason is None:
                continue
            found = _Misfit(item, reason)
        elif kind is int:
            if INT_MIN <= item <= INT_MAX:
                continue
            found = _Misfit(item, _out_of_range(item))
        elif item is None or kind is bool:
            continue
        elif kind is dict or kind is list:
            if depth < MAX_DEPTH:
                inner = _misfit_in(item, depth + 1)
                if inner is None:
                    continue
                found = inner
            else:
                found = _Misfit(item, f"nests lists and objects more than {MAX_DEPTH} levels deep")
        elif kind is float and math.isfinite(item):
            continue
        else:
            found = _Misfit(item)  # NaN, a datetime, a tuple: json_safe converts it
        found.path.append(key)
        return found
    return None


def wire_payload(payload: Any, name: str) -> dict[str, Any]:
    """Return the payload of event ``name`` as it travels; refuse one that cannot travel.

    A payload of plain data (str keys; strings, ints, finite floats, bools,
    None, lists and dicts of them) travels as it is, the very dict; other
    values are converted by :func:`json_safe`. What no conversion makes
    fit raises InvalidPayload naming where it is: integers outside
    msgpack's 64-bit range, text with lone surrogates, nesting deeper than
    ``MAX_DEPTH``, objects with no text form.
    """
    if type(payload) is dict:
        found = _misfit_in(payload, 0)
        if found is None:
            return payload
    elif isinstance(payload, dict):
        found = _Misfit(payload)  # a dict subclass: made a plain dict
    else:
        raise InvalidPayload(
            f"Payload of event {name!r} must be a dict, got {type(payload).__name__} {payload!r}."
        )
    if found.reason is None:
        try:
            converted: dict[str, Any] = json_safe(payload)
        except RecursionError:
            raise InvalidPayload(
                f"Payload of event {name!r} cannot travel: it nests lists and objects "
                f"more than {MAX_DEPTH} levels deep."
            ) from None
        found = _misfit_in(converted, 0)
        if found is None:
            return converted
    raise InvalidPayload(f"Payload of event {name!r} cannot travel: {found.describe()}.")
