"""The demo's browser policy: anyone may subscribe to namespace ``shop``, staff to ``ops``."""

from __future__ import annotations

from typing import Any


def can_subscribe(scope: dict[str, Any], namespace: str, pattern: str) -> bool:
    """Open namespace ``shop`` to every connection, and ``ops`` (the operations page) to staff."""
    if namespace == "ops":
        user = scope.get("user")
        return bool(user is not None and user.is_active and user.is_staff)
    return namespace == "shop"
