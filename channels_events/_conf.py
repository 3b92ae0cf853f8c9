"""Settings: the ``CHANNELS_EVENTS`` dict, read through one table of defaults and rules.

:data:`SETTINGS` names every key with its default, what a valid value looks
like and what it does; it drives the system checks (``_checks.py``) and the
settings reference in the docs. Values are read lazily. When Django's
settings change (``override_settings``), one ``setting_changed`` receiver here
forgets them and calls every reset function registered with
:func:`on_change`, so no other module polls for changes.
"""

from __future__ import annotations

import difflib
import re
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.core.signals import setting_changed

from .exceptions import UnknownSetting

__all__ = [
    "DEFAULTS",
    "SETTINGS",
    "SETTING_NAME",
    "Setting",
    "closest_setting",
    "events_settings",
    "on_change",
]

SETTING_NAME = "CHANNELS_EVENTS"


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _is_int(value: Any, minimum: int) -> bool:
    return type(value) is int and value >= minimum


def _is_number(value: Any, positive: bool) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    return value > 0 if positive else value >= 0


def _is_segment(value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", value) is not None


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
    from django.conf import settings

    return value is None or (
        isinstance(value, str) and value in getattr(settings, "CHANNEL_LAYERS", {})
    )


def _is_group_prefix(value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9_.\-]{1,30}", value) is not None


def _is_namespace_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(_is_segment(v) for v in value)


def _is_dotted_path_or_none(value: Any) -> bool:
    # Importing is the checks' job: they show the real ImportError.
    return value is None or callable(value) or isinstance(value, str)


@dataclass(frozen=True)
class Setting:
    """One key of ``CHANNELS_EVENTS``: its default, its rule and what it does."""

    default: Any
    valid: Callable[[Any], bool]
    #: What a valid value looks like, for error messages.
    expected: str
    #: What the setting does, for the docs (Markdown).
    description: str


def _positive_int(default: int, description: str, unit: str = "") -> Setting:
    suffix = f" ({unit})" if unit else ""
    return Setting(default, lambda v: _is_int(v, 1), f"a positive int{suffix}", description)


def _policy(description: str) -> Setting:
    return Setting(
        None, _is_dotted_path_or_none, "None or the dotted path of a function", description
    )


#: Every key of ``settings.CHANNELS_EVENTS``.
SETTINGS: dict[str, Setting] = {
    "STRICT": Setting(
        False,
        _is_bool,
        "True or False",
        "Re-raise listener exceptions instead of logging them (for tests).",
    ),
    "DEBUG": Setting(
        False,
        _is_bool,
        "True or False",
        "Log every dispatch, with the listeners it reaches, at INFO on the "
        "`channels_events` logger.",
    ),
    "CACHE_SIZE": _positive_int(4096, "How many event names keep a cached list of listeners."),
    "OBSERVER_NAMESPACE": Setting(
        None,
        lambda v: v is None or _is_segment(v),
        "None or one name segment such as 'shop'",
        "Namespace of model events when the observer names none; `None`: the app label.",
    ),
    "SENSITIVE_FIELDS": Setting(
        [
            r"\w*passw\w*",
            r"\w*pwd",
            "passphrase",
            "passcode",
            r"\w*secret\w*",
            r"\w*token\w*",
            "api_?keys?",
            "private_?keys?",
            "access_?keys?",
            "signing_?keys?",
            "session_?keys?",
            "pin",
            "otp",
            "salt",
            "jwt",
            "bearer",
            "cookies?",
            "credentials?",
            "ssn",
            "credit_?cards?",
            "cvv",
        ],
        _is_regex_list,
        "a list of regular expressions that compile",
        "Regexes matched (case-insensitively) against whole snake_case/camelCase words of "
        "names (`pin` matches `user_pin` and `pinCode`, not `shipping`); matching fields, "
        "primary keys, foreign keys to them and JSON keys stay out of model payloads unless "
        "the field is listed in an observer's `fields`, and out of `signal_to_event` payloads.",
    ),
    "CHANNEL_LAYER": Setting(
        "default",
        _is_alias_or_none,
        "None or an alias of settings.CHANNEL_LAYERS",
        "Alias in `CHANNEL_LAYERS` to publish and receive through; `None` keeps events "
        "in the process.",
    ),
    "GROUP_PREFIX": Setting(
        "events",
        _is_group_prefix,
        "1-30 letters, digits, '_', '-' or '.'",
        "Groups are named `<GROUP_PREFIX>.<namespace>`.",
    ),
    "NAMESPACES": Setting(
        [],
        _is_namespace_list,
        "a list of namespaces such as ['shop']",
        "Namespaces the hub always joins, for listeners whose pattern has no literal one "
        "(such as `.*`).",
    ),
    "LOCAL_NAMESPACES": Setting(
        [],
        _is_namespace_list,
        "a list of namespaces such as ['shop']",
        "Namespaces whose events are never published.",
    ),
    "COMPAT_PUBLISH": Setting(
        False,
        _is_bool,
        "True or False",
        "Publish events dispatched through `channels_events.compat`, with the plain data of "
        "their arguments as payload; `False` keeps them in the process (see "
        "[what leaves the process](migration.md#what-leaves-the-process)).",
    ),
    "BATCH_SIZE": _positive_int(100, "At most this many events of one namespace per message."),
    "OUTBOX_SIZE": _positive_int(
        10000,
        "Events waiting to be published, past which the oldest are dropped (logged), and "
        "messages from other processes waiting for this process's listeners.",
    ),
    "FLUSH_TIMEOUT": Setting(
        5.0,
        lambda v: _is_number(v, positive=False),
        "a number of seconds, 0 or more",
        "Seconds to keep publishing queued events when the process exits.",
    ),
    "BACKGROUND_WORKERS": _positive_int(
        4,
        "Threads that run listeners declared `background=True`; started as work arrives "
        "(see [background listeners](background.md)).",
    ),
    "BACKGROUND_QUEUE_SIZE": _positive_int(
        10000,
        "Background listener calls queued or running, past which a new call is refused and "
        "logged (the caller never waits).",
    ),
    "BACKGROUND_EXIT_TIMEOUT": Setting(
        10.0,
        lambda v: _is_number(v, positive=False),
        "a number of seconds, 0 or more",
        "Seconds to keep running queued background listener calls when the process exits "
        "or the ASGI lifespan shuts down.",
    ),
    "SUBSCRIBE_POLICY": _policy(
        "Dotted path of `f(scope, namespace, pattern)`: may this connection subscribe to "
        "`pattern` in `namespace`? True or False, or a filter (a `where` dict such as "
        '`{"fields.owner": user.pk}`) that allows it and is always applied. `None`: nobody may.'
    ),
    "RECEIVE_POLICY": _policy(
        "Dotted path of `f(scope, event)`: may this connection receive this event? `None`: "
        "subscribers get every matching event."
    ),
    "EMIT_POLICY": _policy(
        "Dotted path of `f(scope, name, payload)`: may this connection emit this event? "
        "`None`: nobody may."
    ),
    "PRESENCE_POLICY": _policy(
        "Dotted path of `f(scope, topic)`: may this connection `join` the presence `topic`, "
        'and as whom? It returns the member, `{"id": str, "info": JSON}`, or `None` to '
        "refuse. `None`: nobody may."
    ),
    "PRESENCE_TIMEOUT": Setting(
        30.0,
        lambda v: _is_number(v, positive=True),
        "a positive number of seconds",
        "Seconds within which the members of a process that died without a goodbye "
        "(killed) leave, seen from every other process; each process with members sends "
        "Redis a heartbeat every eighth of it.",
    ),
    "MAX_FRAME_BYTES": _positive_int(
        65536,
        "Largest client frame accepted; one more than four times over closes the connection.",
        "bytes",
    ),
    "MAX_SUBSCRIPTIONS": _positive_int(100, "Subscriptions per connection."),
    "MAX_PATTERN_LENGTH": _positive_int(256, "Longest subscription pattern accepted."),
    "RATE_LIMIT": Setting(
        20,
        lambda v: _is_number(v, positive=True),
        "a positive number of messages per second",
        "Client messages per second a connection may send (a token bucket).",
    ),
    "RATE_BURST": _positive_int(
        40,
        "Messages a client may send at once before `RATE_LIMIT` applies (the token bucket's size).",
    ),
    "BUFFER_SIZE": _positive_int(
        1000,
        "Frames waiting to be written before a client is told it lagged (events waiting, "
        "for an `EventConsumerMixin` consumer).",
        "frames",
    ),
    "METRICS": Setting(
        None,
        lambda v: v is None or _is_bool(v),
        "None, True or False",
        "Update the Prometheus metrics of [operations](operations.md#metrics); `None`: "
        "when `prometheus_client` is installed (the `metrics` extra). Off, a metric call "
        "is an empty function.",
    ),
    "OPS_NAMESPACE": Setting(
        None,
        lambda v: v is None or _is_segment(v),
        "None or one name segment such as 'ops'",
        "Namespace of the stats events the [operations page](operations.md#the-operations-page) "
        "shows, read when the app starts; keep it apart from your own events' namespaces. "
        "`None`: no stats stream, and the page says so.",
    ),
    "OPS_INTERVAL": Setting(
        1.0,
        lambda v: _is_number(v, positive=True) and v >= 0.1,
        "a number of seconds, 0.1 or more",
        "Seconds between two stats events of a process while the operations page watches.",
    ),
    "BUFFER_BYTES": _positive_int(
        1048576,
        "Bytes of frames a connection may have waiting, in its queue and (under daphne) in the "
        "server's write buffer, before events are dropped and the client is told it lagged; "
        "a client that also stops reading its answers is closed with 4010 "
        "(see [slow clients](protocol.md#slow-clients)).",
        "bytes",
    ),
    "REPLAY_BUDGET": _positive_int(
        10000,
        "Events a connection may be sent from the history with `since` per minute (a token "
        "bucket of that size); a `subscribe` with `since` past it is answered `rate_limited`.",
        "events",
    ),
    "MAX_EVENT_BYTES": Setting(
        1000000,
        lambda v: _is_int(v, 1024),
        "an int of 1024 or more (bytes)",
        "Largest event envelope, as JSON, that may be dispatched to other processes and "
        "browsers; a larger one raises `EventTooLarge` at `dispatch()` (a browser `emit` gets "
        "`too_large`). The default leaves room, under daphne's 1 MiB frame limit, for the "
        "`event` frame around the envelope.",
    ),
    "HISTORY_SIZE": Setting(
        1000,
        lambda v: _is_int(v, 0),
        "an int, 0 (no history) or more (events)",
        "Events kept per namespace for subscribers catching up with `since`; 0 keeps none.",
    ),
    "HISTORY_BYTES": _positive_int(
        16 * 1048576,
        "Bytes of events kept per namespace in the history, as stored (msgpack): the oldest "
        "events go first when either this or `HISTORY_SIZE` is reached.",
        "bytes",
    ),
}

#: Every key and its default.
DEFAULTS: dict[str, Any] = {key: setting.default for key, setting in SETTINGS.items()}


def closest_setting(key: object) -> str | None:
    """Return the valid key closest to a misspelt one, if any is close."""
    if not isinstance(key, str):
        return None
    found = difflib.get_close_matches(key.upper(), SETTINGS, n=1, cutoff=0.6)
    return found[0] if found else None


def unknown_setting_message(key: object) -> str:
    """Say that ``key`` is not a setting, and which one was probably meant."""
    close = closest_setting(key)
    hint = f"did you mean {close!r}?" if close else f"valid keys: {', '.join(sorted(SETTINGS))}."
    return f"{SETTING_NAME} has no setting {key!r}; {hint}"


class EventsSettings:
    """Give attribute access to ``CHANNELS_EVENTS`` merged over the defaults.

    Values are read from Django's settings on first use and again after
    ``setting_changed``. Reading a key that is not in :data:`SETTINGS` raises
    :class:`~channels_events.exceptions.UnknownSetting`.
    """

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in SETTINGS:
            raise UnknownSetting(unknown_setting_message(name))
        self._load()
        return self.__dict__[name]

    def _load(self) -> None:
        from django.conf import settings

        user: Any = {}
        if settings.configured:
            user = getattr(settings, SETTING_NAME, {}) or {}
        values = dict(DEFAULTS)
        if isinstance(user, dict):
            values.update((key, value) for key, value in user.items() if key in SETTINGS)
        # Plain attributes from now on: a read costs an attribute lookup.
        self.__dict__.update(values)

    def reload(self) -> None:
        """Forget the values read so far; the next read reads Django's settings again."""
        self.__dict__.clear()


events_settings = EventsSettings()

_lock = threading.Lock()
_resets: list[Callable[[], Any] | weakref.WeakMethod[Callable[[], Any]]] = []


def on_change(reset: Callable[[], Any]) -> None:
    """Call ``reset()`` whenever ``CHANNELS_EVENTS`` or ``CHANNEL_LAYERS`` changes.

    A bound method is held weakly, so objects that register (a dispatcher,
    a hub) can still be garbage-collected.
    """
    ref: Callable[[], Any] | weakref.WeakMethod[Callable[[], Any]]
    ref = weakref.WeakMethod(reset) if hasattr(reset, "__self__") else reset
    with _lock:
        _resets.append(ref)


def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    # The hub keeps its channel layer: a new CHANNEL_LAYERS must reach it
    # as a new CHANNELS_EVENTS does.
    if setting not in (SETTING_NAME, "CHANNEL_LAYERS"):
        return
    events_settings.reload()
    with _lock:
        live = []
        for ref in _resets:
            reset = ref() if isinstance(ref, weakref.WeakMethod) else ref
            if reset is not None:
                live.append(reset)
        _resets[:] = [r for r in _resets if not isinstance(r, weakref.WeakMethod) or r()]
    for reset in live:
        reset()


setting_changed.connect(_on_setting_changed, dispatch_uid="channels_events.conf")
