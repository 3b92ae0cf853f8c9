"""JSON: what can go on the wire, made JSON-safe once, encoded and parsed one way.

Every envelope and frame is encoded by :func:`encode` (ASCII only, no NaN)
and every client frame parsed by :func:`parse`.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import json
import math
import uuid
from typing import Any

__all__ = ["PRIMITIVE_TYPES", "VERBATIM_TYPES", "encode", "is_flat_json", "json_safe", "parse"]

_PRIMITIVES = (str, int, float, bool, type(None))
#: Types json.dumps takes as they are (floats included, NaN and infinities too).
PRIMITIVE_TYPES = frozenset(_PRIMITIVES)
#: Types whose values are JSON as they are. Not float: NaN and infinities are not JSON.
VERBATIM_TYPES = frozenset({str, int, bool, type(None)})

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


def json_safe(value: Any) -> Any:
    """Return ``value`` as something ``json.dumps`` accepts without a custom encoder.

    Datetimes, dates and times become ISO 8601 strings; decimals and UUIDs
    become strings; timedeltas seconds; bytes base64; lists, tuples and sets
    lists; a model instance its primary key; NaN and infinities ``None``;
    anything else ``str(value)``.
    """
    if type(value) is float:
        return value if math.isfinite(value) else None
    if type(value) in PRIMITIVE_TYPES:
        return value
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, _PRIMITIVES):
        return value
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
    return str(value)


def is_flat_json(value: dict[str, Any]) -> bool:
    """Return whether a dict has str keys and only values JSON takes as they are."""
    for key, item in value.items():
        if type(key) is not str or type(item) not in VERBATIM_TYPES:
            if type(key) is str and type(item) is float and math.isfinite(item):
                continue
            return False
    return True
