"""The policies of the end-to-end tests' daphnes.

Any client may emit in namespace ``shop``; a connection opened with
``?member=<id>`` may join presence topics of namespace ``shop`` as that member.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs


def can_emit(scope: dict[str, Any], name: str, payload: dict[str, Any]) -> bool:
    """Let every connection emit events of namespace ``shop``."""
    return name.startswith("shop::")


def member(scope: dict[str, Any], topic: str) -> dict[str, Any] | None:
    """Admit ``?member=<id>`` connections to ``shop::`` topics, as member ``<id>``."""
    found = parse_qs(scope.get("query_string", b"").decode()).get("member")
    if not found or not topic.startswith("shop::"):
        return None
    return {"id": found[0], "info": {"name": found[0].title()}}
