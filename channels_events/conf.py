"""Read the ``CHANNELS_EVENTS`` setting lazily, with documented defaults."""

from __future__ import annotations

from typing import Any

from django.core.signals import setting_changed

__all__ = ["DEFAULTS", "SETTING_NAME", "events_settings"]

SETTING_NAME = "CHANNELS_EVENTS"

#: Every key of ``settings.CHANNELS_EVENTS`` and its default. README.md
#: documents each one; checks.py validates them.
DEFAULTS: dict[str, Any] = {
    # Re-raise listener exceptions instead of logging them (meant for tests).
    "STRICT": False,
    # Log every dispatch, with the listeners it reached, on the channels_events logger.
    "DEBUG": False,
    # How many event names keep a cached list of matching listeners.
    "CACHE_SIZE": 4096,
    # Namespace of model events when neither observe() nor the Observer names
    # one; None means the model's app label.
    "OBSERVER_NAMESPACE": None,
    # Regexes searched (case-insensitively) in field names; matching fields
    # stay out of model payloads unless listed in ``fields`` explicitly.
    "SENSITIVE_FIELDS": ["passw", "pwd", "secret", "token", "api_?key", "private_?key"],
    # Alias in CHANNEL_LAYERS used to publish and receive events; None turns
    # publication off (events stay in the process).
    "CHANNEL_LAYER": "default",
    # Group names are "<GROUP_PREFIX>.<namespace>".
    "GROUP_PREFIX": "events",
    # Namespaces the hub always joins, for listeners whose pattern does not
    # start with a literal namespace (such as ".*").
    "NAMESPACES": [],
    # Namespaces whose events are never published.
    "LOCAL_NAMESPACES": [],
    # At most this many events of one namespace go out in one message.
    "BATCH_SIZE": 100,
    # Events waiting to be published; past this the oldest are dropped (and logged).
    "OUTBOX_SIZE": 10000,
    # Seconds to keep publishing queued events when the process exits.
    "FLUSH_TIMEOUT": 5.0,
    # Browser stream policy: dotted paths to functions (see policy.py);
    # None means closed: nobody may subscribe or emit.
    "SUBSCRIBE_POLICY": None,
    "RECEIVE_POLICY": None,
    "EMIT_POLICY": None,
    # Websocket limits, per connection.
    "MAX_FRAME_BYTES": 65536,
    "MAX_SUBSCRIPTIONS": 100,
    "MAX_PATTERN_LENGTH": 256,
    "RATE_LIMIT": 20,
    "RATE_BURST": 40,
    "BUFFER_SIZE": 1000,
    # Events kept per namespace for subscribers catching up with ``since``
    # (a Redis stream with a channels_redis layer); 0 keeps none.
    "HISTORY_SIZE": 1000,
}


class EventsSettings:
    """Give attribute access to ``CHANNELS_EVENTS`` merged over :data:`DEFAULTS`.

    Values are read from Django's settings on first use and again after a
    ``setting_changed`` signal (``override_settings``); ``version`` counts the
    reloads so hot paths can cache values and notice a change cheaply.
    """

    def __init__(self) -> None:
        self._values: dict[str, Any] | None = None
        self.version = 0

    def _load(self) -> dict[str, Any]:
        from django.conf import settings

        user: Any = {}
        if settings.configured:
            user = getattr(settings, SETTING_NAME, {}) or {}
        values = dict(DEFAULTS)
        if isinstance(user, dict):
            values.update(user)
        self._values = values
        # Plain attributes from now on: reading a setting on a hot path costs
        # an attribute lookup, not a __getattr__ call.
        self.__dict__.update({key: values[key] for key in DEFAULTS})
        return values

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        values = self._values if self._values is not None else self._load()
        try:
            return values[name]
        except KeyError:
            raise AttributeError(
                f"CHANNELS_EVENTS has no setting {name!r}; known settings: {sorted(DEFAULTS)}."
            ) from None

    def reload(self) -> None:
        """Forget cached values so the next access reads Django's settings again."""
        self._values = None
        for key in DEFAULTS:
            self.__dict__.pop(key, None)
        self.version += 1


events_settings = EventsSettings()


def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    # The hub caches its channel layer per version: a new CHANNEL_LAYERS must
    # reach it as a new CHANNELS_EVENTS does.
    if setting in (SETTING_NAME, "CHANNEL_LAYERS"):
        events_settings.reload()


setting_changed.connect(_on_setting_changed, dispatch_uid="channels_events.conf")
