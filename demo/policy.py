"""The demo's browser policy: anyone may subscribe to namespace ``shop`` and be seen watching.

Staff may also subscribe to ``ops`` (the operations page). Nothing else is
open: no other namespace, no ``emit``.
"""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async


def can_subscribe(scope: dict[str, Any], namespace: str, pattern: str) -> bool:
    """Open namespace ``shop`` to every connection, and ``ops`` (the operations page) to staff."""
    if namespace == "ops":
        user = scope.get("user")
        return bool(user is not None and user.is_active and user.is_staff)
    return namespace == "shop"


async def watcher(scope: dict[str, Any], topic: str) -> dict[str, Any] | None:
    """Admit every connection to the dashboard's presence, as its user or as a guest.

    A signed-in user is one member however many tabs it has open, and so is
    a visitor: the dashboard gives each browser session a guest name. A
    connection without one (no cookie) is a guest of its own.
    """
    if topic != "shop::dashboard":
        return None
    user = scope.get("user")
    if user is not None and user.is_authenticated:
        name = user.get_full_name() or user.get_username()
        return {"id": f"user:{user.pk}", "info": {"name": name}}
    session = scope.get("session")
    # The session is read from the database: not on the event loop.
    guest = await database_sync_to_async(_guest)(session) if session is not None else None
    if guest is None:
        client = scope.get("client") or ("", 0)
        guest = {"id": f"{client[0]}:{client[1]}", "name": f"Guest {client[1]}"}
    return {"id": f"guest:{guest['id']}", "info": {"name": guest["name"]}}


def _guest(session: Any) -> dict[str, str] | None:
    guest = session.get("guest")
    return guest if isinstance(guest, dict) else None
