"""Django system checks for the ``CHANNELS_EVENTS`` setting."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, register
from django.utils.module_loading import import_string

from .conf import DEFAULTS, SETTING_NAME
from .names import validate_namespace

__all__ = ["check_settings"]


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _is_non_negative_int(value: Any) -> bool:
    return type(value) is int and value >= 0


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _is_namespace_or_none(value: Any) -> bool:
    return value is None or _is_namespace(value)


def _is_regex_list(value: Any) -> bool:
    if not isinstance(value, (list, tuple)) or not all(isinstance(p, str) for p in value):
        return False
    try:
        for pattern in value:
            re.compile(pattern)
    except re.error:
        return False
    return True


def _is_alias_or_none(value: Any) -> bool:
    return value is None or (
        isinstance(value, str) and value in getattr(settings, "CHANNEL_LAYERS", {})
    )


def _is_group_prefix(value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9_.\-]{1,30}", value) is not None


def _is_namespace_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(_is_namespace(v) for v in value)


def _is_namespace(value: Any) -> bool:
    try:
        validate_namespace(value)
    except ValueError:
        return False
    return True


def _is_non_negative_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


def _is_positive_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def _is_importable_or_none(value: Any) -> bool:
    if value is None or callable(value):
        return True
    if not isinstance(value, str):
        return False
    try:
        return callable(import_string(value))
    except Exception:  # ImportError, or the module itself failing to import
        return False


#: For each setting: a validator and what a valid value looks like.
VALIDATORS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "STRICT": (_is_bool, "True or False"),
    "DEBUG": (_is_bool, "True or False"),
    "CACHE_SIZE": (_is_positive_int, "a positive int"),
    "OBSERVER_NAMESPACE": (_is_namespace_or_none, "None or one name segment such as 'shop'"),
    "SENSITIVE_FIELDS": (_is_regex_list, "a list of regular expressions that compile"),
    "CHANNEL_LAYER": (_is_alias_or_none, "None or an alias of settings.CHANNEL_LAYERS"),
    "GROUP_PREFIX": (_is_group_prefix, "1-30 letters, digits, '_', '-' or '.'"),
    "NAMESPACES": (_is_namespace_list, "a list of namespaces such as ['shop']"),
    "LOCAL_NAMESPACES": (_is_namespace_list, "a list of namespaces such as ['shop']"),
    "BATCH_SIZE": (_is_positive_int, "a positive int"),
    "OUTBOX_SIZE": (_is_positive_int, "a positive int"),
    "FLUSH_TIMEOUT": (_is_non_negative_number, "a number of seconds, 0 or more"),
    "SUBSCRIBE_POLICY": (_is_importable_or_none, "None or the dotted path of a function"),
    "RECEIVE_POLICY": (_is_importable_or_none, "None or the dotted path of a function"),
    "EMIT_POLICY": (_is_importable_or_none, "None or the dotted path of a function"),
    "MAX_FRAME_BYTES": (_is_positive_int, "a positive int (bytes)"),
    "MAX_SUBSCRIPTIONS": (_is_positive_int, "a positive int"),
    "MAX_PATTERN_LENGTH": (_is_positive_int, "a positive int"),
    "RATE_LIMIT": (_is_positive_number, "a positive number of messages per second"),
    "RATE_BURST": (_is_positive_int, "a positive int"),
    "BUFFER_SIZE": (_is_positive_int, "a positive int (frames)"),
    "HISTORY_SIZE": (_is_non_negative_int, "an int, 0 (no history) or more (events)"),
}


@register()
def check_settings(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """Report every problem with ``settings.CHANNELS_EVENTS``, one message each."""
    value = getattr(settings, SETTING_NAME, {})
    if not isinstance(value, dict):
        return [
            Error(
                f"{SETTING_NAME} must be a dict, got {type(value).__name__} {value!r}.",
                hint=f"Set {SETTING_NAME} = {{}} to use the defaults.",
                id="channels_events.E001",
            )
        ]
    errors: list[CheckMessage] = []
    for key in sorted(value.keys() - DEFAULTS.keys(), key=str):
        errors.append(
            Error(
                f"{SETTING_NAME} has an unknown key {key!r}.",
                hint=f"Known keys: {', '.join(sorted(DEFAULTS))}.",
                id="channels_events.E002",
            )
        )
    for key, (valid, description) in VALIDATORS.items():
        if key in value and not valid(value[key]):
            errors.append(
                Error(
                    f"{SETTING_NAME}[{key!r}] must be {description}, got {value[key]!r}.",
                    id="channels_events.E003",
                )
            )
    return errors
