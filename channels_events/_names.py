"""Validate event names and listener patterns (PROTOCOL.md section 1)."""

from __future__ import annotations

import re
import string
from functools import lru_cache
from typing import Any

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
    "ClientPattern",
    "compile_client_pattern",
    "compile_pattern",
    "is_valid_name",
    "literal_namespace",
    "namespace_of",
    "never_matches",
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


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a listener pattern once, raising InvalidPattern with the reason if it fails."""
    if not isinstance(pattern, str):
        raise InvalidPattern(f"Pattern must be a str, got {type(pattern).__name__} {pattern!r}.")
    return _compile(pattern)


@lru_cache(maxsize=2048)
def _compile(pattern: str) -> re.Pattern[str]:
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


_NAME_CHARS = frozenset(string.ascii_letters + string.digits + "_.-:")


@lru_cache(maxsize=2048)
def never_matches(pattern: str) -> str | None:
    """Return why ``pattern`` can never match a valid event name, or None if it may.

    Only what the pattern spells out literally is judged: its characters
    outside repeats, classes and alternations, and each branch of an
    alternation at the top. A character no name contains (a space, ``/``)
    rules a pattern out, and so do colons that cannot be a ``::`` separator:
    a single ``:`` between two literal characters (``blog:Post``), three in
    a row, or one at either end. A pattern that passes may still match
    nothing; one that fails surely matches nothing.
    """
    compile_pattern(pattern)
    parsed = _sre_parse.parse(pattern)
    return _branch_never_matches(list(parsed), bool(parsed.state.flags & re.IGNORECASE))


def _branch_never_matches(items: list[tuple[Any, Any]], ignore_case: bool) -> str | None:
    if len(items) == 1 and items[0][0] is _sre_constants.BRANCH:
        reasons = [_branch_never_matches(list(branch), ignore_case) for branch in items[0][1][1]]
        if any(reason is None for reason in reasons):
            return None
        return "; ".join(dict.fromkeys(reason for reason in reasons if reason))
    chars = _spelled_out(items, ignore_case)
    for char in chars:
        if char is not None and char not in _NAME_CHARS:
            return (
                f"it needs {char!r}, which no event name contains (names have letters, "
                "digits, '_', '.', '-' and the separator '::')"
            )
    end = len(chars)
    start = 0
    while start < end:
        if chars[start] != ":":
            start += 1
            continue
        stop = start
        while stop < end and chars[stop] == ":":
            stop += 1
        if stop - start >= 3:
            return f"it has {':' * (stop - start)!r}, and names join segments with exactly '::'"
        if start == 0:
            return "it starts with ':', and a name starts with a segment"
        if stop == end:
            return "it ends with ':', and a name ends with a segment"
        if stop - start == 1 and chars[start - 1] is not None and chars[stop] is not None:
            left = _literal_text(chars[:start][::-1])[::-1]
            right = _literal_text(chars[stop:])
            snippet = f"{left}:{right}"
            return f"{snippet!r} has a single ':', and names join segments with '::'"
        start = stop
    return None


def _spelled_out(items: list[tuple[Any, Any]], ignore_case: bool) -> list[str | None]:
    """Return the pattern's characters in order: a literal one, or None for anything else.

    Zero-width items (``^``, ``$``, ``\\b``) take no place. Under
    IGNORECASE a letter stands for itself in a case names may contain.
    """
    chars: list[str | None] = []
    for op, value in items:
        if op is _sre_constants.LITERAL:
            char = chr(value)
            if ignore_case and char not in _NAME_CHARS:
                char = next((c for c in (char.lower(), char.upper()) if c in _NAME_CHARS), char)
            chars.append(char)
        elif op is _sre_constants.SUBPATTERN:
            _group, add_flags, del_flags, inner = value
            inner_case = (ignore_case or bool(add_flags & re.IGNORECASE)) and not (
                del_flags & re.IGNORECASE
            )
            chars.extend(_spelled_out(list(inner), inner_case))
        elif op is not _sre_constants.AT:
            chars.append(None)
    return chars


def _literal_text(chars: list[str | None]) -> str:
    """Return the literal characters at the start of ``chars``, up to a colon or a wildcard."""
    text = []
    for char in chars:
        if char is None or char == ":":
            break
        text.append(char)
    return "".join(text)


class ClientPattern:
    """A browser's pattern, vetted for untrusted use and matched in linear time.

    Matching uses RE2, which has no backtracking, so no pattern can make
    matching slow; results are cached per event name.
    """

    __slots__ = ("_matches", "_regex", "namespace", "pattern")

    def __init__(self, pattern: str, namespace: str, regex: Any) -> None:
        self.pattern = pattern
        self.namespace = namespace
        self._regex = regex
        self._matches: dict[str, bool] = {}

    def matches(self, name: str) -> bool:
        """Return whether ``name`` fully matches this pattern."""
        found = self._matches.get(name)
        if found is None:
            if len(self._matches) >= 4096:
                self._matches.clear()
            found = self._matches[name] = self._regex.fullmatch(name) is not None
        return found


_client_patterns: dict[str, ClientPattern] = {}


def compile_client_pattern(pattern: object, max_length: int = 256) -> ClientPattern:
    """Vet and compile a pattern from an untrusted client, or raise InvalidPattern.

    Refused: anything but a non-empty str, patterns longer than
    ``max_length``, patterns whose namespace part is not a literal namespace
    (``.*``, ``(a|b)::x``, case-insensitive flags), and constructs RE2 does not
    support because they need backtracking (backreferences, lookaround).
    """
    if not isinstance(pattern, str) or not pattern:
        raise InvalidPattern(f"A pattern must be a non-empty string, got {pattern!r}.")
    if len(pattern) > max_length:
        raise InvalidPattern(
            f"Pattern is {len(pattern)} characters long; the limit is {max_length}."
        )
    cached = _client_patterns.get(pattern)
    if cached is not None:
        return cached
    namespace = literal_namespace(pattern)
    if namespace is None:
        raise InvalidPattern(
            f"Pattern {pattern!r} must start with a literal namespace, "
            "such as 'shop::' in 'shop::Order::.*'."
        )
    import re2

    options = re2.Options()
    options.log_errors = False
    options.max_mem = 1 << 20
    try:
        pattern.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidPattern("Pattern contains characters that are not valid text.") from None
    try:
        regex = re2.compile(pattern, options)
    except re2.error as exc:
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
        raise InvalidPattern(
            f"Pattern {pattern!r} uses a construct that is not allowed in subscriptions "
            f"(backreferences and lookaround can backtrack catastrophically): {reason}."
        ) from None
    compiled = ClientPattern(pattern, namespace, regex)
    if len(_client_patterns) >= 4096:
        _client_patterns.clear()
    _client_patterns[pattern] = compiled
    return compiled
