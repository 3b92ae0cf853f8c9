"""Subscription filters: ``where`` on payload paths (PROTOCOL.md section 4).

A filter is a set of conditions on an event's payload, as the client sees it
(the envelope's ``payload``). Each condition names a dotted path (``pk``,
``fields.status``) and the values allowed there: one JSON scalar (equal) or
a list of them (any of). Every condition must hold.

Values compare as JSON values, not as Python objects: numbers by their
value (``1`` equals ``1.0``), strings by their text, ``true``/``false`` and
``null`` only to themselves. A boolean is not a number (``true`` does not
equal ``1``), and a string is never a number (``"1"`` does not equal ``1``).
A path that is missing from the payload, runs through something that is not
an object, or ends on an object or a list matches no value, not even
``null``.

Filters are values: two filters with the same conditions are equal and hash
alike, however their keys and lists were ordered, so connections that ask
for the same thing share one verdict per event (``_frames.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .exceptions import InvalidFilter

__all__ = ["MAX_KEYS", "MAX_PATH_LENGTH", "MAX_VALUES", "Filter", "parse_filter"]

#: The most conditions a filter may have.
MAX_KEYS = 8
#: The most values a condition's list may hold.
MAX_VALUES = 100
#: The longest dotted path a condition may name.
MAX_PATH_LENGTH = 255

# A JSON scalar as a filter compares it: the kind of value and the value.
# Python already makes 1 == 1.0 with the same hash, so numbers need no more;
# the kind keeps True apart from 1 and "1" apart from 1.
_Key = tuple[str, Any]


def _scalar_key(value: Any) -> _Key | None:
    """Return the comparison key of a JSON scalar, or None if ``value`` is not one."""
    if value is None:
        return ("null", None)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float)):
        if isinstance(value, float) and value != value:  # NaN is not JSON
            return None
        return ("number", value)
    if isinstance(value, str):
        return ("string", value)
    return None


class Filter:
    """Conditions on payload paths that an event must all meet: a parsed ``where``.

    Build one with :func:`parse_filter`; combine two with :meth:`narrow`.
    """

    __slots__ = ("_conditions", "_hash")

    def __init__(self, conditions: dict[tuple[str, ...], frozenset[_Key]]) -> None:
        # Sorted by path, so that equal filters compare and hash alike.
        self._conditions = tuple(sorted(conditions.items()))
        self._hash = hash(self._conditions)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Filter) and self._conditions == other._conditions

    def __hash__(self) -> int:
        return self._hash

    def __bool__(self) -> bool:
        return bool(self._conditions)

    def __repr__(self) -> str:
        return f"<Filter {self.as_where()!r}>"

    def as_where(self) -> dict[str, Any]:
        """Return the filter as a ``where`` object (lists sorted by kind and value)."""
        where: dict[str, Any] = {}
        for path, keys in self._conditions:
            values = [value for _kind, value in sorted(keys, key=lambda key: (key[0], str(key[1])))]
            where[".".join(path)] = values[0] if len(values) == 1 else values
        return where

    def narrow(self, other: Filter | None) -> Filter:
        """Return the filter whose events meet both this one and ``other``.

        Where both name a path, a value must be allowed by both: the result
        is never wider than either, so a client's ``where`` cannot widen the
        filter a policy set.
        """
        if other is None or not other:
            return self
        if not self:
            return other
        conditions = dict(self._conditions)
        for path, keys in other._conditions:
            mine = conditions.get(path)
            conditions[path] = keys if mine is None else mine & keys
        return Filter(conditions)

    def matches(self, payload: Any) -> bool:
        """Return whether ``payload`` (an event's JSON-safe payload) meets every condition."""
        for path, allowed in self._conditions:
            value = payload
            for segment in path:
                if not isinstance(value, dict):
                    return False
                try:
                    value = value[segment]
                except KeyError:
                    return False
            key = _scalar_key(value)
            if key is None or key not in allowed:
                return False
        return True


def parse_filter(where: object) -> Filter:
    """Return the filter a ``where`` object describes, or raise InvalidFilter saying what is wrong.

    ``where`` maps at most 8 dotted paths to a JSON scalar or a non-empty
    list of at most 100 scalars. The segments of a path are non-empty.
    """
    if not isinstance(where, Mapping):
        raise InvalidFilter(
            f"where must be an object of dotted payload paths to values; got {where!r}."
        )
    if len(where) > MAX_KEYS:
        raise InvalidFilter(f"where may name at most {MAX_KEYS} paths; got {len(where)}.")
    conditions: dict[tuple[str, ...], frozenset[_Key]] = {}
    for path, wanted in where.items():
        if (
            not isinstance(path, str)
            or not 0 < len(path) <= MAX_PATH_LENGTH
            or "" in path.split(".")
        ):
            raise InvalidFilter(
                f"where keys must be dotted payload paths such as 'pk' or 'fields.status' "
                f"(at most {MAX_PATH_LENGTH} characters, no empty segment); got {path!r}."
            )
        values = wanted if isinstance(wanted, list) else [wanted]
        if isinstance(wanted, list) and not 0 < len(wanted) <= MAX_VALUES:
            raise InvalidFilter(
                f"where[{path!r}] must list 1 to {MAX_VALUES} values; got {len(wanted)}."
            )
        keys = set()
        for value in values:
            key = _scalar_key(value)
            if key is None:
                raise InvalidFilter(
                    f"where[{path!r}] must be a string, number, boolean or null, or a list "
                    f"of them; got {value!r}."
                )
            keys.add(key)
        conditions[tuple(path.split("."))] = frozenset(keys)
    return Filter(conditions)
