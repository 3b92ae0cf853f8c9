"""The demo's browser policy: anyone may subscribe to namespace ``shop``; nothing else."""

from __future__ import annotations

from typing import Any


def can_subscribe(scope: dict[str, Any], namespace: str, pattern: str) -> bool:
    """Open namespace ``shop`` to every connection."""
    return namespace == "shop"
