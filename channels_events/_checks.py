"""Django system checks: the ``CHANNELS_EVENTS`` setting, and the mistakes made around it.

Errors (``E001``-``E003``) are values of ``CHANNELS_EVENTS`` that cannot be
used, driven by ``_conf.SETTINGS``. Warnings and infos are set-ups that work
but not as meant: a misspelt setting name (``W001``), no channel layer for
the hub (``W002``), listener patterns that match nothing, or match known
event names only in another letter case (``W003``),
redis-py 8 under channels_redis's core layer (``W004``), an
``ASGI_APPLICATION`` not wrapped in ``HubMiddleware`` (``W005``) and the
in-memory layer, which no other process hears (``I001``). Every message says
the fix.
"""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Callable, Sequence
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Info, Warning, register
from django.utils.module_loading import import_string

from ._conf import SETTING_NAME, SETTINGS, closest_setting
from ._dispatcher import get_dispatcher
from ._events import event_classes
from ._layer import RedisHost, redis_hosts
from ._names import never_matches
from .exceptions import InvalidPattern

__all__ = [
    "CHECKS",
    "check_asgi_application",
    "check_channel_layer",
    "check_listener_patterns",
    "check_redis_client",
    "check_setting_name",
    "check_settings",
    "run_checks",
]

_POLICIES = ("SUBSCRIBE_POLICY", "RECEIVE_POLICY", "EMIT_POLICY", "PRESENCE_POLICY")


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


# -- W001: the setting's own name ------------------------------------------------

_NOT_LETTERS = re.compile(r"[^A-Z]")
# Letters added, dropped or changed that still make a name a near miss
# (CHANNEL_EVENTS, CHANNELS_EVENT, CHANEL_EVENTS, CHANNELSEVENTS).
_NEAR_MISS_EDITS = 2


def _edits(a: str, b: str) -> int:
    """Return how many letters must be added, dropped or changed to turn ``a`` into ``b``."""
    previous = list(range(len(b) + 1))
    for i, letter in enumerate(a, 1):
        current = [i]
        for j, other in enumerate(b, 1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (letter != other))
            )
        previous = current
    return previous[-1]


