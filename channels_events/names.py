"""Validate event names and listener patterns (PROTOCOL.md section 1)."""

from __future__ import annotations

import re
from functools import lru_cache

from .exceptions import InvalidEventName, InvalidPattern

try:  # Python >= 3.11 keeps the parser here; the old name warns on import.
    from re import _constants as _sre_constants  # type: ignore[attr-defined]
    from re import _parser as _sre_parse  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - Python 3.10
    import sre_constants as _sre_constants
    import sre_parse as _sre_parse

__all__ = [
    "MAX_NAME_LENGTH",
    "MAX_SEGMENT_LENGTH",
    "SEPARATOR",
    "compile_pattern",
    "is_valid_name",
    "literal_namespace",
    "namespace_of",
    "validate_name",
    "validate_namespace",
]

SEPARATOR = "::"
MAX_NAME_LENGTH = 255
MAX_SEGMENT_LENGTH = 64

_SEGMENT_RE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_NAME_RE = re.compile(r"[A-Za-z0-9_.\-]{1,64}(?:::[A-Za-z0-9_.\-]{1,64})*")

# Names seen valid before; checking set membership is cheaper than the regex
# on every dispatch. Bounded so that a stream of unique names cannot grow it.
_known_valid: set[str] = set()
_KNOWN_VALID_MAX = 8192


def is_valid_name(name: object) -> bool:
    """Return whether ``name`` is a valid event name."""
    return (
        isinstance(name, str)
        and len(name) <= MAX_NAME_LENGTH
        and _NAME_RE.fullmatch(name) is not None
    )


def validate_name(name: object) -> str:
    """Return ``name`` unchanged if it is a valid event name, else raise InvalidEventName."""
    if not isinstance(name, str):
        raise InvalidEventName(f"Event name must be a str, got {type(name).__name__} {name!r}.")
    if name in _known_valid:
        return name
    if is_valid_name(name):
        if len(_known_valid) >= _KNOWN_VALID_MAX:
            _known_valid.clear()
        _known_valid.add(name)
        return name
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidEventName(
            f"Event name {name[:40]!r}... is {len(name)} characters long; "
            f"the limit is {MAX_NAME_LENGTH}."
        )
    for segment in name.split(SEPARATOR):
        if not segment:
            raise InvalidEventName(
                f"Event name {name!r} has an empty segment; segments are joined by "
                f"{SEPARATOR!r}, e.g. 'shop::Order::created'."
            )
        if len(segment) > MAX_SEGMENT_LENGTH:
            raise InvalidEventName(
                f"Segment {segment[:20]!r}... of event name {name!r} is longer than "
                f"{MAX_SEGMENT_LENGTH} characters."
            )
        if not _SEGMENT_RE.fullmatch(segment):
            raise InvalidEventName(
                f"Segment {segment!r} of event name {name!r} may only contain "
                "letters, digits, '_', '.' and '-'."
            )
    raise InvalidEventName(f"Invalid event name {name!r}.")  # pragma: no cover


def validate_namespace(namespace: object) -> str:
    """Return ``namespace`` if it is one valid name segment, else raise InvalidEventName."""
    if not isinstance(namespace, str) or not _SEGMENT_RE.fullmatch(namespace):
        raise InvalidEventName(
            f"Namespace {namespace!r} must be a single segment of 1-64 letters, digits, "
            "'_', '.' or '-'."
        )
    return namespace


def namespace_of(name: str) -> str:
    """Return the namespace (first segment) of a valid event name."""
    return name.partition(SEPARATOR)[0]


@lru_cache(maxsize=2048)
def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a listener pattern once, raising InvalidPattern with the reason if it fails."""
    if not isinstance(pattern, str):
        raise InvalidPattern(f"Pattern must be a str, got {type(pattern).__name__} {pattern!r}.")
    if not pattern:
        raise InvalidPattern("Pattern must not be empty; use '.*' to match every event.")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise InvalidPattern(f"Pattern {pattern!r} does not compile: {exc}.") from None


@lru_cache(maxsize=2048)
def literal_namespace(pattern: str) -> str | None:
    """Return the namespace a pattern is confined to, or None if it may match several.

    ``shop::Order::.*`` gives ``shop``; ``.*``, ``(shop|billing)::.*`` and
    ``(?i)shop::.*`` give None. The answer comes from the parsed regex, so an
    alternation at the top level (``shop::a|billing::b``) is not mistaken for
    a literal prefix.
    """
    compile_pattern(pattern)
    try:
        parsed = _sre_parse.parse(pattern)
    except Exception:  # pragma: no cover - compile_pattern already accepted it
        return None
    if parsed.state.flags & (re.IGNORECASE | re.VERBOSE):
        return None
    literal = _sre_constants.LITERAL
    prefix: list[str] = []
    items = list(parsed)
    for op, value in items:
        if op is not literal:
            break
        prefix.append(chr(value))
    text = "".join(prefix)
    if SEPARATOR in text:
        namespace = text.partition(SEPARATOR)[0]
    elif len(prefix) == len(items):
        namespace = text
    else:
        return None
    return namespace if _SEGMENT_RE.fullmatch(namespace) else None
