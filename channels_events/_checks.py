"""Django system checks for the ``CHANNELS_EVENTS`` setting, driven by ``_conf.SETTINGS``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, register
from django.utils.module_loading import import_string

from ._conf import SETTING_NAME, SETTINGS, closest_setting

__all__ = ["check_settings"]

_POLICIES = ("SUBSCRIBE_POLICY", "RECEIVE_POLICY", "EMIT_POLICY")


def _import_problem(path: str) -> str | None:
    """Return why a policy's dotted path cannot be used, or None if it can."""
    try:
        func = import_string(path)
    except Exception as exc:  # ImportError, or the module itself failing to import
        return f"importing it raised {type(exc).__name__}: {exc}"
    if not callable(func):
        return f"it names {func!r}, which is not callable"
    return None


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
    for key in sorted(value.keys() - SETTINGS.keys(), key=str):
        close = closest_setting(key)
        errors.append(
            Error(
                f"{SETTING_NAME} has an unknown key {key!r}.",
                hint=f"Did you mean {close!r}?"
                if close
                else f"Known keys: {', '.join(sorted(SETTINGS))}.",
                id="channels_events.E002",
            )
        )
    for key, setting in SETTINGS.items():
        if key not in value:
            continue
        if not setting.valid(value[key]):
            errors.append(
                Error(
                    f"{SETTING_NAME}[{key!r}] must be {setting.expected}, got {value[key]!r}.",
                    id="channels_events.E003",
                )
            )
        elif key in _POLICIES and isinstance(value[key], str):
            problem = _import_problem(value[key])
            if problem is not None:
                errors.append(
                    Error(
                        f"{SETTING_NAME}[{key!r}] = {value[key]!r} cannot be used: {problem}.",
                        hint="Give the dotted path of a function: 'myapp.policies.may_subscribe'.",
                        id="channels_events.E003",
                    )
                )
    return errors
