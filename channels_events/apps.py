"""The Django application configuration for channels-events."""

from __future__ import annotations

from collections.abc import Callable

from django.apps import AppConfig
from django.db import transaction
from django.utils.module_loading import autodiscover_modules

from . import _ops
from ._dispatcher import set_commit_hook
from ._events import Event


def _on_commit(event: Event, callback: Callable[[], None]) -> None:
    # Outside an atomic block Django runs the callback at once, as we want.
    transaction.on_commit(callback, using=getattr(event, "using", None))


class ChannelsEventsConfig(AppConfig):
    """Wire the library into Django when the app registry is ready."""

    name = "channels_events"
    verbose_name = "Channels events"

    def ready(self) -> None:
        """Register checks and the commit hook; import every app's listeners and observers."""
        from . import _checks  # noqa: F401  (registers the system checks)

        set_commit_hook(_on_commit)
        from ._dispatcher import get_dispatcher
        from ._hub import get_hub

        # Every event that leaves the process goes through the hub's outbox.
        hub = get_hub()
        get_dispatcher().add_publisher(hub.publish, accepts=hub.accepts)
        _ops.install(hub)
        autodiscover_modules("listeners", "observers")