@register()
def check_setting_name(
    app_configs: Sequence[Any] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """Warn about settings named almost, but not exactly, ``CHANNELS_EVENTS`` (W001)."""
    target = _NOT_LETTERS.sub("", SETTING_NAME)
    messages: list[CheckMessage] = []
    for name in dir(settings):
        if name == SETTING_NAME or not name.isupper():
            continue
        if _edits(_NOT_LETTERS.sub("", name), target) > _NEAR_MISS_EDITS:
            continue
        if hasattr(settings, SETTING_NAME):
            hint = f"Move its keys into {SETTING_NAME} and delete {name}."
        else:
            hint = f"Rename {name} to {SETTING_NAME}."
        messages.append(
            Warning(
                f"settings.{name} is not read by channels-events: its setting is named "
                f"{SETTING_NAME}, so the values in {name} are ignored.",
                hint=hint,
                id="channels_events.W001",
            )
        )
    return messages


# -- W002, I001: the hub's channel layer ------------------------------------------

_REDIS_EXAMPLE = (
    "{'BACKEND': 'channels_redis.core.RedisChannelLayer', "
    "'CONFIG': {'hosts': ['redis://127.0.0.1:6379/0']}}"
)


def _channel_layers() -> dict[str, Any]:
    layers = getattr(settings, "CHANNEL_LAYERS", None) or {}
    return layers if isinstance(layers, dict) else {}


def _backend(config: Any) -> type | None:
    """Return the class a ``CHANNEL_LAYERS`` entry names, or None if it cannot be had."""
    if not isinstance(config, dict) or not isinstance(config.get("BACKEND"), str):
        return None
    try:
        backend = import_string(config["BACKEND"])
    except Exception:  # Channels reports a bad BACKEND itself when the layer is used.
        return None
    return backend if isinstance(backend, type) else None


@register()
def check_channel_layer(
    app_configs: Sequence[Any] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """Say when the hub has no channel layer (W002), or one no other process hears (I001)."""
    value = getattr(settings, SETTING_NAME, {})
    if not isinstance(value, dict):
        return []  # E001
    alias = value.get("CHANNEL_LAYER", SETTINGS["CHANNEL_LAYER"].default)
    if not isinstance(alias, str):
        return []  # None keeps events in the process on purpose; anything else is E003.
    layers = _channel_layers()
    if alias not in layers:
        if "CHANNEL_LAYER" in value:
            return []  # E003 names the missing alias.
        if layers:
            where = f"CHANNEL_LAYERS has no {alias!r} layer"
            hint = (
                f"Add a {alias!r} layer to CHANNEL_LAYERS, or name the hub's layer: "
                f"{SETTING_NAME} = {{'CHANNEL_LAYER': {sorted(layers)[0]!r}}}."
            )
        else:
            where = "CHANNEL_LAYERS is not set"
            hint = (
                f"Add CHANNEL_LAYERS = {{{alias!r}: {_REDIS_EXAMPLE}}} (pip install "
                "channels-redis), or 'channels.layers.InMemoryChannelLayer' for one process. "
                f"To keep events in the process on purpose, set "
                f"{SETTING_NAME} = {{'CHANNEL_LAYER': None}}."
            )
        return [
            Warning(
                f"{where}, so events stay in the process that dispatches them: listeners "
                "and websockets of other processes never hear them.",
                hint=hint,
                id="channels_events.W002",
            )
        ]
    from channels.layers import InMemoryChannelLayer

    backend = _backend(layers[alias])
    if backend is not None and issubclass(backend, InMemoryChannelLayer):
        return [
            Info(
                f"The hub's channel layer {alias!r} is an InMemoryChannelLayer: events reach "
                "this process only. Other processes (task workers, commands, other server "
                "processes, manage.py events listen) neither hear them nor are heard.",
                hint="Use channels_redis (RedisPubSubChannelLayer or RedisChannelLayer) once "
                "more than one process dispatches or serves events. If one process is all "
                "you run, add 'channels_events.I001' to SILENCED_SYSTEM_CHECKS.",
                id="channels_events.I001",
            )
        ]
    return []


# -- W003: listener patterns ------------------------------------------------------

_SINGLE_COLON = re.compile(r"(?<!:):(?!:)")


def _with_double_colons(pattern: str) -> str | None:
    """Return ``pattern`` with single colons doubled, if that makes a pattern that may match."""
    fixed = _SINGLE_COLON.sub("::", pattern)
    if fixed == pattern:
        return None
    try:
        return fixed if never_matches(fixed) is None else None
    except InvalidPattern:
        return None


def _other_case_name(regex: re.Pattern[str], names: Sequence[str]) -> str | None:
    """Return a name ``regex`` matches only when case is ignored, if it matches no name as is.

    Matching is case-sensitive, so ``shop::order::.*`` never hears
    ``shop::Order::created``. Only names some Event class declares or an
    observer claims are known; a pattern for names published ad hoc is not judged.
    """
    if any(regex.fullmatch(name) for name in names):
        return None
    folded = re.compile(regex.pattern, regex.flags | re.IGNORECASE)
    return next((name for name in names if folded.fullmatch(name)), None)


@register()
def check_listener_patterns(
    app_configs: Sequence[Any] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """Warn about listeners whose pattern can never match an event name (W003).

    That is a pattern no name can match, or one that matches none of the
    known event names but matches one of them when case is ignored.
    """
    messages: list[CheckMessage] = []
    names = sorted(event_classes)
    for registration in get_dispatcher().registrations:
        reason = never_matches(registration.pattern)
        if reason is None:
            meant = _other_case_name(registration.regex, names)
            if meant is not None:
                messages.append(
                    Warning(
                        f"Listener {registration.description} listens for "
                        f"{registration.pattern!r}, which matches no known event name: "
                        f"it would match {meant!r} only if letter case were ignored.",
                        hint=f"Did you mean {meant!r}? Patterns match names with their "
                        "letter case: write the pattern's letters as the name has them.",
                        id="channels_events.W003",
                    )
                )
            continue
        hint = (
            "Names are segments of letters, digits, '_', '.' and '-' joined by '::', "
            "such as 'blog::Post::created'."
        )
        fixed = _with_double_colons(registration.pattern)
        if fixed is not None:
            hint = f"Did you mean {fixed!r}? {hint}"
        messages.append(
            Warning(
                f"Listener {registration.description} listens for {registration.pattern!r}, "
                f"which can never match an event name: {reason}.",
                hint=hint,
                id="channels_events.W003",
            )
        )
    return messages


# -- W004: redis-py 8 under channels_redis's core layer --------------------------


def _installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _major(version: str) -> int:
    found = re.match(r"\d+", version)
    return int(found.group()) if found else 0


def _reads_long_enough(host: RedisHost, blocking: float) -> bool:
    return host.timeout_given and (host.socket_timeout is None or host.socket_timeout > blocking)


@register()
def check_redis_client(
    app_configs: Sequence[Any] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """Warn when redis-py 8 cuts channels_redis's blocking receive short (W004)."""
    version = _installed_version("redis")
    if version is None or _major(version) < 8:
        return []
    try:
        from channels_redis.core import RedisChannelLayer
    except ImportError:
        return []
    blocking = float(getattr(RedisChannelLayer, "brpop_timeout", 5))
    messages: list[CheckMessage] = []
    for alias, config in _channel_layers().items():
        backend = _backend(config)
        if backend is None or not issubclass(backend, RedisChannelLayer):
            continue
        short = [h.address for h in redis_hosts(alias) or [] if not _reads_long_enough(h, blocking)]
        if not short:
            continue
        messages.append(
            Warning(
                f"redis-py {version} is installed and CHANNEL_LAYERS[{alias!r}] is "
                f"channels_redis's RedisChannelLayer, whose receive blocks for {blocking:g} s. "
                "redis-py 8 gives every read a 5 s socket_timeout by default, so receives "
                f"from {', '.join(short)} fail with TimeoutError and consumers drop.",
                hint="Install redis<8 (pip install 'redis>=5,<8'), or give each host a "
                "longer read time-out: {'address': 'redis://127.0.0.1:6379/0', "
                "'socket_timeout': 30}.",
                id="channels_events.W004",
            )
        )
    return messages


# -- W005: the ASGI application without the hub --------------------------------

# Where ASGI middleware and routers keep the application they wrap: Channels'
# middleware and Django's static files handler use ``inner`` or
# ``application``, most others (HubMiddleware among them) ``app``.
_WRAPPED = ("app", "inner", "application")
# How deep to look: real stacks are a few layers deep, and a cycle must end.
_MAX_DEPTH = 20


def _holds_hub(app: Any) -> bool:
    """Return whether ``app`` is, or wraps at any depth, a HubMiddleware."""
    from ._hub import HubMiddleware

    todo: list[tuple[Any, int]] = [(app, 0)]
    seen: set[int] = set()
    while todo:
        current, depth = todo.pop()
        if id(current) in seen or depth > _MAX_DEPTH:
            continue
        seen.add(id(current))
        if isinstance(current, HubMiddleware):
            return True
        inner = [getattr(current, name, None) for name in _WRAPPED]
        mapping = getattr(current, "application_mapping", None)  # ProtocolTypeRouter
        if isinstance(mapping, dict):
            inner.extend(mapping.values())
        todo.extend((found, depth + 1) for found in inner if found is not None)
    return False


@register()
def check_asgi_application(
    app_configs: Sequence[Any] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """Warn when ``ASGI_APPLICATION`` does not wrap its app in HubMiddleware (W005).

    Stays silent when ``ASGI_APPLICATION`` is unset or cannot be imported:
    the project may not serve ASGI at all, and Channels reports a bad path
    itself when a server loads it.
    """
    path = getattr(settings, "ASGI_APPLICATION", None)
    if not isinstance(path, str) or not path:
        return []
    try:
        application = import_string(path)
    except Exception:  # ImportError, or the module itself failing to import
        return []
    if _holds_hub(application):
        return []
    return [
        Warning(
            f"ASGI_APPLICATION {path!r} is not wrapped in HubMiddleware, so a server "
            "process starts receiving other processes' events only when a browser "
            "connects to the event stream, if ever: until then its listeners hear "
            "nothing from other processes.",
            hint="Wrap the whole application: from channels_events import HubMiddleware, "
            "then application = HubMiddleware(ProtocolTypeRouter({...})).",
            id="channels_events.W005",
        )
    ]


#: Every check of channels-events, in the order ``manage.py events check`` shows them.
CHECKS: tuple[Callable[..., list[CheckMessage]], ...] = (
    check_settings,
    check_setting_name,
    check_channel_layer,
    check_listener_patterns,
    check_redis_client,
    check_asgi_application,
)


def run_checks() -> list[CheckMessage]:
    """Return the messages of every check of channels-events."""
    return [message for check in CHECKS for message in check()]
